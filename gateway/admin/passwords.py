"""Password policy (ASVS 6.2, NIST 800-63B) and argon2id hashing.

Policy: at least 15 characters when the password is the only factor, 8 when the role
requires a TOTP second factor; up to 1024 accepted (never truncated); any Unicode,
NFC-normalised so the same text typed on two keyboards hashes the same; no composition
rules. Refused: the most common breached passwords (a list shipped with smsgw, since
the appliance is offline), those words dressed with digits and symbols
(`Password123456!`), passwords built from context words (`smsgw`, `hospital`, the
user name) plus digits, keyboard and alphabet runs, a shorter pattern repeated, and
fewer than 4 distinct characters.
"""

from __future__ import annotations

import asyncio
import functools
import re
import unicodedata
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_SINGLE_FACTOR = 15
MIN_WITH_TOTP = 8
MAX_LENGTH = 1024
CONTEXT_WORDS = ("smsgw", "sms", "gateway", "hospital", "admin", "panel", "password")
_RUNS = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm", "1qaz2wsx3edc")

# OWASP's floor for argon2id (19 MiB, 2 passes, 1 lane); the configuration cannot go below.
MIN_MEMORY_KIB = 19456
MIN_ITERATIONS = 2


class WeakPassword(ValueError):
    """A password the policy refuses; the message says why and never quotes it."""


def normalise(password: str) -> str:
    return unicodedata.normalize("NFC", password)


@functools.cache
def common_passwords() -> frozenset[str]:
    # Beside this module, read as a plain file: `importlib.resources` would import its
    # readers on first use, and `smsgw user add` run by root checks the password after
    # dropping to the data directory's owner, who may not read the interpreter's library
    # (a Python installed under /root): the op failed with ModuleNotFoundError.
    text = Path(__file__).with_name("common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().casefold() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check(password: str, *, username: str = "", totp_required: bool = False) -> str:
    """The normalised password if the policy accepts it; else raises `WeakPassword`."""
    pw = normalise(password)
    minimum = MIN_WITH_TOTP if totp_required else MIN_SINGLE_FACTOR
    if len(pw) < minimum:
        why = "with a second factor" if totp_required else "when it is the only factor"
        raise WeakPassword(f"a password needs at least {minimum} characters {why}")
    if len(pw) > MAX_LENGTH:
        raise WeakPassword(f"a password may have at most {MAX_LENGTH} characters")
    folded = pw.casefold()
    if len(set(folded)) < 4:
        raise WeakPassword("this password repeats too few different characters")
    common = common_passwords()
    letters = "".join(ch for ch in folded if ch.isalpha())
    if folded in common or letters in common:
        raise WeakPassword("this password is on the list of commonly used passwords")
    if _repeats(folded):
        raise WeakPassword("this password repeats a shorter pattern")
    if _is_run(folded):
        raise WeakPassword("this password is a keyboard or alphabet sequence")
    context = [w for w in (*CONTEXT_WORDS, username.casefold()) if len(w) >= 3]
    rest = folded
    for word in sorted(context, key=len, reverse=True):
        rest = rest.replace(word, "")
    if rest != folded and not any(ch.isalpha() for ch in rest):
        raise WeakPassword("this password is made of the user name or words about this system")
    return pw


def _repeats(folded: str) -> bool:
    n = len(folded)
    return any(
        n % size == 0 and folded == folded[:size] * (n // size) for size in range(1, n // 2 + 1)
    )


def _is_run(folded: str) -> bool:
    core = re.sub(r"[\s\W_]", "", folded)
    if len(core) < 6:
        return False
    for run in _RUNS:
        for seq in (run, run[::-1]):
            repeated = seq * (len(core) // len(seq) + 2)
            if core in repeated:
                return True
    return False


class Hasher:
    """argon2id with the configured cost. The default is RFC 9106's second recommended
    profile (argon-cffi's own default): 64 MiB, 3 passes, 4 lanes."""

    def __init__(self, memory_kib: int = 65536, iterations: int = 3, lanes: int = 4) -> None:
        if memory_kib < MIN_MEMORY_KIB or iterations < MIN_ITERATIONS or lanes < 1:
            raise ValueError("argon2id cost below OWASP's floor (19 MiB, 2 passes)")
        self._argon2 = PasswordHasher(
            time_cost=iterations,
            memory_cost=memory_kib,
            parallelism=lanes,
            hash_len=32,
            salt_len=16,
        )

    @functools.cached_property
    def _dummy(self) -> str:
        # Verified against when the user does not exist: both cases cost one argon2 run.
        return self._argon2.hash("smsgw timing equaliser, never a real password")

    def hash(self, password: str) -> str:
        return self._argon2.hash(normalise(password))

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(stored_hash, normalise(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    async def hash_async(self, password: str) -> str:
        """Off the event loop: argon2 takes tens to hundreds of milliseconds by design."""
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, stored_hash: str | None, password: str) -> bool:
        """Verify off the event loop; with no hash, spend the same time and answer False."""
        if stored_hash is None:
            await asyncio.to_thread(self.verify, self._dummy, password)
            return False
        return await asyncio.to_thread(self.verify, stored_hash, password)
