"""An MO left unacknowledged by one node and delivered again to another is stored once
(`gateway/inbound_doubt.py`, `gateway/cluster/inbound_marks.py`), real parts: two
nodes' sinks and SMPP drivers bound to one SMSC simulator, filing MO messages in the
shared PostgreSQL tables under one keyring.

- Node A's answer lost (its COMMIT went through, the answer to it did not come back:
  ESME_RX_T_APPN): the carrier's redelivery reaches node B, which stores it under A's
  id, once; the same text again later is a new message, stored.
- Node A killed between its COMMIT and writing deliver_sm_resp (nothing after the
  COMMIT runs; its next start ends the old incarnation's lease): node B stores the
  redelivery once.
- In the store: a mark whose delivery is in flight on a live node is not in doubt (an
  identical MO meanwhile on another node is a message of its own); a dead owner's is,
  on any node, until it is older than the keep window; expired marks are swept.

Waits are on conditions (the simulator's counters, an event), bounded by `WAIT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from drivers.base import RouteState
from drivers.clock import FakeClock, SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.options import SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.cluster import nodes
from gateway.cluster.inbound import ClusterInbound
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.inbound_doubt import Marked, Settle, StoredOnce
from gateway.metrics import Metrics
from gateway.sink import GatewaySink
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

ROUTE = "carrier"
NUMBER = "+12025550147"
WAIT = 20.0  # an upper bound on waiting for a condition, never an expected duration
LEASE = 600.0


def _cipher() -> FieldCipher:
    return FieldCipher({1: bytes(range(32))}, bytes(32))  # one keyring on every node


@dataclass
class Node:
    me: Incarnation
    inbound: ClusterInbound
    sink: GatewaySink
    driver: SmppDriver | None = None


@asynccontextmanager
async def node(pool: Pool, name: str, tmp_path: Path) -> AsyncIterator[Node]:
    """A node's store, shared inbound tables and sink (no route yet: `bind`)."""
    store = Store(tmp_path / f"{name}.db", bytes(32))
    await store.open()
    try:
        async with pool.connection() as conn:
            me = await nodes.register(conn, name, LEASE)
        inbound = ClusterInbound(pool, _cipher(), store, name, me=lambda: me)
        yield Node(me, inbound, GatewaySink(store, SystemClock(), Metrics(), inbound=inbound))
    finally:
        await store.close()


async def bind(n: Node, smsc: SmscSimulator) -> SmppDriver:
    options = SmppOptions(host="127.0.0.1", port=smsc.port, system_id="acme", password="pw")
    driver = n.driver = SmppDriver(ROUTE, options, n.sink, SystemClock())
    changed = asyncio.Event()
    n.sink.wake_on_health(changed.set)
    await driver.start()
    async with asyncio.timeout(WAIT):
        while driver.health().state is not RouteState.UP:
            await changed.wait()
            changed.clear()
    return driver


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    """Redeliveries wait on the carrier's own clock (`redeliver`)."""
    config = SimulatorConfig(system_id="acme", password="pw", redelivery_delay=5.0)
    async with SmscSimulator(config, FakeClock()) as sim:
        yield sim


async def redeliver(sim: SmscSimulator) -> None:
    """The carrier's clock runs to its next redelivery."""
    clock = sim.clock
    assert isinstance(clock, FakeClock)
    await asyncio.wait_for(clock.wait_sleeping(1), WAIT)
    clock.advance(clock.next_deadline or 0.0)


async def _until(sim: SmscSimulator, predicate: Callable[[], bool]) -> None:
    await asyncio.wait_for(sim.wait_until(predicate), WAIT)


