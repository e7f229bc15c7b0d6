"""Issue 18 point 3: an SMPP route's sessions take bind slots shared by the nodes.

Real drivers against the SMSC simulator enforcing the carrier's session cap
(ESME_RALYBND beyond it); the slots live in the test's PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from drivers.base import RouteState
from drivers.clock import SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.options import SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.cluster.bindslots import ClusterBindSlots
from gateway.cluster.lease import Membership, Pool
from tests.pg.cut_proxy import CutProxy
from tests.pg.queue_rows import rows
from tests.sinks import RecordingSink

TIMING = {"lease": 5.0, "margin": 1.0, "interval": 0.3}


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    config = SimulatorConfig(system_id="acme", password="pw", max_sessions=1)
    async with SmscSimulator(config) as sim:
        yield sim


def driver(
    smsc: SmscSimulator, node: str, slots: ClusterBindSlots
) -> tuple[SmppDriver, RecordingSink]:
    options = SmppOptions(
        host="127.0.0.1", port=smsc.port, system_id="acme", password="pw", system_type=node,
        reconnect_min=0.05, reconnect_max=0.2,
    )  # fmt: skip
    sink = RecordingSink()
    d = SmppDriver("carrier", options, sink, SystemClock())
    d.use_bind_slots(slots)
    return d, sink


async def test_two_nodes_share_a_one_session_cap_without_already_bound(
    pool: Pool, smsc: SmscSimulator
) -> None:
    clock = SystemClock()
    members = [Membership(pool, name, clock, **TIMING) for name in ("gw1", "gw2")]
    for m in members:
        await m.start()
    slots = [ClusterBindSlots(pool, m, "carrier", 1, 60.0, retry_after=0.05) for m in members]
    (a, sink_a), (b, sink_b) = (
        driver(smsc, m.node_id, s) for m, s in zip(members, slots, strict=True)
    )
    try:
        await a.start()
        await sink_a.until(lambda: a.health().state is RouteState.UP)
        await b.start()
        # b asks, finds the one slot taken, and waits without binding.
        await sink_b.until(lambda: "bind slot" in b.health().detail)
        assert b.health().state is RouteState.DOWN and slots[1].refused >= 1
        holders = await rows(pool, "SELECT node_id FROM route_slots WHERE incarnation IS NOT NULL")
        assert holders == [("gw1",)]
        await a.aclose()  # a unbinds: its slot frees at once and b binds
        await sink_b.until(lambda: b.health().state is RouteState.UP)
        holders = await rows(pool, "SELECT node_id FROM route_slots WHERE incarnation IS NOT NULL")
        assert holders == [("gw2",)]
        assert smsc.already_bound == 0 and smsc.binds == 2
    finally:
        await a.aclose()
        await b.aclose()
        for m in members:
            await m.stop()


async def test_a_fenced_node_gets_no_slot(pool: Pool, smsc: SmscSimulator) -> None:
    member = Membership(pool, "gw1", SystemClock(), **TIMING)
    await member.start()
    try:
        slots = ClusterBindSlots(pool, member, "carrier", 2, 60.0)
        assert await slots.acquire(0) == 0
        await slots.release(0)
        member.fence.lost()  # as when renewals stop reaching the database
        assert await slots.acquire(0) is None
        assert await rows(
            pool, "SELECT count(*) FROM route_slots WHERE incarnation IS NOT NULL"
        ) == [(0,)]
    finally:
        await member.stop()


async def test_a_slot_given_back_while_the_database_is_away_is_owed_then_paid(
    pool: Pool, pg_dsn: str
) -> None:
    """A session that ended during a database outage shorter than the lease: its slot
    is given back before the next ask, not held by our live incarnation for good."""
    member = Membership(pool, "gw1", SystemClock(), **TIMING)  # its lease stays live
    proxy = CutProxy(int(conninfo_to_dict(pg_dsn)["port"]))  # type: ignore[arg-type]
    await proxy.start()
    await member.start()
    through = make_conninfo(pg_dsn, port=proxy.port, connect_timeout=2)
    try:
        async with AsyncConnectionPool(through, min_size=1, max_size=2, open=False) as cut_pool:
            slots = ClusterBindSlots(cut_pool, member, "carrier", 2, 60.0, release_timeout=0.2)
            assert [await slots.acquire(0), await slots.acquire(1)] == [0, 1]
            proxy.cut()
            await slots.release(0)  # the session ended; the database cannot hear it now
            assert set(slots.owed) == {0}
            proxy.heal()
            async with asyncio.timeout(20):  # the pool finds its cut connections broken
                while (slot := await slots.acquire(0)) is None:
                    pass
            assert slot == 0 and not slots.owed
            held = await rows(pool, "SELECT slot FROM route_slots WHERE incarnation IS NOT NULL")
            assert sorted(held) == [(0,), (1,)]
    finally:
        await member.stop()
        await proxy.stop()
