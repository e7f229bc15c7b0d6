"""Recipients' `consent_state` rows, kept by the writer between transactions.

Every accept's transaction judges its messages from their recipients' consent rows,
read there so that an opt-out committed before it is obeyed (R-OPT-1). Read from
SQLite, they cost an index seek per recipient whose pages the event loop has pushed out
of the CPU's caches since the last transaction: about 7 us of writer CPU per accept
(1.2 us kept; bench/README.md, "Accept rate with the consent policy"). Consent changes
seldom, so the rows are kept here and read again only after a change.

A change is told by `consent_epoch` (migration 34): triggers on `consent_state` give
its one value a new `random()` on every insert, update and delete, whatever connection
or process writes. `rows` reads it in the caller's transaction; any value other than
the one the kept rows were read under drops them all. Random, not a count: a change
rolled back puts the old value back, and a count would let a later change come back to
the value that rows read inside the rolled-back transaction were kept under.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from gateway.consent.ledger import StateRow, state_rows

# Contacts kept (about 300 bytes each with their rows); past it, all are dropped.
KEPT = 65_536

_EPOCH = "SELECT value FROM consent_epoch WHERE id = 0"
# The epoch as a row of another read of three columns (`UNION ALL` it): (NULL, NULL, value).
EPOCH_ROW = "SELECT NULL, NULL, value FROM consent_epoch WHERE id = 0"


def epoch(conn: sqlite3.Connection) -> int:
    """The value every change to `consent_state` replaces."""
    return int(conn.execute(_EPOCH).fetchone()[0])


class StateCache:
    """For the writer thread alone: not safe to share between threads."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._epoch: int | None = None
        self._rows: dict[bytes, Sequence[StateRow]] = {}

    def rows(
        self, conn: sqlite3.Connection, contact_idxs: Sequence[bytes], known: int | None = None
    ) -> Mapping[bytes, Sequence[StateRow]]:
        """The `consent_state` rows of these contacts as `conn`'s transaction sees
        them, by contact (every one a key, and maybe others kept; no rows: empty). Call
        it inside the transaction that acts on them, on the thread of every other call.
        `known`: the epoch, if the caller read it in this transaction (`EPOCH_ROW`)."""
        kept = self._rows
        now = epoch(conn) if known is None else known
        if now != self._epoch or conn is not self._conn or len(kept) > KEPT:
            # A new dict, not the old one cleared: a mapping handed out before stays
            # as its transaction read it.
            kept = self._rows = {}
            self._epoch, self._conn = now, conn
        missing = [idx for idx in contact_idxs if idx not in kept]
        if missing:
            found = state_rows(conn, missing)
            for idx in missing:  # tuples: kept for long, and the collector skips them
                kept[idx] = tuple(found.get(idx, ()))
        # The kept rows themselves, no copy per group: a later call under the same
        # epoch only adds rows to them, and a change of epoch starts another dict.
        return kept
