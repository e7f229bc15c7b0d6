"""The store: encryption at rest, group commit, lifecycle enforcement, migrations."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lifecycle import IllegalTransition
from gateway.models import State
from gateway.store import crypto
from gateway.store.schema import MIGRATIONS
from gateway.store.store import Store
from gateway.store.transitions import Transition
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, accept
from tests.store_rows import message_row

KEY = os.urandom(32)
FIELD_KEYS = {1: os.urandom(32)}


def _files(db: Path) -> list[Path]:
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def _scan(paths: list[Path], needles: list[bytes]) -> list[tuple[str, bytes]]:
    hits = []
    for p in paths:
        data = p.read_bytes()
        hits += [(p.name, n) for n in needles if n in data]
    return hits


def _needles(*texts: str) -> list[bytes]:
    out = []
    for t in texts:
        out += [t.encode(), t.encode("utf-16-be"), t.encode("utf-16-le")]
    return out


async def test_no_plaintext_phi_in_database_wal_or_shm(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    ids = []
    for i in range(50):
        ids.append(
            await accept(
                gw, to=CANARY_NUMBER, body=f"{CANARY_BODY} #{i}", reference=f"MRN-CANARY-{i}"
            )
        )
    await gw.store.insert_inbound("in1", "main", CANARY_NUMBER, CANARY_BODY, None, None, 0.0)
    await gw.scheduler.run_until_idle()
    needles = _needles(CANARY_NUMBER, CANARY_DIGITS, CANARY_BODY, "MRN-CANARY")
    # Before the checkpoint the rows live in the WAL; after it, in the main file.
    before = _files(gw.config.db_path)
    assert any(p.name.endswith("-wal") for p in before)
    assert _scan(before, needles) == []
    await gw.store.writer.call_outside_transaction(
        lambda c: c.execute("PRAGMA wal_checkpoint(FULL)")
    )
    assert _scan(_files(gw.config.db_path), needles) == []
    await gw.stop()
    assert _scan(_files(gw.config.db_path), needles) == []
    # ...and the data is really there, encrypted: the canary decrypts back.
    gw2 = await open_gateway()
    row = await message_row(gw2.store, ids[0])
    assert gw2.store.decrypt(row["body_ct"], ids[0], "body") == f"{CANARY_BODY} #0"


def test_ciphertext_is_bound_to_its_row_and_column() -> None:
    c = crypto.FieldCipher(FIELD_KEYS, os.urandom(32))
    blob = c.encrypt(CANARY_NUMBER, "row1", "to")
    assert c.decrypt(blob, "row1", "to") == CANARY_NUMBER
    with pytest.raises(crypto.DecryptError):
        c.decrypt(blob, "row2", "to")
    with pytest.raises(crypto.DecryptError):
        c.decrypt(blob, "row1", "body")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(crypto.DecryptError):
        c.decrypt(bytes(tampered), "row1", "to")


@given(st.text(max_size=500), st.text(min_size=1, max_size=30))
def test_encrypt_round_trips_any_text(value: str, row_id: str) -> None:
    c = crypto.FieldCipher(FIELD_KEYS, b"k" * 32)
    assert c.decrypt(c.encrypt(value, row_id, "body"), row_id, "body") == value


def test_blind_index_is_keyed_and_deterministic() -> None:
    a = crypto.FieldCipher(FIELD_KEYS, b"a" * 32)
    b = crypto.FieldCipher(FIELD_KEYS, b"b" * 32)
    assert a.blind_index(CANARY_NUMBER) == a.blind_index(CANARY_NUMBER)
    assert a.blind_index(CANARY_NUMBER) != b.blind_index(CANARY_NUMBER)
    assert a.blind_index(CANARY_NUMBER) != a.blind_index("+12025550148")


def test_master_key_file_is_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    crypto.generate_master_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(crypto.read_master_key(path)) == 32
    with pytest.raises(FileExistsError):
        crypto.generate_master_key(path)
    path.chmod(0o644)
    with pytest.raises(crypto.MasterKeyError, match="readable by others"):
        crypto.read_master_key(path)
    with pytest.raises(crypto.MasterKeyError, match="does not exist"):
        crypto.read_master_key(tmp_path / "missing.key")


async def test_wrong_master_key_cannot_open_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", KEY)
    await store.open()
    await store.close()
    other = Store(tmp_path / "s.db", os.urandom(32))
    with pytest.raises(crypto.MasterKeyError):
        await other.open()
    await other.close()


async def test_concurrent_inserts_share_transactions(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    writer = gw.store.writer
    batches_before = writer.batches
    await asyncio.gather(*(accept(gw, body=f"m{i}") for i in range(200)))
    commits = writer.batches - batches_before
    assert commits < 20, f"200 concurrent inserts took {commits} commits"
    cur = await gw.store.reader.execute("SELECT count(*) FROM messages")
    assert (await cur.fetchone())[0] == 200


async def test_store_uses_wal_and_full_sync(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    modes = await gw.store.writer.call_outside_transaction(
        lambda c: (
            c.execute("PRAGMA journal_mode").fetchone()[0],
            c.execute("PRAGMA synchronous").fetchone()[0],
        )
    )
    assert modes == ("wal", 2)  # 2 = FULL


async def test_a_failing_job_changes_nothing_and_spares_its_batch(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    good = await accept(gw)
    bad = await accept(gw)
    now = gw.clock.time()
    results = await asyncio.gather(
        gw.store.transition(Transition(good, State.CANCELLED), now),
        gw.store.transition(Transition(bad, State.DELIVERED), now),  # queued -> delivered
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], IllegalTransition)
    assert (await message_row(gw.store, good))["state"] == "cancelled"
    bad_row = await message_row(gw.store, bad)
    assert bad_row["state"] == "queued"
    assert [e.state for e in await gw.store.events(bad)] == ["queued"]


async def test_a_bad_row_in_a_group_insert_fails_alone(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    ok_sql = ("INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)", ("t1", "n", b"h", "read", 0.0))
    dup_sql = ("INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)", ("t1", "n", b"h", "read", 0.0))
    other = ("INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)", ("t2", "n", b"h", "read", 0.0))
    results = await asyncio.gather(
        gw.store.writer.insert([ok_sql]),
        gw.store.writer.insert([dup_sql]),
        gw.store.writer.insert([other]),
        return_exceptions=True,
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert {t.id for t in await gw.store.api_tokens.all()} == {"t1", "t2"}


async def test_grouped_items_share_one_call_and_a_bad_item_fails_alone(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    calls: list[int] = []

    def insert_tokens(conn: sqlite3.Connection, names: list[str]) -> list[str]:
        calls.append(len(names))
        for name in names:
            conn.execute(
                "INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)", (name, "n", b"h", "read", 0.0)
            )
        return [f"ok {name}" for name in names]

    results = await asyncio.gather(
        gw.store.writer.run_grouped(insert_tokens, "a"),
        gw.store.writer.run_grouped(insert_tokens, "a"),  # the primary key refuses it
        gw.store.writer.run_grouped(insert_tokens, "b"),
        return_exceptions=True,
    )
    # One call for the group; it raised, so each item ran again on its own.
    assert calls == [3, 1, 1, 1]
    assert results[0] == "ok a"
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2] == "ok b"
    assert {t.id for t in await gw.store.api_tokens.all()} == {"a", "b"}


async def test_claims_grouped_with_a_cancel_see_it(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    ids = [await accept(gw, body=f"m{i}") for i in range(3)]
    now = gw.clock.time()
    cancelled, *claimed = await asyncio.gather(
        gw.store.cancel(ids[1], now),
        *(gw.store.claim(i, "demo", now) for i in ids),
    )
    assert cancelled is State.CANCELLED
    assert claimed[1] is None  # cancelled first, in the same transaction
    assert [c.body if c else None for c in claimed] == ["m0", None, "m2"]
    states = [(await message_row(gw.store, i))["state"] for i in ids]
    assert states == ["sending", "cancelled", "sending"]


async def test_multipart_receipts_deliver_once_every_part_is_delivered(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    mid = await accept(gw)
    now = gw.clock.time()
    assert await gw.store.claim(mid, "demo", now) is not None
    # The second part's receipt overtakes the submit's answer.
    assert await gw.store.apply_receipt("demo", "p2", "delivered", None, now) is None
    assert await gw.store.mark_sent(mid, "demo", ["p1", "p2"], now) is State.SENT
    assert await gw.store.apply_receipt("demo", "p1", "enroute", None, now) is None
    assert await gw.store.apply_receipt("demo", "p1", "delivered", None, now) == (
        mid,
        State.DELIVERED,
    )
    # A duplicate, and a late failure, change nothing.
    assert await gw.store.apply_receipt("demo", "p1", "delivered", None, now) is None
    assert await gw.store.apply_receipt("demo", "p2", "failed", "e", now) is None
    assert (await message_row(gw.store, mid))["state"] == "delivered"


async def test_sends_committed_together_apply_an_early_receipt_after_its_send(
    open_gateway: GatewayFactory,
) -> None:
    """Sends grouped in one transaction write their events and ids together; a receipt
    that overtook one of them still finds its part and follows its `sent` event."""
    gw = await open_gateway()
    ids = [await accept(gw) for _ in range(3)]
    now = gw.clock.time()
    for mid in ids:
        assert await gw.store.claim(mid, "demo", now) is not None
    assert await gw.store.apply_receipt("demo", "g1", "delivered", None, now) is None
    states = await asyncio.gather(
        *(gw.store.mark_sent(mid, "demo", [f"g{i}"], now) for i, mid in enumerate(ids))
    )
    assert states == [State.SENT, State.DELIVERED, State.SENT]
    history = [[e.state for e in await gw.store.events(mid)] for mid in ids]
    assert history[1][-2:] == ["sent", "delivered"]
    assert history[0][-1] == history[2][-1] == "sent"
    assert await gw.store.apply_receipt("demo", "g2", "delivered", None, now) == (
        ids[2],
        State.DELIVERED,
    )


async def test_one_failed_part_fails_the_message(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    mid = await accept(gw)
    now = gw.clock.time()
    await gw.store.claim(mid, "demo", now)
    await gw.store.mark_sent(mid, "demo", ["q1", "q2"], now)
    assert await gw.store.apply_receipt("demo", "q2", "failed", "smpp:err", now) == (
        mid,
        State.FAILED,
    )
    assert await gw.store.apply_receipt("demo", "q1", "delivered", None, now) is None
    row = await message_row(gw.store, mid)
    assert (row["state"], row["error_code"]) == ("failed", "smpp:err")


async def test_migrations_set_user_version_and_refuse_newer(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", KEY)
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    newer = Store(tmp_path / "s.db", KEY)
    with pytest.raises(RuntimeError, match="newer than this smsgw"):
        await newer.open()
    await newer.close()


def test_nonces_never_repeat_across_refills() -> None:
    pool = crypto.NoncePool(batch=4)
    nonces = [pool.take() for _ in range(1000)]
    assert all(len(n) == crypto.NONCE_BYTES for n in nonces)
    assert len(set(nonces)) == 1000


async def test_unit_usage_counts_parts_per_modem_today_and_this_month(
    open_gateway: GatewayFactory,
) -> None:
    from gateway.usage import day_and_month_start, unit_usage

    gw = await open_gateway()
    now = gw.clock.time()
    day_start, month_start = day_and_month_start(now)
    sends = [
        (["m1:5", "m1:6"], now),  # two parts today
        (["m2:7"], now),
        (["m1:8"], day_start - 1 if day_start > month_start else now),  # earlier this month
        (["m1:9"], month_start - 1),  # last month: not counted
    ]
    for carrier_ids, at in sends:
        mid = await accept(gw)
        await gw.store.claim(mid, "bank", at)
        await gw.store.mark_sent(mid, "bank", carrier_ids, at)
    usage = await unit_usage(gw.store, "bank", now)
    earlier_today = day_start <= month_start  # the 1st of the month: "earlier" is today
    assert usage == {"m1": (2 + earlier_today, 3), "m2": (1, 1)}
    assert await unit_usage(gw.store, "other", now) == {}
