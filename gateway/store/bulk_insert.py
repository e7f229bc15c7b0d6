"""Many rows of one `INSERT` statement, as few statements as the rows allow.

`executemany` runs the statement once per row, and each run is a statement of its own to
SQLite: its start, its statement journal (`messages` has insert triggers), the GIL
released and taken back. A statement with a multi-row `VALUES` (`CHUNK_ROWS` rows of
parameters) pays that once per chunk (the triggers still run per row): a batch
request's message rows took 21.8 -> 18.7 us of the writer thread's CPU a row (1,000-row
transactions, alternating in one process: bench/README.md, tenth pass). The rows go in
the same order and fire the same triggers; a row that fails aborts its chunk's statement
whole, where `executemany` stopped at it, and every caller rolls the transaction or
savepoint back on any failure anyway.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

# Rows per multi-row statement: 250 of a message's 23 parameters are 5,750, under
# SQLite's limit on parameters (32,766 since 3.32; the connection's own limit is
# checked). Fewer rows than this go through `executemany`: a single send's group stays
# as it was, and only one multi-row text per statement is prepared and cached.
CHUNK_ROWS = 250

# `INSERT ... VALUES (?, ..., ?)` and nothing after the one row of parameters (no upsert,
# no `RETURNING`): only such a statement is repeated as a multi-row `VALUES`.
_ONE_ROW = re.compile(r"^(INSERT\b.*\bVALUES\s*)(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*$", re.S | re.I)

# The multi-row text of each statement seen, or None if it cannot have one.
_chunked: dict[tuple[str, int], str | None] = {}


def insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """`conn.executemany(sql, rows)`, in multi-row statements where there are enough."""
    if len(rows) < CHUNK_ROWS:
        conn.executemany(sql, rows)
        return
    key = (sql, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    chunked = _chunked.get(key)
    if chunked is None and key not in _chunked:
        chunked = _chunked[key] = _multi_row(sql, key[1])
    if chunked is None:
        conn.executemany(sql, rows)
        return
    whole = len(rows) - len(rows) % CHUNK_ROWS
    execute, flat = conn.execute, chain.from_iterable
    for start in range(0, whole, CHUNK_ROWS):
        execute(chunked, list(flat(rows[start : start + CHUNK_ROWS])))
    if whole < len(rows):
        conn.executemany(sql, rows[whole:])


def _multi_row(sql: str, max_parameters: int) -> str | None:
    """`sql` with `CHUNK_ROWS` rows of parameters, if it is a one-row `VALUES` insert
    whose chunk stays within the connection's limit on parameters."""
    match = _ONE_ROW.match(sql)
    if match is None:
        return None
    head, row = match.groups()
    if row.count("?") * CHUNK_ROWS > max_parameters:
        return None
    return head + ",".join([row] * CHUNK_ROWS)
