"""The carrier's receipts and MO messages while a node's PostgreSQL is away (issue 18,
S8's inbound side, without another full S8 run).

One node's inbound path, real parts: its SMPP driver bound to the SMSC simulator, the
gateway's sink filing receipts in the shared queue and MO messages in the shared
inbound tables, through the node's pool of checked connections. The simulator, as a
real SMSC, sends a deliver_sm answered with a temporary error again after
`redelivery_delay`.

- While the database refuses the node (its connections terminated, new ones refused),
  every receipt and MO is answered ESME_RX_T_APPN (`smpp_inbound_not_stored`), never
  ESME_ROK, and nothing is stored; then, with the node's connections terminated in a
  loop while the carrier delivers them again, every receipt and every MO ends stored
  exactly once: each message delivered with one `delivered` event, each MO one row.
- A store whose commit went through but whose answer was lost (the connection died
  under COMMIT's answer): the carrier's redelivery is stored under the same id, once
  (its durable mark in doubt, flagged failed, `gateway/inbound_doubt.py`).

Waits are on conditions (the simulator's counters), bounded by `WAIT`, never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from drivers.base import RouteState
from drivers.clock import FakeClock, SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.options import SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from drivers.smpp.status import Status
from gateway.cluster import nodes
from gateway.cluster.checked import CheckedAsyncConnection
from gateway.cluster.inbound import ClusterInbound
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.config_sections import QueueConfig, RouteConfig
from gateway.dispatch_group import GroupSender
from gateway.inbound_doubt import StoredOnce
from gateway.metrics import Metrics
from gateway.models import Priority
from gateway.ratelimit import TokenBucket
from gateway.routes import RouteRuntime
from gateway.scheduler_feed import Entry
from gateway.sink import GatewaySink
from gateway.store.crypto import FieldCipher
from gateway.store.store import NewMessage, Store

ROUTE = "carrier"
NUMBER = "+12025550147"
WAIT = 20.0  # an upper bound on waiting for a condition, never an expected duration
RECEIPTS, MOS = 6, 4
Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass
class Node:
    queue: ClusterQueue
    sender: GroupSender
    route: RouteRuntime
    inbound: ClusterInbound
    direct: Conn  # the test's own session on the node's database, never terminated
    admin: Conn  # a session on the server's `postgres` database
    dbname: str

    async def rows(self, sql: str, params: Any = None) -> list[Any]:
        return await (await self.direct.execute(sql, params)).fetchall()

    async def send(self, count: int) -> list[str]:
        """`count` messages accepted, claimed and submitted: `sent`, receipts owed."""
        now = SystemClock().time()
        messages = [
            NewMessage(
                id=f"m-{n}", token_id="tok", priority=Priority.NORMAL, to=NUMBER,
                body=f"Your results {n}", encoding="gsm7", segments=1, created_at=now,
                expires_at=now + 3600, route_hint=ROUTE,
            )
            for n in range(count)
        ]  # fmt: skip
        await self.queue.accept(messages)
        group = [Entry(m.id, m.priority, now, m.expires_at, (ROUTE,)) for m in messages]
        claimed = await self.queue.claim_group([e.id for e in group], ROUTE, now)

        async def claims() -> list[Any]:
            return claimed

        await self.sender.send(group, self.route, claims())
        return [m.id for m in messages]

    async def refuse(self, refused: bool) -> None:
        """The database refuses new connections (or takes them again), and ends the
        node's sessions."""
        await self.admin.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS {not refused}')
        if refused:
            await self.terminate()

    async def terminate(self) -> None:
        """End every session of the node on its database (not the test's own)."""
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> %s AND backend_type = 'client backend'",
            (self.dbname, self.direct.info.backend_pid),
        )


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    """Receipts and redeliveries wait on the carrier's own clock (`carrier_time`)."""
    config = SimulatorConfig(system_id="acme", password="pw", receipt_delay=1.0)
    async with SmscSimulator(config, FakeClock()) as sim:
        yield sim


@asynccontextmanager
async def carrier_time(sim: SmscSimulator) -> AsyncIterator[None]:
    """The carrier's clock runs: whatever waits on it (a receipt's delay, a redelivery's)
    comes at once, in the order of its deadlines."""
    clock = sim.clock
    assert isinstance(clock, FakeClock)

    async def run() -> None:
        while True:
            await clock.wait_sleeping(1)
            clock.advance(clock.next_deadline or 0.0)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def node(pool: Pool, pg_dsn: str, smsc: SmscSimulator, tmp_path: Path) -> AsyncIterator[Node]:
    store = Store(tmp_path / "gw1.db", bytes(32))
    await store.open()
    # As the node's own pool (`cluster/node.py`), with a short wait for a connection.
    node_pool: Pool = AsyncConnectionPool(
        pg_dsn, connection_class=CheckedAsyncConnection, min_size=1, max_size=4,
        timeout=0.5, open=False,
    )  # fmt: skip
    clock = SystemClock()
    direct = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    admin = await psycopg.AsyncConnection.connect(
        make_conninfo(pg_dsn, dbname="postgres"), autocommit=True
    )
    try:
        await node_pool.open(wait=True)
        async with pool.connection() as conn:
            me = await nodes.register(conn, "gw1", 600.0)
        cipher = FieldCipher({1: bytes(range(32))}, bytes(32))
        queue = ClusterQueue(node_pool, cipher, lambda: me)
        inbound = ClusterInbound(node_pool, cipher, store, "gw1", me=lambda: me)
        sink = GatewaySink(store, clock, Metrics(), receipts=queue, inbound=inbound)
        options = SmppOptions(host="127.0.0.1", port=smsc.port, system_id="acme", password="pw")
        driver = SmppDriver(ROUTE, options, sink, clock)
        route = RouteRuntime(RouteConfig(name=ROUTE, type="smpp"), driver, TokenBucket(None, 1, 0))
        sender = GroupSender(
            queue, QueueConfig(), clock, Metrics(), requeue=lambda _: None,
            freed=lambda: None, parked=lambda: None, backoff=lambda _: 1.0,
        )  # fmt: skip
        changed = asyncio.Event()
        sink.wake_on_health(changed.set)
        await driver.start()
        async with asyncio.timeout(WAIT):
            while driver.health().state is not RouteState.UP:
                await changed.wait()
                changed.clear()
        dbname = str(conninfo_to_dict(pg_dsn)["dbname"])
        yield Node(queue, sender, route, inbound, direct, admin, dbname)
        await driver.aclose()
    finally:
        await node_pool.close()
        await direct.close()
        await admin.close()
        await store.close()


