"""Telling a full or failing disk, or a shared database out of reach, from an ordinary
error (outside `gateway.store`, so the API's error middleware can answer `503
store_unavailable` without importing it)."""

from __future__ import annotations

import sqlite3
import sys

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


def database_unreachable(e: BaseException) -> str | None:
    """The kind of failure (`OperationalError`'s subclass name) if `e`, or what it was
    raised from, is the shared PostgreSQL lost or refusing: a connection gone or refused
    (a failover: `AdminShutdown`, a closed connection), the pool finding none
    (`PoolTimeout`), a statement cancelled or a lock not had in time. Not a bad query, a
    constraint or a program limit: those stay errors."""
    # Only a process that imported psycopg can hold its errors: the SQLite-only install
    # has no psycopg (the `postgresql` extra), and this module must import without it.
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return None
    seen: BaseException | None = e
    for _ in range(4):  # the error itself, or a use case's wrapping of it
        if seen is None:
            return None
        if isinstance(seen, psycopg.OperationalError) and not isinstance(
            seen, psycopg.errors.ProgramLimitExceeded
        ):
            return type(seen).__name__
        seen = seen.__cause__
    return None


def outcome_unknown(e: BaseException) -> bool:
    """Whether `e` (or what it was raised from) is a COMMIT sent whose answer was lost
    (`cluster/checked.CommitUnanswered`): the transaction may have committed."""
    seen: BaseException | None = e
    for _ in range(4):  # the error itself, or a use case's wrapping of it
        if seen is None:
            return False
        if getattr(seen, "outcome_unknown", False):
            return True
        seen = seen.__cause__
    return False
