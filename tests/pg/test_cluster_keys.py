"""Wrapped data keys in the shared store; key rotation on one node at a time."""

from __future__ import annotations

import asyncio
import os

import psycopg
import pytest

from gateway.cluster import keyring
from gateway.cluster.dlr_wishes import SharedDlrWishes
from gateway.cluster.keyring import RotationBusy
from gateway.cluster.lease import Pool
from gateway.integrations.dlr_wishes import RECEIVER_COLUMN, URL_COLUMN, DlrWish
from gateway.store import crypto

MASTER = os.urandom(32)
MESSAGES = 1200  # more than two re-encryption batches
INBOUND = 3
DLR = 2  # Kannel dlr-url wishes, of the first messages


async def seed(dsn: str) -> crypto.FieldCipher:
    """A keyring as SQLite's (generation 1 and the blind key, wrapped by MASTER) and
    messages, inbound messages and Kannel dlr-urls sealed under generation 1."""
    field, blind = os.urandom(32), os.urandom(32)
    cipher = crypto.FieldCipher({1: field}, blind)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for purpose, key in (("field", field), ("blind", blind)):
            await conn.execute(
                "INSERT INTO keyring VALUES (%s, 1, %s, 0)",
                (purpose, crypto.wrap_key(MASTER, purpose, 1, key)),
            )
        async with conn.cursor().copy(
            "COPY messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " reference_ct, encoding, segments, created_at, updated_at, due_at, expires_at)"
            " FROM STDIN"
        ) as copy:
            for n in range(MESSAGES):
                mid = f"m{n:05d}"
                ref = cipher.encrypt(f"r{n}", mid, "reference") if n % 2 else None
                await copy.write_row((
                    mid, 2, "delivered", "g", cipher.encrypt(f"+4479{n:08d}", mid, "to"),
                    cipher.blind_index(f"+4479{n:08d}"), cipher.encrypt(f"body {n}", mid, "body"),
                    ref, "gsm7", 1, 0, 0, 0, 0,
                ))  # fmt: skip
        for n in range(INBOUND):
            iid, sender = f"i{n}", f"+4479{n:08d}"
            await conn.execute(
                "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, body_ct,"
                " received_at, node_id) VALUES (%s, %s, 'r', %s, %s, %s, 0, 'gw1')",
                (
                    iid,
                    n + 1,
                    cipher.encrypt(sender, iid, "sender"),
                    cipher.blind_index(sender),
                    cipher.encrypt(f"reply {n}", iid, "body"),
                ),
            )
        for n in range(DLR):
            mid = f"m{n:05d}"
            wish = DlrWish(f"https://ehr.example/dlr?n={n}", 1, f"+4479{n:08d}", "", "ehr")
            sql, params = SharedDlrWishes(conn, cipher).statement(mid, wish, 0)  # type: ignore[arg-type]
            await conn.execute(sql.encode(), params)
    return cipher


async def test_a_second_rotation_while_one_runs_is_refused_on_any_node(
    pool: Pool, pg_dsn: str
) -> None:
    await seed(pg_dsn)
    first_in_batch = asyncio.Event()
    second_done = asyncio.Event()

    async def hold(done: int) -> None:
        first_in_batch.set()
        await second_done.wait()  # the first rotation stays inside its run

    async def first() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            return await keyring.rotate(conn, MASTER, after_batch=hold)

    async def second() -> None:
        await first_in_batch.wait()
        try:
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
                with pytest.raises(RotationBusy):
                    await keyring.rotate(conn, MASTER)
        finally:
            second_done.set()

    (generation, rewritten), _ = await asyncio.gather(first(), second())
    assert (generation, rewritten) == (2, MESSAGES + INBOUND + DLR)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT generation FROM keyring WHERE purpose = 'field' ORDER BY 1"
        )
        assert await cur.fetchall() == [(1,), (2,)]  # one generation added, not two
        keys = await keyring.load(conn, MASTER)
        cipher = crypto.FieldCipher({2: keys.field[2]}, keys.blind)  # the new key alone
        cur = await conn.execute("SELECT id, to_ct, body_ct, reference_ct FROM messages")
        for mid, to_ct, body_ct, ref_ct in await cur.fetchall():
            n = int(mid[1:])
            assert cipher.decrypt(to_ct, mid, "to") == f"+4479{n:08d}"
            assert cipher.decrypt(body_ct, mid, "body") == f"body {n}"
            assert (ref_ct is None) == (n % 2 == 0)
            if ref_ct is not None:
                assert cipher.decrypt(ref_ct, mid, "reference") == f"r{n}"
        cur = await conn.execute("SELECT id, sender_ct, body_ct FROM inbound")
        for iid, sender_ct, body_ct in await cur.fetchall():
            n = int(iid[1:])
            assert cipher.decrypt(sender_ct, iid, "sender") == f"+4479{n:08d}"
            assert cipher.decrypt(body_ct, iid, "body") == f"reply {n}"
        cur = await conn.execute("SELECT message_id, url_ct, receiver_ct FROM kannel_dlr")
        wishes = await cur.fetchall()
        assert len(wishes) == DLR
        for mid, url_ct, receiver_ct in wishes:
            n = int(mid[1:])
            assert cipher.decrypt(url_ct, mid, URL_COLUMN) == f"https://ehr.example/dlr?n={n}"
            assert cipher.decrypt(receiver_ct, mid, RECEIVER_COLUMN) == f"+4479{n:08d}"
        # The lock went with the run: the next rotation goes ahead.
        assert await keyring.rotate(conn, MASTER) == (3, MESSAGES + INBOUND + DLR)


async def test_the_shared_keyring_opens_only_with_the_sites_master_key(
    pool: Pool, pg_dsn: str
) -> None:
    cipher = await seed(pg_dsn)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        keys = await keyring.load(conn, MASTER)
        assert keys.root == MASTER  # no root row: the root is the first master key
        assert crypto.FieldCipher(keys.field, keys.blind).blind_index("+1") == cipher.blind_index(
            "+1"
        )
        with pytest.raises(crypto.MasterKeyError):
            await keyring.load(conn, os.urandom(32))
