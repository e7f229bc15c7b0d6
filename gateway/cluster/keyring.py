"""The keyring in the shared store, and key rotation one node at a time.

The `keyring` table holds exactly what SQLite's does (`gateway/store/keyring_sql.py`):
data keys wrapped by the master key, under the same AAD, so `smsgw store migrate`
copies the rows as they are. The master key stays per site, outside the database
(every node has its own copy: a file or a systemd credential); the blind-index key and
the root (audit chain) key are shared by every node through this table.

A rotation adds field key generation N+1 and re-encrypts, in batches, every shared row
with a field under an older generation (`SEALED`). It runs on one node at a time: it holds a
session advisory lock for its whole length, and a second rotation, on this node or any
other, is refused with `RotationBusy` instead of adding a generation of its own (two
nodes each adding "N+1" would race for one primary key, and two re-encryptions would
rewrite the same rows).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.keys.catalog import Sealed
from gateway.store import crypto
from gateway.store.keyring_sql import Keys

ROTATION_LOCK = 0x736D7367_77001801  # pg_try_advisory_lock key ("smsgw", cluster lock 1)
ENCRYPTED = ("to", "body", "reference", "callback")  # messages.<column>_ct, AAD = column
# What a rotation re-encrypts: every encrypted column of the shared store, with the row id
# its ciphertexts are bound to (a SQL expression), as SQLite's `keys/catalog.py`.
# `tests/pg/test_keyring_catalog.py` fails when a `*_ct` column of the schema is missing.
SEALED: tuple[Sealed, ...] = (
    Sealed("messages", "id", "id", tuple((f"{c}_ct", c) for c in ENCRYPTED)),
    Sealed("inbound", "id", "id", tuple((f"{c}_ct", c) for c in ("sender", "recipient", "body"))),
    Sealed(
        "inbound_parts",
        "id",
        "id",
        tuple((f"{c}_ct", c) for c in ("sender", "recipient", "body")),
    ),
    Sealed(
        "kannel_dlr",
        "message_id",
        "message_id",
        (("url_ct", "kannel_dlr_url"), ("receiver_ct", "kannel_dlr_receiver")),
    ),
    # `consent.ledger.contact_row_id`
    Sealed(
        "contacts",
        "idx",
        "'contact:' || encode(idx, 'hex')",
        (("number_ct", "number"), ("patient_ref_ct", "patient_ref")),
    ),
    Sealed("consent_ledger", "seq", "id", (("disclosure_ct", "disclosure"), ("note_ct", "note"))),
    Sealed("consent_reviews", "id", "id", (("body_ct", "body"),)),
    Sealed("panel_users", "id", "id", (("totp_secret_ct", "totp_secret"),)),
    # The clinical twins (cluster migration 17), as SQLite's catalog names them.
    Sealed("patients", "id", "id", (("mrn_ct", "mrn"),)),
    Sealed(
        "appointments",
        "id",
        "id",
        (("ext_key_ct", "ext_key"), ("location_label_ct", "location"), ("provider_ct", "provider")),
    ),
    Sealed("clinical_notices", "id", "id", (("variables_ct", "variables"),)),
    Sealed("hl7_messages", "id", "id", (("raw_ct", "raw"),)),  # cluster migration 21
    Sealed("hl7_outbound", "id", "id", (("message_ct", "message"),)),  # 23
    Sealed("medication_schedules", "id", "id", (("label_ct", "label"),)),  # migration 22
    Sealed("campaigns", "id", "id", (("content_ct", "content"),)),  # its text and values
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


@contextlib.asynccontextmanager
async def rotation_lock(conn: AsyncConnection[TupleRow]) -> AsyncIterator[None]:
    """Hold the rotation lock (session level) for the block; `RotationBusy` if another
    session holds it. A rotation, a re-encryption pass and a retirement take it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (ROTATION_LOCK,))
    row = await cur.fetchone()
    await conn.commit()
    if row is None or not row[0]:
        raise RotationBusy("a key rotation is running on another node or session")
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (ROTATION_LOCK,))
        await conn.commit()


async def rotate(
    conn: AsyncConnection[TupleRow], master: bytes, *, after_batch: Batch | None = None
) -> tuple[int, int]:
    """Add a field key generation and re-encrypt older message fields under it, holding
    the rotation lock throughout; (new generation, rows re-encrypted). `RotationBusy` if
    another rotation holds the lock. `after_batch(rows so far)` runs after each commit."""
    async with rotation_lock(conn):
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


async def reencrypt(
    conn: AsyncConnection[TupleRow], master: bytes, *, after_batch: Batch | None = None
) -> int:
    """The pass of `rotate` again, without a new generation: rows sealed under an older
    one after the rotation's pass (by a node that had not taken it up yet); how many."""
    async with rotation_lock(conn):
        keys = await load(conn, master)
        cipher = crypto.FieldCipher(keys.field, keys.blind)
        return await _reencrypt(conn, cipher, cipher.generation, after_batch)


async def _reencrypt(
    conn: AsyncConnection[TupleRow],
    cipher: crypto.FieldCipher,
    generation: int,
    after_batch: Batch | None,
) -> int:
    """Every shared row with a field sealed under an older generation, sealed anew
    (`SEALED`: the messages, inbound messages and their held parts, Kannel dlr-urls,
    the contacts, the consent ledger's texts and reviews, the panel's TOTP secrets,
    the patients' MRNs, the appointments' keys and labels, the notices' variables,
    the campaigns' texts)."""
    done = 0
    for spec in SEALED:
        done = await _reencrypt_table(conn, cipher, generation, spec, done, after_batch)
    return done


async def _reencrypt_table(
    conn: AsyncConnection[TupleRow],
    cipher: crypto.FieldCipher,
    generation: int,
    spec: Sealed,
    done: int,
    after_batch: Batch | None,
) -> int:
    """Every row of `spec.table` with a field sealed under an older generation, all its
    fields sealed anew together, a batch per transaction, in key order; `done` plus the
    rows re-encrypted."""
    prefix = crypto.generation_prefix(generation)
    columns = spec.columns
    names = ", ".join(c for c, _ in columns)
    older = " OR ".join(
        f"({c} IS NOT NULL AND substring({c} FROM 1 FOR 3) <> %(prefix)s)" for c, _ in columns
    )
    after: object = None
    while True:
        since = "" if after is None else f"{spec.key} > %(after)s AND "
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT {spec.key}, {spec.row_id}, {names} FROM {spec.table}"  # noqa: S608 - fixed names
                f" WHERE {since}({older}) ORDER BY {spec.key} LIMIT %(batch)s FOR UPDATE".encode(),
                {"after": after, "prefix": prefix, "batch": BATCH},
            )
            rows = await cur.fetchall()
            for key, row_id, *blobs in rows:
                sealed = [
                    None if blob is None else _reseal(cipher, bytes(blob), str(row_id), aad)
                    for (_, aad), blob in zip(columns, blobs, strict=True)
                ]
                sets = ", ".join(f"{c} = %s" for c, _ in columns)
                await conn.execute(
                    f"UPDATE {spec.table} SET {sets} WHERE {spec.key} = %s".encode(),  # noqa: S608 - fixed names
                    (*sealed, key),
                )
        if not rows:
            return done
        done += len(rows)
        after = rows[-1][0]
        if after_batch is not None:
            await after_batch(done)


def _reseal(cipher: crypto.FieldCipher, blob: bytes, row_id: str, column: str) -> bytes:
    return cipher.encrypt(cipher.decrypt(blob, row_id, column), row_id, column)
