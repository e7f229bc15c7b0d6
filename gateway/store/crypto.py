"""Field-level envelope encryption and the blind index.

Theory of operation. A 256-bit master key lives outside the database (a 0600 file
written by `smsgw init`, or a systemd credential). It wraps data keys, which live in
the `keyring` table: one `field` key per generation for AES-256-GCM over personal
fields, and one `blind` key for the HMAC-SHA256 blind index used to find messages by
phone number without decrypting. Every ciphertext carries a header (format version and
key generation) and is authenticated together with its row id and column name, so a
value copied into another row or column fails to open. A stolen database without the
master key yields neither numbers nor bodies; the blind index, being keyed, does not
let anyone test guesses either.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import stat
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_FORMAT = 1
_HEADER = struct.Struct(">BH")  # format version, key generation
BLIND_BYTES = 16
BLIND_CACHE = 32_768  # numbers whose blind index is kept (about 4 MB)


class MasterKeyError(Exception):
    """The master key is missing, unreadable, too open, or does not fit the store."""


class DecryptError(Exception):
    """A ciphertext failed authentication (wrong key, row, column, or tampered)."""


def generate_master_key(path: Path) -> None:
    """Write a new random master key readable by the owner only; never overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")


def pending_path(path: Path) -> Path:
    """Where `smsgw keys replace-master` writes the new key before its commit
    (`gateway/keys/master.py`)."""
    return path.with_name(path.name + ".new")


def read_master_key(path: Path) -> bytes:
    if pending_path(path).exists():
        raise MasterKeyError(
            f"an interrupted `smsgw keys replace-master` left {pending_path(path).name} next"
            f" to {path}; run `smsgw keys recover-master` first"
        )
    return read_key_file(path)


