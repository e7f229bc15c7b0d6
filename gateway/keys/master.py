"""Replacing the master key, crash-safe for the key file as well as for the store.

Order: (1) the new key is written to `<key file>.new` (0600, synced); (2) every keyring
row is re-wrapped under it in ONE transaction; (3) `<key file>.new` is renamed over the
key file (atomic). Killed before (2) commits, the store still opens with the old key
and the `.new` file is left over; killed after, only the new key opens it. Either way
`read_master_key` refuses to start while a `.new` file exists, and `recover` finds
which of the two keys opens the store and finishes or undoes the swap.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.store import crypto, keyring_sql
from gateway.store.store import Store


class ReplaceRefused(Exception):
    """The key file cannot be replaced as asked (message for the operator)."""


def write_key_file(path: Path, key: bytes) -> None:
    """A new owner-only key file, synced with its directory entry; never overwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_replaceable(key_path: Path) -> None:
    pending = crypto.pending_path(key_path)
    if pending.exists():
        raise ReplaceRefused(f"{pending} exists: run `smsgw keys recover-master` first")
    if not key_path.is_file() or not os.access(key_path.parent, os.W_OK):
        raise ReplaceRefused(
            f"{key_path} is not a key file in a directory this user can write (a systemd"
            " credential is re-sealed instead: see docs/ops/keys.md)"
        )


async def replace(
    store: Store,
    key_path: Path,
    new_key: bytes,
    *,
    committed: Callable[[], None] = lambda: None,
) -> int:
    """Re-wrap the keyring under `new_key` and put it in `key_path`; the number of keys
    re-wrapped. `committed` runs between the commit and the rename (tests kill there)."""
    check_replaceable(key_path)
    pending = crypto.pending_path(key_path)
    write_key_file(pending, new_key)
    try:
        count = await store.replace_master(new_key)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    committed()
    os.replace(pending, key_path)
    _sync_dir(key_path.parent)
    return count


def recover(key_path: Path, db_path: Path) -> str | None:
    """Finish or undo a replacement that was interrupted: what was done, in words, or
    None if there was none."""
    pending = crypto.pending_path(key_path)
    if not pending.exists():
        return None
    conn = sqlite3.connect(db_path)
    try:
        if keyring_sql.opens(conn, crypto.read_key_file(pending)):
            os.replace(pending, key_path)
            _sync_dir(key_path.parent)
            return f"the replacement had committed: the new key is now in {key_path}"
        if key_path.exists() and keyring_sql.opens(conn, crypto.read_key_file(key_path)):
            pending.unlink()
            _sync_dir(key_path.parent)
            return f"the replacement had not committed: {key_path} is kept, {pending.name} removed"
    finally:
        conn.close()
    raise crypto.MasterKeyError(f"neither {key_path} nor {pending} opens this store's keys")
