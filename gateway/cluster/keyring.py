"""The keyring in the shared store, and key rotation one node at a time.

The `keyring` table holds exactly what SQLite's does (`gateway/store/keyring_sql.py`):
data keys wrapped by the master key, under the same AAD, so `smsgw store migrate`
copies the rows as they are. The master key stays per site, outside the database
(every node has its own copy: a file or a systemd credential); the blind-index key and
the root (audit chain) key are shared by every node through this table.

A rotation adds field key generation N+1 and re-encrypts the older rows of `messages`,
`inbound` and `kannel_dlr` in batches. It runs on one node at a time: it holds a
session advisory lock for its whole length, and a second rotation, on this node or any
other, is refused with `RotationBusy` instead of adding a generation of its own (two
nodes each adding "N+1" would race for one primary key, and two re-encryptions would
rewrite the same rows).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.store import crypto
from gateway.store.keyring_sql import Keys

ROTATION_LOCK = 0x736D7367_77001801  # pg_try_advisory_lock key ("smsgw", cluster lock 1)
ENCRYPTED = ("to", "body", "reference", "callback")  # messages.<column>_ct, AAD = column
# What a rotation re-encrypts: (table, its key, its (column, AAD name) pairs, the first
# never NULL).
SEALED: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("messages", "id", tuple((f"{c}_ct", c) for c in ENCRYPTED)),
    ("inbound", "id", tuple((f"{c}_ct", c) for c in ("sender", "recipient", "body"))),
    (
        "kannel_dlr",
        "message_id",
        (("url_ct", "kannel_dlr_url"), ("receiver_ct", "kannel_dlr_receiver")),
    ),
)
BATCH = 500

Batch = Callable[[int], Awaitable[None]]


class RotationBusy(Exception):
    """Another session (this node or another) is rotating the field key now."""


async def load(conn: AsyncConnection[TupleRow], master: bytes) -> Keys:
    """Every key unwrapped, as SQLite's `keyring_sql.load` does without `create`."""
    cur = await conn.execute("SELECT purpose, generation, wrapped FROM keyring")
    keys: dict[str, dict[int, bytes]] = {"field": {}, "blind": {}, "root": {}}
    for purpose, generation, wrapped in await cur.fetchall():
        keys[str(purpose)][int(generation)] = crypto.unwrap_key(
            master, str(purpose), int(generation), bytes(wrapped)
        )
    for purpose in ("field", "blind"):
        if not keys[purpose]:
            raise crypto.MasterKeyError(f"the shared keyring has no {purpose} key")
    return Keys(keys["field"], keys["blind"][1], keys["root"].get(1, master))


async def rotate(
    conn: AsyncConnection[TupleRow], master: bytes, *, after_batch: Batch | None = None
) -> tuple[int, int]:
    """Add a field key generation and re-encrypt older message fields under it, holding
    the rotation lock throughout; (new generation, rows re-encrypted). `RotationBusy` if
    another rotation holds the lock. `after_batch(rows so far)` runs after each commit."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (ROTATION_LOCK,))
    row = await cur.fetchone()
    await conn.commit()
    if row is None or not row[0]:
        raise RotationBusy("a key rotation is running on another node or session")
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT coalesce(max(generation), 0) + 1 FROM keyring WHERE purpose = 'field'"
            )
            top = await cur.fetchone()
            assert top is not None
            generation = int(top[0])
            key = os.urandom(crypto.KEY_BYTES)
            await conn.execute(
                "INSERT INTO keyring (purpose, generation, wrapped, created_at)"
                " VALUES ('field', %s, %s, %s)",
                (generation, crypto.wrap_key(master, "field", generation, key), time.time()),
            )
        keys = await load(conn, master)
        cipher = crypto.FieldCipher(keys.field, keys.blind)
        done = await _reencrypt(conn, cipher, generation, after_batch)
        return generation, done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (ROTATION_LOCK,))
        await conn.commit()


async def _reencrypt(
    conn: AsyncConnection[TupleRow],
    cipher: crypto.FieldCipher,
    generation: int,
    after_batch: Batch | None,
) -> int:
    """Every shared row sealed under an older generation, sealed anew: messages, inbound
    messages (their held parts are gone within the reassembly timeout), Kannel
    dlr-urls."""
    done = 0
    for table, key, columns in SEALED:
        done = await _reencrypt_table(
            conn, cipher, generation, (table, key, columns), done, after_batch
        )
    return done


async def _reencrypt_table(
    conn: AsyncConnection[TupleRow],
    cipher: crypto.FieldCipher,
    generation: int,
    spec: tuple[str, str, tuple[tuple[str, str], ...]],
    done: int,
    after_batch: Batch | None,
) -> int:
    """Every row of the table (`SEALED`'s `spec`) whose first column (never NULL) is
    sealed under an older generation, sealed anew (all its fields together), a batch
    per transaction, in key order; `done` plus the rows re-encrypted."""
    table, key, columns = spec
    prefix = crypto.generation_prefix(generation)
    names = ", ".join(c for c, _ in columns)
    after = ""
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT {key}, {names} FROM {table} WHERE {key} > %s"  # noqa: S608 - fixed names
                f" AND substring({columns[0][0]} FROM 1 FOR 3) <> %s ORDER BY {key} LIMIT %s"
                " FOR UPDATE",
                (after, prefix, BATCH),
            )
            rows = await cur.fetchall()
            for row_id, *blobs in rows:
                sealed = [
                    None if blob is None else _reseal(cipher, bytes(blob), row_id, aad)
                    for (_, aad), blob in zip(columns, blobs, strict=True)
                ]
                sets = ", ".join(f"{c} = %s" for c, _ in columns)
                await conn.execute(
                    f"UPDATE {table} SET {sets} WHERE {key} = %s",  # noqa: S608 - fixed names
                    (*sealed, row_id),
                )
        if not rows:
            return done
        done += len(rows)
        after = str(rows[-1][0])
        if after_batch is not None:
            await after_batch(done)


def _reseal(cipher: crypto.FieldCipher, blob: bytes, row_id: str, column: str) -> bytes:
    return cipher.encrypt(cipher.decrypt(blob, row_id, column), row_id, column)
