"""Sampled ciphertexts decrypted on both sides of `smsgw store migrate` and compared
(`migrate_verify.py`): one encrypted column at a time. A problem names the table,
column and row, never a value."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.store import crypto


async def sample_column(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    ciphers: tuple[crypto.FieldCipher, crypto.FieldCipher],
    sample: int,
    table: str,
    key: str,
    column: str,
    aad: str,
    bound: Callable[[object], str] = str,
) -> tuple[str, list[str]]:
    """(the line it verified, problems): up to `sample` random rows of `table.column`
    whose ciphertext opens to the same text on both sides, each bound to `bound(key)`."""
    rows = src.execute(
        f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608 - fixed names
        " ORDER BY random() LIMIT ?",
        (sample,),
    ).fetchall()
    problems: list[str] = []
    for row_key, mine in rows:
        cur = await conn.execute(
            f"SELECT {column} FROM {table} WHERE {key} = %s".encode(),  # noqa: S608 - fixed names
            (row_key,),
        )
        row_id = bound(row_key)
        if not same_text(ciphers, mine, await cur.fetchone(), (row_id, row_id), aad):
            problems.append(f"{table}.{column} of {_name(row_key)} differs")
    line = f"{table}.{column}: {len(rows) - len(problems)} of {len(rows)} sampled decrypt the same"
    return line, problems[:3] + ([line] if problems else [])


def same_text(
    ciphers: tuple[crypto.FieldCipher, crypto.FieldCipher],
    mine: bytes,
    theirs: tuple[object, ...] | None,
    rows: tuple[str, str],
    aad: str,
) -> bool:
    """`mine` (sealed for `rows[0]` at the source) and the target's `theirs[0]` (sealed
    for `rows[1]`) open to the same text."""
    if theirs is None or not isinstance(theirs[0], bytes | bytearray | memoryview):
        return False
    source, target = ciphers
    try:
        return source.decrypt(mine, rows[0], aad) == target.decrypt(bytes(theirs[0]), rows[1], aad)
    except crypto.DecryptError:
        return False


def _name(key: object) -> str:
    """A row named in a problem: an id as it is, a contact by its index's first bytes
    (an index is a keyed digest, not the number)."""
    return key.hex()[:12] if isinstance(key, bytes) else str(key)
