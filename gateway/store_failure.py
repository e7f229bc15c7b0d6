"""Telling a full or failing disk from an ordinary error (outside `gateway.store`, so
the API's error middleware can answer `503 store_unavailable` without importing it)."""

from __future__ import annotations

import sqlite3

# SQLite primary result codes that mean the file cannot be written (not a bad query).
_STORAGE_CODES = {
    10: "io_error",  # SQLITE_IOERR
    13: "disk_full",  # SQLITE_FULL
    14: "cannot_open",  # SQLITE_CANTOPEN
}


class KeyRetired(Exception):
    """The shared store refused a value sealed under a retired field key generation (a
    node back from a cut-off through a rotation): nothing was stored, and the node has
    taken the current key up, so the same request again succeeds."""


class NoRoom(Exception):
    """The probe found too little room to call the store writable again."""


def storage_failure(e: BaseException) -> str | None:
    """`disk_full` / `io_error` / `cannot_open` if `e` is the store failing to write."""
    if isinstance(e, NoRoom):
        return "disk_full"
    if not isinstance(e, sqlite3.Error):
        return None
    code = getattr(e, "sqlite_errorcode", None)
    if code is None:
        return None
    return _STORAGE_CODES.get(code & 0xFF)