def read_key_file(path: Path) -> bytes:
    """A master key file as it is, checked for mode, encoding and length."""
    try:
        st = path.stat()
        text = path.read_text().strip()
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist (run `smsgw init`)") from None
    except PermissionError:
        raise MasterKeyError(f"master key file {path} is not readable by this user") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(f"master key file {path} is readable by others; chmod 600 it")
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise MasterKeyError(f"master key file {path} is not base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"master key file {path} must hold {KEY_BYTES} bytes")
    return key


def wrap_key(master: bytes, purpose: str, generation: int, key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, key, _wrap_aad(purpose, generation))


def unwrap_key(master: bytes, purpose: str, generation: int, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(purpose, generation)
        )
    except InvalidTag:
        raise MasterKeyError("the master key does not open this store's data keys") from None


def _wrap_aad(purpose: str, generation: int) -> bytes:
    return f"smsgw:{purpose}:{generation}".encode()


def header_generation(blob: bytes) -> int | None:
    """The key generation a ciphertext names, or None if it has no header of ours."""
    if len(blob) < _HEADER.size + NONCE_BYTES + 16:
        return None
    version, gen = _HEADER.unpack_from(blob)
    return gen if version == _FORMAT else None


def generation_prefix(generation: int) -> bytes:
    """The first bytes of every ciphertext of `generation` (for SQL over the header)."""
    return _HEADER.pack(_FORMAT, generation)


# The associated data's column part for `to` and `body` (`encrypt`: id, NUL, column).
_TO_COLUMN = b"\x00to"
_BODY_COLUMN = b"\x00body"


class NoncePool:
    """Random 96-bit GCM nonces, drawn from the OS a thousand at a time.

    Same randomness as one `os.urandom(12)` per nonce, without a system call per
    message: each call releases the GIL, and under load the writer thread then holds
    it and the event loop waits. The event loop and the writer thread (which encrypts
    reassembled inbound messages inside its transaction) both draw from it, so taking a
    nonce holds a lock: two threads must never get the same one.
    """

    def __init__(self, batch: int = 1024) -> None:
        self._batch = batch
        self._buffer = b""
        self._offset = 0
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> bytes:
        """`count` nonces, one after the other (one lock for a message's fields)."""
        size = NONCE_BYTES * count
        with self._lock:
            if self._offset + size > len(self._buffer):
                self._buffer = os.urandom(NONCE_BYTES * max(self._batch, count))
                self._offset = 0
            start = self._offset
            self._offset += size
            return self._buffer[start : self._offset]


class FieldCipher:
    """Encrypts and decrypts personal fields; computes the blind index."""

    _aeads: dict[int, AESGCM]
    _current: tuple[bytes, AESGCM, int]  # header, key and number of the current generation

    def __init__(self, field_keys: Mapping[int, bytes], blind_key: bytes) -> None:
        self._blind = hmac.new(blind_key, digestmod=hashlib.sha256)
        self._nonces = NoncePool()
        self.install(field_keys)
        # A number's index, computed once (4 us an HMAC, 0.2 a hit): the same numbers
        # come back (every accept, every consent check). The blind key never changes
        # for a cipher; the numbers are those the intake's own cache holds anyway.
        self.blind_index: Callable[[str], bytes] = functools.lru_cache(maxsize=BLIND_CACHE)(
            self._blind_index
        )

    def install(self, field_keys: Mapping[int, bytes]) -> None:
        """Make these the field keys, the newest current for new writes (a rotation, a
        retirement), while other threads encrypt and decrypt: each reads the header and
        key of the current generation as one tuple, so never a mix of two."""
        if not field_keys:
            raise ValueError("at least one field key is needed")
        aeads = {gen: AESGCM(k) for gen, k in field_keys.items()}
        generation = max(field_keys)
        self._aeads = aeads
        self._current = (_HEADER.pack(_FORMAT, generation), aeads[generation], generation)

    @property
    def generation(self) -> int:
        """The generation new ciphertexts are sealed under."""
        return self._current[2]

    @property
    def generations(self) -> frozenset[int]:
        """Every generation this cipher can open."""
        return frozenset(self._aeads)

    def encrypt(self, value: str, row_id: str, column: str) -> bytes:
        header, aead, _ = self._current
        nonce = self._nonces.take()
        aad = header + row_id.encode() + b"\x00" + column.encode()
        return header + nonce + aead.encrypt(nonce, value.encode(), aad)

    def encrypt_row(self, row_id: str, fields: Sequence[tuple[str, str]]) -> list[bytes]:
        """`encrypt` of each (value, column) of one row: the nonces drawn together and
        the row's id encoded once (every accept seals two or more fields)."""
        header, aead, _ = self._current
        nonces = self._nonces.take(len(fields))
        prefix = header + row_id.encode() + b"\x00"
        sealed = []
        end = 0
        for value, column in fields:
            start, end = end, end + NONCE_BYTES
            nonce = nonces[start:end]
            aad = prefix + column.encode()
            sealed.append(header + nonce + aead.encrypt(nonce, value.encode(), aad))
        return sealed

    def encrypt_to_and_body(self, row_id: str, to: str, body: str) -> tuple[bytes, bytes]:
        """`encrypt_row` of a message's recipient and body, the two fields most accepts
        seal: no loop, and the columns' bytes kept (a third of the bytecodes)."""
        header, aead, _ = self._current
        nonces = self._nonces.take(2)
        prefix = header + row_id.encode()
        first, second = nonces[:NONCE_BYTES], nonces[NONCE_BYTES:]
        return (
            header + first + aead.encrypt(first, to.encode(), prefix + _TO_COLUMN),
            header + second + aead.encrypt(second, body.encode(), prefix + _BODY_COLUMN),
        )

    def decrypt(self, blob: bytes, row_id: str, column: str) -> str:
        try:
            version, gen = _HEADER.unpack_from(blob)
            aead = self._aeads[gen]
        except (struct.error, KeyError):
            raise DecryptError(f"{column} of {row_id}: unknown key generation") from None
        if version != _FORMAT:
            raise DecryptError(f"{column} of {row_id}: unknown format {version}")
        start = _HEADER.size
        nonce = blob[start : start + NONCE_BYTES]
        aad = blob[:start] + row_id.encode() + b"\x00" + column.encode()
        try:
            return aead.decrypt(nonce, blob[start + NONCE_BYTES :], aad).decode()
        except InvalidTag:
            raise DecryptError(f"{column} of {row_id}: authentication failed") from None

    def _blind_index(self, e164: str) -> bytes:
        mac = self._blind.copy()
        mac.update(e164.encode())
        return mac.digest()[:BLIND_BYTES]

    def keyed_digest(self, purpose: str, *fields: str) -> bytes:
        """A blind index over several values (a set of inbound parts, a part's text).

        Each value is length-prefixed, so no two tuples share an input, and `purpose`
        keeps digests of one kind apart from another's and from `blind_index`.
        """
        mac = self._blind.copy()
        for value in (purpose, *fields):
            data = value.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()[:BLIND_BYTES]
