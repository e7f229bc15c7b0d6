"""Inbound messages shared on a cluster (issue 18 points 1, 5, 7).

The contract: the same inbound filed through `InboundStore` (the SQLite `Store`, or
`ClusterInbound` on PostgreSQL) reads back the same through `InboundReads`, paged both
ways, with concatenated parts joined, a redelivered part dropped and an expired set
stored incomplete. Then two gateways on one PostgreSQL: an inbound received by A is
listed by B's API and B's panel, the parts of one message landing on both nodes join,
the carrier's redelivery to B is not stored twice, an inbound's STOP decision names an
inbound A can read, and neither the PostgreSQL dump nor the nodes' SQLite files hold
the number or the text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from drivers.base import InboundPart, InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster.inbound import ClusterInbound
from gateway.cluster.inbound_reads import ClusterInboundReads
from gateway.cluster.schema import migrate
from gateway.inbound import missing_marker
from gateway.store.crypto import FieldCipher
from gateway.store.inbound_parts import Filed
from gateway.store.inbound_reads import InboundReads, LocalInboundReads
from gateway.store.inbound_store import InboundStore
from gateway.store.store import Store
from tests.admin_support import PanelClient
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER
from tests.pg.test_cluster_panel import OFFLINE_NAME, panels  # noqa: F401 - a fixture
from tests.pg.test_consent_cluster import _cluster_config
from tests.pg.two_nodes import in_process_nodes
from tests.pg_server import PgServer
from tests.test_api import _api
from tests.test_consent_inbound import SHORT_CODE
from tests.test_consent_policy import caller
from tests.test_store import _files, _needles, _scan

NOW = 1_800_000_000.0
ROUTE = "main"
HOLD = 300.0


@dataclass
class Side:
    files: InboundStore
    reads: InboundReads


def cipher() -> FieldCipher:
    return FieldCipher({1: bytes(range(32))}, bytes(range(32, 64)))


@pytest.fixture(params=["sqlite", "postgresql"])
async def side(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Side]:
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    try:
        if request.param == "sqlite":
            yield Side(store, LocalInboundReads(store))
            return
        dsn: str = request.getfixturevalue("migrated_dsn")
        async with AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False) as pool:
            async with pool.connection() as conn:
                await migrate(conn)
            shared = cipher()
            yield Side(
                ClusterInbound(pool, shared, store, "gw1"), ClusterInboundReads(pool, shared)
            )
    finally:
        await store.close()


def part(body: str, seq: int, total: int = 2, ref: int = 7) -> InboundSms:
    return InboundSms(CANARY_NUMBER, body, SHORT_CODE, part=InboundPart(ref, 8, total, seq))


async def test_reads_page_both_ways_by_commit_order(side: Side) -> None:
    ids = [f"in-{i}" for i in range(5)]
    for i, iid in enumerate(ids):
        await side.files.insert_inbound(iid, ROUTE, CANARY_NUMBER, f"text {i}", None, None, NOW + i)
    newest = await side.reads.inbound_newest(None, 2)
    assert [s.id for s in newest] == ["in-4", "in-3"]
    older = await side.reads.inbound_newest(newest[-1].seq, 10)
    assert [s.id for s in older] == ["in-2", "in-1", "in-0"]
    first = await side.reads.inbound_after(0, 3)
    assert [s.id for s in first] == ids[:3]
    rest = await side.reads.inbound_after(first[-1].seq, 10)
    assert [s.id for s in rest] == ids[3:]
    assert await side.reads.inbound_after(rest[-1].seq, 10) == []
    one = await side.reads.inbound("in-2")
    assert one is not None
    assert (one.route, one.received_at, one.incomplete) == (ROUTE, NOW + 2, False)
    assert (one.sender.open(), one.body.open()) == (CANARY_NUMBER, "text 2")
    assert await side.reads.inbound("in-9") is None


async def test_parts_join_a_redelivery_is_dropped_and_a_stale_set_expires(side: Side) -> None:
    assert (await side.files.file_inbound_part(ROUTE, part("lo, ", 2), NOW, HOLD)).outcome is (
        Filed.HELD
    )
    whole = await side.files.file_inbound_part(ROUTE, part("Hel", 1), NOW + 1, HOLD)
    assert whole.outcome is Filed.COMPLETED and whole.inbound_id is not None
    again = await side.files.file_inbound_part(ROUTE, part("lo, ", 2), NOW + 2, HOLD)
    assert again.outcome is Filed.DUPLICATE
    stored = await side.reads.inbound(whole.inbound_id)
    assert stored is not None and stored.body.open() == "Hello, "
    # One part of three, then the reassembly timeout: stored with markers.
    await side.files.file_inbound_part(ROUTE, part("middle", 2, 3, ref=9), NOW + 10, HOLD)
    assert await side.files.held_inbound_parts() == 1
    early = await side.files.expire_inbound_parts(NOW + 11, HOLD)
    assert (early.inbound_ids, early.next_due) == ((), NOW + 10 + HOLD)
    late = await side.files.expire_inbound_parts(NOW + 10 + HOLD, HOLD)
    (late_id,) = late.inbound_ids
    assert late.next_due is None and await side.files.held_inbound_parts() == 0
    incomplete = await side.reads.inbound(late_id)
    assert incomplete is not None and incomplete.incomplete
    assert incomplete.body.open() == missing_marker(1, 3) + "middle" + missing_marker(3, 3)
    assert [s.id for s in await side.reads.inbound_newest(None, 5)] == [late_id, whole.inbound_id]


async def test_two_nodes_filing_or_expiring_at_once_store_once_in_commit_order(
    migrated_dsn: str, tmp_path: Path
) -> None:
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    try:
        async with AsyncConnectionPool(migrated_dsn, min_size=2, max_size=8, open=False) as pool:
            async with pool.connection() as conn:
                await migrate(conn)
            a, b = (ClusterInbound(pool, cipher(), store, n) for n in ("gw1", "gw2"))
            for ref in range(5):  # the last two parts of a set, on two nodes at once
                await a.file_inbound_part(ROUTE, part("x", 1, 3, ref), NOW, HOLD)
                filed = await asyncio.gather(
                    a.file_inbound_part(ROUTE, part("y", 2, 3, ref), NOW, HOLD),
                    b.file_inbound_part(ROUTE, part("z", 3, 3, ref), NOW, HOLD),
                )
                assert sorted(f.outcome for f in filed) == [Filed.COMPLETED, Filed.HELD]
            # A stale set, expired by both nodes at once: stored once.
            await b.file_inbound_part(ROUTE, part("late", 2, 3, 99), NOW, HOLD)
            expired = await asyncio.gather(
                a.expire_inbound_parts(NOW + HOLD, HOLD), b.expire_inbound_parts(NOW + HOLD, HOLD)
            )
            assert sorted(len(e.inbound_ids) for e in expired) == [0, 1]
            await asyncio.gather(
                *(
                    (a, b)[i % 2].insert_inbound(
                        f"s{i}", ROUTE, CANARY_NUMBER, "t", None, None, NOW
                    )
                    for i in range(20)
                )
            )
            reads = ClusterInboundReads(pool, cipher())
            listed = await reads.inbound_after(0, 100)
            assert [s.seq for s in listed] == list(range(1, 27))
            assert all(s.body.open() == "xyz" for s in listed[:5])
    finally:
        await store.close()


# -- two gateways ----------------------------------------------------------------------


@dataclass
class Pair:
    a: Gateway
    b: Gateway


@pytest.fixture
async def pair(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[Pair]:
    async with in_process_nodes(
        tmp_path, clock, lambda data, name: _cluster_config(data, name, pg_dsn)
    ) as opened:
        yield Pair(opened[0], opened[1])


@pytest.mark.timeout(60)
async def test_inbound_on_one_node_is_read_on_the_other_once_and_sealed(
    pair: Pair, clock: FakeClock, pg_server: PgServer, pg_dsn: str
) -> None:
    a, b = pair.a, pair.b
    await a.sink.inbound(ROUTE, InboundSms(CANARY_NUMBER, CANARY_BODY, SHORT_CODE))
    half = len(CANARY_BODY) // 2
    # One message's parts over both nodes; then the carrier, not answered by B, sends
    # B's part again.
    await a.sink.inbound(ROUTE, part(CANARY_BODY[:half], 1, ref=42))
    await b.sink.inbound(ROUTE, part(CANARY_BODY[half:], 2, ref=42))
    await b.sink.inbound(ROUTE, part(CANARY_BODY[half:], 2, ref=42))
    clock.advance(5)
    await b.sink.inbound(ROUTE, InboundSms(CANARY_NUMBER, "STOP", SHORT_CODE))
    assert await b.sink.expire_inbound() is None  # nothing held on either node

    async with contextlib.asynccontextmanager(_api)(b, frozenset({"read", "phi"})) as api:
        assert b.cluster is not None
        await b.cluster.tokens.copy_local(b.store.reader)
        r = await api.get("/api/v1/inbound?limit=2&include=phi")
        assert r.status == 200, await r.text()
        page = await r.json()
        assert [i["text"] for i in page["inbound"]] == ["STOP", CANARY_BODY]
        r = await api.get(f"/api/v1/inbound?limit=5&cursor={page['next_cursor']}&include=phi")
        rest = (await r.json())["inbound"]
        assert [(i["text"], i["sender"]) for i in rest] == [(CANARY_BODY, CANARY_NUMBER)]
        r = await api.get("/api/v1/inbound?order=oldest&limit=10")
        polled = await r.json()
        assert len(polled["inbound"]) == 3  # the redelivered part: not a fourth
        r = await api.get(f"/api/v1/inbound?order=oldest&cursor={polled['next_cursor']}")
        assert (await r.json())["inbound"] == []

    # The STOP received by B: its decision names an inbound A reads (and reveals).
    staff = await caller(a, "consent", "read", "phi")
    view = await a.usecases.consent.lookup(staff, CANARY_NUMBER)
    (stop,) = [h for h in view.history if h.decision == "opt_out"]
    assert stop.inbound_id is not None
    revealed = await a.usecases.inbound.reveal(staff, stop.inbound_id)
    assert (revealed.to, revealed.body) == (CANARY_NUMBER, "STOP")

    pg_dump = await asyncio.create_subprocess_exec(
        str(pg_server.bindir / "pg_dump"),
        "--data-only",
        "--table=inbound*",
        pg_dsn,
        stdout=asyncio.subprocess.PIPE,
    )
    dump, _ = await pg_dump.communicate()
    assert pg_dump.returncode == 0
    assert b"COPY public.inbound " in dump
    needles = _needles(CANARY_NUMBER, CANARY_DIGITS, CANARY_BODY, CANARY_BODY[:half])
    assert [n for n in needles if n in dump] == []
    for gw in (a, b):
        await gw.stop()
    assert _scan([f for gw in (a, b) for f in _files(gw.config.db_path)], needles) == []


async def test_the_panels_inbound_page_on_b_lists_what_a_received(
    panels: tuple[PanelClient, PanelClient],  # noqa: F811 - the fixture
) -> None:
    a, b = panels
    await a.gw.sink.inbound(ROUTE, InboundSms(CANARY_NUMBER, CANARY_BODY, SHORT_CODE))
    (stored,) = await a.gw.inbound_reads.inbound_newest(None, 5)
    await b.login_ok(OFFLINE_NAME)
    r = await b.client.get("/inbound")
    page = await r.text()
    assert r.status == 200, page
    assert f'data-inbound-id="{stored.id}"' in page
    assert CANARY_BODY not in page and CANARY_DIGITS not in page