async def _until(sim: SmscSimulator, predicate: Callable[[], bool]) -> None:
    await asyncio.wait_for(sim.wait_until(predicate), WAIT)


async def _stored(node: Node, ids: list[str]) -> tuple[list[Any], list[Any]]:
    """Each message's state and `delivered` events; each MO text's rows."""
    states = await node.rows(
        "SELECT m.id, m.state, count(e.*) FROM messages m LEFT JOIN message_events e"
        " ON e.message_id = m.id AND e.state = 'delivered' WHERE m.id = ANY(%s)"
        " GROUP BY m.id, m.state ORDER BY m.id",
        (ids,),
    )
    inbound = await node.rows("SELECT id, body_ct FROM inbound ORDER BY seq")
    return states, inbound


async def _texts(node: Node, inbound: list[Any]) -> list[str]:
    cipher = node.inbound._cipher
    return sorted(cipher.decrypt(bytes(ct), iid, "body") for iid, ct in inbound)


async def test_receipts_and_mo_during_an_outage_are_refused_then_stored_exactly_once(
    node: Node, smsc: SmscSimulator
) -> None:
    ids = await node.send(RECEIPTS)
    # The receipts wait at the carrier until the database refuses the node.
    await node.refuse(True)
    with capture_logs() as logs:
        async with carrier_time(smsc):
            for n in range(MOS):
                smsc.inject_mo(NUMBER, "4000", f"reply {n}")
            await _until(smsc, lambda: smsc.delivery_errors >= RECEIPTS + MOS)
            # Not stored, so not acknowledged: the carrier keeps every one of them.
            assert (smsc.receipts_sent, smsc.mo_sent) == (0, 0)
            states, inbound = await _stored(node, ids)
            assert {s[1] for s in states} == {"sent"} and inbound == []
            assert {e.get("error") for e in logs if e["event"] == "smpp_inbound_not_stored"}
            assert set(smsc.delivery_error_statuses) == {Status.ESME_RX_T_APPN}

            # Back, but the node's sessions are ended again and again while the carrier
            # delivers what it kept: each delivery stored once, or refused and sent again.
            await node.refuse(False)
            for _ in range(20):
                await node.terminate()
            await _until(smsc, lambda: (smsc.receipts_sent, smsc.mo_sent) == (RECEIPTS, MOS))
    states, inbound = await _stored(node, ids)
    assert states == [(i, "delivered", 1) for i in sorted(ids)]
    assert await _texts(node, inbound) == [f"reply {n}" for n in range(MOS)]
    assert smsc.redelivered >= RECEIPTS + MOS and smsc.abandoned == 0


async def test_an_mo_whose_commit_answer_was_lost_is_stored_once(
    node: Node, smsc: SmscSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit went through, the answer to COMMIT did not come back (what a
    connection ended under it gives, `cluster/checked.py`): not acknowledged, and the
    redelivery is recognised by the id the first attempt used."""
    real = node.inbound.insert_inbound_once
    lost = [psycopg.OperationalError("the connection was lost at COMMIT")]
    used: list[str] = []

    async def commit_answer_lost(*args: Any, **kwargs: Any) -> StoredOnce:
        once = await real(*args, **kwargs)
        used.append(once.inbound_id)
        if lost:
            raise lost.pop()
        return once

    monkeypatch.setattr(node.inbound, "insert_inbound_once", commit_answer_lost)
    with capture_logs() as logs:
        async with carrier_time(smsc):
            smsc.inject_mo(NUMBER, "4000", "C")
            await _until(smsc, lambda: smsc.mo_sent == 1)
            assert (smsc.delivery_errors, smsc.redelivered) == (1, 1)
            _, inbound = await _stored(node, [])
            assert [row[0] for row in inbound] == used[:1] and used[0] == used[1]
            smsc.inject_mo(NUMBER, "4000", "C")  # the same text again, a new message: stored
            await _until(smsc, lambda: smsc.mo_sent == 2)
    _, inbound = await _stored(node, [])
    assert await _texts(node, inbound) == ["C", "C"] and len(set(used)) == 2
    stored = [e["event"] for e in logs if e["event"].startswith("inbound_stored")]
    assert stored == ["inbound_stored_before", "inbound_stored"]
