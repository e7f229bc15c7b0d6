"""Master key custody without a TPM: a key wrapped by a passphrase, or kept on media.

Theory of operation. The master key file holds either the plain key (one base64 line,
as `smsgw init` writes it) or, after `smsgw keys protect`, a *protected* key: one JSON
object whose fields name the format and its version, the KDF and its cost (Argon2id,
RFC 9106's 64 MiB / 3 passes), a random salt and nonce, and the key sealed with
AES-256-GCM under the key the passphrase derives. The header fields are the GCM
associated data, so lowering the cost or changing the version in the file makes it
fail to open, like a wrong passphrase; nothing else tells the two apart.

At start the daemon (`load_master_key`) takes the passphrase from, in order: the
systemd credential `smsgw-key-passphrase` (`$CREDENTIALS_DIRECTORY`), the file
`[store] master_key_passphrase_file`, `systemd-ask-password` when systemd started it,
or the terminal. The alternative to a passphrase is the key on removable media
(`[store] master_key_media`): a mount point that must be mounted when the key is read.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from gateway.config import Config
from gateway.store import crypto

FORMAT = "smsgw-protected-master-key"
VERSION = 1
CREDENTIAL = "smsgw-key-passphrase"  # the systemd credential's name
MIN_PASSPHRASE = 12
# The cost written into new files; a file's own cost is read back from it (bounded, so
# a crafted file cannot ask for gigabytes).
COST: dict[str, int] = {"memory_kib": 65536, "iterations": 3, "lanes": 4}
_BOUNDS: dict[str, tuple[int, int]] = {
    "memory_kib": (8, 4 * 1024 * 1024),
    "iterations": (1, 64),
    "lanes": (1, 64),
}
ASK_SECONDS = 0  # systemd-ask-password: wait as long as the operator needs
log = structlog.get_logger("smsgw.custody")


class CustodyError(crypto.MasterKeyError):
    """The key cannot be unlocked: wrong passphrase, none given, or its media absent."""


def is_protected(text: str) -> bool:
    return text.lstrip().startswith("{")


def protect(key: bytes, passphrase: str) -> str:
    """The protected-key file's text for `key`."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise CustodyError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kdf": "argon2id", **COST}
    header["salt"] = _b64(os.urandom(16))
    nonce = os.urandom(crypto.NONCE_BYTES)
    sealed = AESGCM(_derive(passphrase, header)).encrypt(nonce, key, _aad(header))
    return json.dumps({**header, "nonce": _b64(nonce), "sealed": _b64(sealed)}) + "\n"


def unprotect(text: str, passphrase: str, where: Path) -> bytes:
    """The key inside a protected-key file; `CustodyError` if the passphrase is wrong."""
    try:
        doc = json.loads(text)
        header = {k: doc[k] for k in ("format", "version", "kdf", *COST, "salt")}
        nonce, sealed = _unb64(doc["nonce"]), _unb64(doc["sealed"])
    except (ValueError, KeyError, TypeError):
        raise CustodyError(f"master key file {where} is not a protected key") from None
    if header["format"] != FORMAT or header["kdf"] != "argon2id":
        raise CustodyError(f"master key file {where} is not a protected key")
    if header["version"] != VERSION:
        raise CustodyError(
            f"master key file {where} is protected in format version {header['version']};"
            f" this smsgw reads version {VERSION}"
        )
    for name, (low, high) in _BOUNDS.items():
        if not isinstance(header[name], int) or not low <= header[name] <= high:
            raise CustodyError(f"master key file {where}: {name} out of range")
    try:
        key = AESGCM(_derive(passphrase, header)).decrypt(nonce, sealed, _aad(header))
    except InvalidTag:
        raise CustodyError(f"the passphrase does not open the master key {where}") from None
    if len(key) != crypto.KEY_BYTES:
        raise CustodyError(f"master key file {where} holds no {crypto.KEY_BYTES}-byte key")
    return key