async def _texts(pool: Pool) -> list[tuple[str, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id, body_ct FROM inbound ORDER BY seq")
        rows = await cur.fetchall()
    return [(i, _cipher().decrypt(bytes(ct), i, "body")) for i, ct in rows]


async def test_an_mo_whose_answer_node_a_lost_is_stored_once_by_node_b(
    pool: Pool, smsc: SmscSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[str] = []
    async with node(pool, "a", tmp_path) as a, node(pool, "b", tmp_path) as b:
        real = a.inbound.insert_inbound_once

        async def commit_answer_lost(*args: Any, **kwargs: Any) -> StoredOnce:
            once = await real(*args, **kwargs)
            used.append(once.inbound_id)
            raise psycopg.OperationalError("the connection was lost at COMMIT")

        monkeypatch.setattr(a.inbound, "insert_inbound_once", commit_answer_lost)
        with capture_logs() as logs:
            driver_a = await bind(a, smsc)
            smsc.inject_mo(NUMBER, "4000", "C")
            await _until(smsc, lambda: smsc.delivery_errors == 1)  # ESME_RX_T_APPN
            await driver_a.aclose()  # its bind is lost; node A lives on
            await a.sink.aclose()  # (its failed flag written: else the next commit takes it)
            driver_b = await bind(b, smsc)
            await redeliver(smsc)
            await _until(smsc, lambda: smsc.mo_sent == 1)
            assert [row[0] for row in await _texts(pool)] == used
            smsc.inject_mo(NUMBER, "4000", "C")  # the same text again, a new message
            await _until(smsc, lambda: smsc.mo_sent == 2)
            await driver_b.aclose()
    assert [text for _, text in await _texts(pool)] == ["C", "C"]
    stored = [e["event"] for e in logs if e["event"].startswith("inbound_stored")]
    assert stored == ["inbound_stored_before", "inbound_stored"]
    assert smsc.redelivered == 1
    assert all(NUMBER not in str(e) for e in logs)


async def test_an_mo_whose_node_died_before_answering_is_stored_once_by_another(
    pool: Pool, smsc: SmscSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[str] = []
    died = asyncio.Event()
    async with node(pool, "a", tmp_path) as a, node(pool, "b", tmp_path) as b:
        real = a.inbound.insert_inbound_once

        async def commit_then_die(*args: Any, **kwargs: Any) -> StoredOnce:
            once = await real(*args, **kwargs)
            used.append(once.inbound_id)
            died.set()
            raise asyncio.CancelledError  # nothing after the COMMIT runs: no answer

        monkeypatch.setattr(a.inbound, "insert_inbound_once", commit_then_die)
        # A dead node writes nothing more: not even the flag of a failed delivery.
        monkeypatch.setattr(a.sink._in_doubt, "not_answered", lambda digest: None)
        driver_a = await bind(a, smsc)
        smsc.inject_mo(NUMBER, "4000", "K")
        await asyncio.wait_for(died.wait(), WAIT)
        await driver_a.aclose()  # its session ends: the carrier keeps the MO for another
        async with pool.connection() as conn:  # node A's next start ends the old lease
            await nodes.register(conn, "a", LEASE)
        driver_b = await bind(b, smsc)
        await _until(smsc, lambda: smsc.mo_sent == 1)
        await driver_b.aclose()
    assert await _texts(pool) == [(used[0], "K")]
    assert smsc.redelivered == 1


async def test_marks_of_live_deliveries_are_not_in_doubt_dead_ones_are_until_expired(
    pool: Pool, tmp_path: Path
) -> None:
    async with node(pool, "a", tmp_path) as a, node(pool, "b", tmp_path) as b:
        digest = a.inbound.inbound_digest("route:r", NUMBER, "4000", "YES")
        assert digest == b.inbound.inbound_digest("route:r", NUMBER, "4000", "YES")
        assert digest != a.inbound.inbound_digest("route:r", NUMBER, "4000", "NO")
        assert digest != a.inbound.inbound_digest("route:r", NUMBER, "400", "0YES")

        async def deliver(n: Node, iid: str, at: float, settle: Settle | None = None) -> StoredOnce:
            marked = Marked(digest, 100.0, settle or Settle())
            return await n.inbound.insert_inbound_once(
                iid, "r", NUMBER, "YES", "4000", None, at, marked
            )

        # A's delivery in flight (its lease runs): B's identical MO is a message of its own.
        assert await deliver(a, "in-a", 1000.0) == StoredOnce("in-a", True)
        assert await deliver(b, "in-b", 1001.0) == StoredOnce("in-b", True)
        # B acknowledged (its clear rides its next transaction); A dies unanswered.
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
                (a.me.incarnation,),
            )
        cleared = Settle(cleared=((digest, "in-b"),))
        assert await deliver(b, "in-c", 1002.0, cleared) == StoredOnce("in-a", False)
        # Taken, A's mark is B's, in flight: not in doubt again.
        assert await deliver(b, "in-d", 1003.0) == StoredOnce("in-d", True)
        async with pool.connection() as conn:
            await conn.execute("UPDATE inbound_doubt SET owner = NULL")  # every owner gone
        # Older than the keep window: not in doubt any more; swept.
        assert await deliver(b, "in-e", 1101.5) == StoredOnce("in-d", False)
        await b.inbound.settle_inbound_doubt(Settle(expired=1101.5 - 100.0))
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT inbound_id FROM inbound_doubt ORDER BY at")
            assert [r[0] for r in await cur.fetchall()] == ["in-d"]