def _derive(passphrase: str, header: dict[str, Any]) -> bytes:
    return Argon2id(
        salt=_unb64(header["salt"]),
        length=32,
        iterations=header["iterations"],
        lanes=header["lanes"],
        memory_cost=header["memory_kib"],
    ).derive(passphrase.encode())


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not text")
    return base64.b64decode(text, validate=True)


# -- reading the key at start ------------------------------------------------------------


Ask = Callable[[str], str | None]


def check_media(config: Config) -> str | None:
    """Why the key's media is not there, or None (also when no media is configured)."""
    media = config.store.master_key_media
    if media is None or os.path.ismount(media):
        return None
    return (
        f"the master key's media is not mounted at {media} (store.master_key_media):"
        " insert it and mount it there, then start again"
    )


def read_key_text(config: Config) -> str:
    """The key file's text, with the custody checks around it (media, permissions)."""
    if problem := check_media(config):
        raise CustodyError(problem)
    path = config.master_key_path
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        text = ""
    if not is_protected(text):
        crypto.read_master_key(path)  # its own errors: missing, unreadable, too open
    elif path.stat().st_mode & 0o077:
        raise CustodyError(f"master key file {path} is readable by others; chmod 600 it")
    return text


def load_master_key(config: Config, ask: Ask | None = None) -> bytes:
    """The master key, unlocked if protected. `ask` is how to get a passphrase when no
    credential or file gives one (default: systemd-ask-password or the terminal)."""
    text = read_key_text(config)
    path = config.master_key_path
    if not is_protected(text):
        return crypto.read_master_key(path)
    passphrase = given_passphrase(config)
    if passphrase is None:
        passphrase = (ask or ask_operator)(f"Passphrase for the smsgw master key {path}:")
    if passphrase is None:
        raise CustodyError(
            f"master key {path} is protected by a passphrase and none was given: put it in"
            f" the systemd credential {CREDENTIAL} (LoadCredentialEncrypted=) or in"
            " store.master_key_passphrase_file, or start smsgw on a terminal"
        )
    return unprotect(text, passphrase, path)


def unlock_source(config: Config) -> str | None:
    """How a protected key's passphrase reaches the service (for the audit of its
    unlock at start): `credential`, `file` or `operator`; None for a plain key file."""
    try:
        if not is_protected(read_key_text(config)):
            return None
    except (CustodyError, OSError):
        return None
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / CREDENTIAL).exists():
        return "credential"
    return "file" if config.store.master_key_passphrase_file else "operator"


def given_passphrase(config: Config) -> str | None:
    """The passphrase from the systemd credential or the configured file, if any."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = [Path(directory) / CREDENTIAL] if directory else []
    if config.store.master_key_passphrase_file:
        candidates.append(config.resolve(config.store.master_key_passphrase_file))
    for path in candidates:
        if path.exists():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise CustodyError(f"passphrase file {path}: {e.strerror}") from None
            return text.splitlines()[0] if text else ""
    if config.store.master_key_passphrase_file:
        raise CustodyError(f"store.master_key_passphrase_file: {candidates[-1]} does not exist")
    return None


def ask_operator(prompt: str) -> str | None:
    """systemd-ask-password when systemd started us (its agents reach the console, a
    Plymouth screen or `systemd-tty-ask-password-agent`), else the terminal, else None."""
    tool = shutil.which("systemd-ask-password")
    if os.environ.get("INVOCATION_ID") and tool:
        log.info("master_key_passphrase_asked", via="systemd-ask-password")
        done = subprocess.run(  # noqa: S603 - a fixed system tool, no shell
            [tool, "--id=smsgw:master-key", f"--timeout={ASK_SECONDS}", prompt],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise CustodyError("systemd-ask-password gave no passphrase for the master key")
        return done.stdout.decode().rstrip("\n")
    if sys.stdin.isatty():
        log.info("master_key_passphrase_asked", via="terminal")
        return getpass.getpass(prompt + " ")
    return None
