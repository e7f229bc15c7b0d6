"""The outcome journal (issue 18, nodes): what a node sent while PostgreSQL stayed away
longer than its retry window is kept in its own SQLite store and finished once the
database is back, with the carrier's ids, overwriting nothing.

Real parts: the node's queue talks to PostgreSQL through a cut proxy, its SMPP driver
submits to the SMSC simulator, its journal is a real SQLite store. The retry window is
injected short (`record_window`), so a cut of about a second stands for the outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from drivers.base import RouteState
from drivers.clock import FakeClock, SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.options import SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.app import Gateway
from gateway.cluster import nodes
from gateway.cluster.lease import Membership, Pool
from gateway.cluster.nodes import Incarnation, Recovered
from gateway.cluster.outcome_journal import OutcomeJournal
from gateway.cluster.queue_store import ClusterQueue
from gateway.config import from_mapping
from gateway.config_sections import QueueConfig, RouteConfig
from gateway.dispatch_group import GroupSender
from gateway.metrics import Metrics
from gateway.models import Priority, State
from gateway.ratelimit import TokenBucket
from gateway.routes import RouteRuntime
from gateway.scheduler_feed import Entry
from gateway.store import crypto
from gateway.store.crypto import FieldCipher
from gateway.store.store import ClaimedMessage, NewMessage, Store
from tests.conftest import LOOPBACK_TEST
from tests.pg.cut_proxy import CutProxy
from tests.pg.queue_rows import rows
from tests.sinks import RecordingSink

ROUTE = "carrier"
NUMBER, BODY = "+12025550147", "Your lab results are ready"
WINDOW = 0.5  # the injected retry window: past it, outcomes go to the journal
WAIT = 10.0  # an upper bound on waiting for an event, never an expected duration


@dataclass
class Node:
    """One node's send path: its queue (through the cut proxy), journal and sender."""

    me: Incarnation
    queue: ClusterQueue
    journal: OutcomeJournal
    store: Store  # the node's own SQLite store, which holds the journal
    sender: GroupSender
    route: RouteRuntime
    proxy: CutProxy
    direct: Pool  # the test's own view of the database, never cut

    async def accept(self, count: int, prefix: str) -> list[Entry]:
        now = SystemClock().time()
        messages = [
            NewMessage(
                id=f"{prefix}-{n}",
                token_id="tok",
                priority=Priority.NORMAL,
                to=NUMBER,
                body=BODY,
                encoding="gsm7",
                segments=1,
                created_at=now,
                expires_at=now + 3600,
                route_hint=ROUTE,
            )
            for n in range(count)
        ]
        await self.queue.accept(messages)
        return [Entry(m.id, m.priority, now, m.expires_at, (ROUTE,)) for m in messages]

    async def send_cut(self, group: list[Entry]) -> None:
        """Claim `group`, cut the database away, let the carrier answer: past the window
        its outcomes are journaled."""
        claimed = await self.queue.claim_group([e.id for e in group], ROUTE, SystemClock().time())
        assert all(isinstance(c, ClaimedMessage) for c in claimed)
        self.proxy.cut()

        async def claims() -> list[Any]:
            return claimed

        await self.sender.send(group, self.route, claims())

    async def states(self, ids: list[str]) -> dict[str, tuple[str, bool]]:
        found = await rows(
            self.direct,
            "SELECT id, state, possible_duplicate FROM messages WHERE id = ANY(%s)",
            (ids,),
        )
        return {r[0]: (r[1], r[2]) for r in found}


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    # The simulator's clock is never advanced: no receipt comes unless a test sends one.
    async with SmscSimulator(SimulatorConfig(system_id="acme", password="pw"), FakeClock()) as sim:
        yield sim


@pytest.fixture
async def node(pool: Pool, pg_dsn: str, smsc: SmscSimulator, tmp_path: Path) -> AsyncIterator[Node]:
    proxy = CutProxy(int(conninfo_to_dict(pg_dsn)["port"]))  # type: ignore[arg-type]
    await proxy.start()
    store = Store(tmp_path / "gw1.db", bytes(32))
    await store.open()
    options = SmppOptions(host="127.0.0.1", port=smsc.port, system_id="acme", password="pw")
    sink = RecordingSink()
    driver = SmppDriver(ROUTE, options, sink, SystemClock())
    conninfo = make_conninfo(pg_dsn, port=proxy.port, connect_timeout=2)
    cut_pool: Pool = AsyncConnectionPool(
        conninfo, min_size=1, max_size=4, timeout=WINDOW, open=False
    )
    try:
        await cut_pool.open(wait=True)
        async with pool.connection() as conn:
            me = await nodes.register(conn, "gw1", 600.0)
        queue = ClusterQueue(cut_pool, FieldCipher({1: bytes(range(32))}, bytes(32)), lambda: me)
        journal = OutcomeJournal(store)
        await journal.load()
        queue.journal = journal
        clock = SystemClock()
        route = RouteRuntime(RouteConfig(name=ROUTE, type="smpp"), driver, TokenBucket(None, 1, 0))
        sender = GroupSender(
            queue,
            QueueConfig(),
            clock,
            Metrics(),
            requeue=lambda _: None,
            freed=lambda: None,
            parked=lambda: None,
            backoff=lambda _: 1.0,
            fence=lambda: None,  # the lease holds (600 s): only the database is away
            journal=queue.journal_outcomes,
            record_window=WINDOW,
        )
        await driver.start()
        await sink.until(lambda: driver.health().state is RouteState.UP, WAIT)
        yield Node(me, queue, journal, store, sender, route, proxy, pool)
    finally:
        await driver.aclose()
        await cut_pool.close()
        await proxy.stop()
        await store.close()


async def test_outcomes_past_the_window_are_journaled_and_sent_with_carrier_ids_after_heal(
    node: Node, smsc: SmscSimulator
) -> None:
    group = await node.accept(3, "cut")
    ids = [e.id for e in group]
    await node.send_cut(group)

    assert smsc.submits == 3  # the carrier took them all
    assert node.journal.pending == 3
    assert set((await node.states(ids)).values()) == {("sending", False)}
    journaled = await node.journal.entries()
    assert [(j.owner, j.outcome.state) for j in journaled] == [(node.me, State.SENT)] * 3
    assert all(len(j.outcome.carrier_ids) == 1 for j in journaled)
    assert (
        await node.store.reader.all(
            "SELECT seq FROM outcome_journal WHERE instr(carrier_ids || message_id || route, ?)"
            " OR instr(carrier_ids || message_id || route, ?)",
            (NUMBER[1:], BODY),
        )
        == []
    )  # nothing personal on disk in the clear

    # A receipt for a journaled submit comes (to any node) before the replay: kept early.
    receipt_for = journaled[0]
    peer = ClusterQueue(node.direct, node.queue.cipher, lambda: node.me)
    cid = receipt_for.outcome.carrier_ids[0]
    assert await peer.apply_receipt(ROUTE, cid, "delivered", None, SystemClock().time()) is None

    node.proxy.heal()
    # The next round of outcomes goes through, and the journal is finished after it.
    later = await node.accept(1, "after")
    claimed = await node.queue.claim_group([later[0].id], ROUTE, SystemClock().time())

    async def claims() -> list[Any]:
        return claimed

    await node.sender.send(later, node.route, claims())

    assert node.journal.pending == 0 and await node.journal.entries() == []
    states = await node.states([*ids, later[0].id])
    assert states[receipt_for.outcome.message_id] == ("delivered", False)
    assert {states[i] for i in ids if i != receipt_for.outcome.message_id} == {("sent", False)}
    assert states[later[0].id] == ("sent", False)
    parts = await rows(
        node.direct,
        "SELECT message_id, carrier_id FROM carrier_ids WHERE message_id = ANY(%s)",
        (ids,),
    )
    assert sorted(parts) == sorted(
        (j.outcome.message_id, j.outcome.carrier_ids[0]) for j in journaled
    )
    assert await rows(node.direct, "SELECT count(*) FROM late_outcomes") == [(0,)]


async def test_a_journaled_outcome_whose_rows_a_peer_recovered_becomes_a_late_outcome(
    node: Node, smsc: SmscSimulator
) -> None:
    group = await node.accept(2, "lapsed")
    ids = [e.id for e in group]
    await node.send_cut(group)
    assert node.journal.pending == 2

    # The node's lease lapsed in the outage: it rejoins, a peer recovers the old claims.
    async with node.direct.connection() as conn:
        rejoined = await nodes.register(conn, "gw1", 600.0)
        peer = await nodes.register(conn, "gw2", 600.0)
        recovered = await nodes.recover_expired(conn, peer)
    assert [(r.incarnation, r.requeued) for r in recovered] == [(node.me.incarnation, 2)]
    assert rejoined.incarnation > node.me.incarnation

    node.proxy.heal()
    assert await node.queue.replay_journal() == 0
    assert node.journal.pending == 0 and node.queue.late == 2
    # Never overwritten: the rows stay queued, flagged, for whoever sends them again;
    # the carrier's ids are kept with the late outcomes.
    assert set((await node.states(ids)).values()) == {("queued", True)}
    late = await rows(
        node.direct, "SELECT message_id, incarnation, state, carrier_ids FROM late_outcomes"
    )
    assert sorted((m, inc, st, len(c)) for m, inc, st, c in late) == [
        (i, node.me.incarnation, "sent", 1) for i in sorted(ids)
    ]


def _node_config(data: Path, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": ROUTE, "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for the test.
            "cluster": {"enabled": True, "node_id": "gw1", "conninfo": dsn, "lease_seconds": 600},
        }
    )


async def test_a_restart_with_a_journal_replays_it_under_the_previous_incarnation(
    pg_dsn: str, tmp_path: Path, clock: FakeClock
) -> None:
    config = _node_config(tmp_path / "gw1", pg_dsn)
    crypto.generate_master_key(config.master_key_path)
    gw = await Gateway.open(config, clock)
    try:
        assert gw.cluster is not None
        queue, before = gw.cluster.queue, gw.cluster.membership.me
        now = clock.time()
        message = NewMessage(
            "restart-1", "tok", Priority.NORMAL, NUMBER, BODY, "gsm7", 1, now, now + 3600
        )
        await queue.accept([message])
        assert isinstance((await queue.claim_group([message.id], ROUTE, now))[0], ClaimedMessage)
        # What the sender does once the window is over (the database away all along).
        await queue.journal_outcomes([(message.id, ROUTE, ["c-restart-1"], now)], [])
    finally:
        await gw.stop()  # or a crash: the row stays `sending` for the old incarnation

    gw = await Gateway.open(config, clock)  # a new incarnation; the journal goes first
    try:
        assert gw.cluster is not None and gw.cluster.membership.me != before
        assert gw.cluster.queue.journal is not None
        assert gw.cluster.queue.journal.pending == 0
        found = await rows(
            gw.cluster.pool,
            "SELECT m.state, m.owner_incarnation, c.carrier_id FROM messages m"
            " JOIN carrier_ids c ON c.message_id = m.id WHERE m.id = %s",
            (message.id,),
        )
        assert found == [("sent", before.incarnation, "c-restart-1")]
    finally:
        await gw.stop()


async def test_old_incarnations_are_pruned_one_node_at_a_time(pool: Pool) -> None:
    async with pool.connection() as conn:
        first = await nodes.register(conn, "gw1", 600.0)
        holder = await nodes.register(conn, "gw1", 600.0)  # supersedes the first
        newest = await nodes.register(conn, "gw1", 600.0)
        sweeper = await nodes.register(conn, "gw2", 600.0)
        assert len(await nodes.recover_expired(conn, sweeper)) == 2
        await conn.execute(
            "INSERT INTO route_slots (route, slot, incarnation, node_id) VALUES (%s, 0, %s, %s)",
            (ROUTE, holder.incarnation, holder.node_id),
        )
        await conn.execute(
            "INSERT INTO node_routes (incarnation, route, node_id, kind, state) VALUES"
            " (%s, %s, 'gw1', 'smpp', 'up'), (%s, %s, 'gw1', 'smpp', 'up')",
            (first.incarnation, ROUTE, newest.incarnation, ROUTE),
        )
        assert await nodes.prune_gone(conn, 3600.0) == 0  # not gone long enough

    async with pool.connection() as other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock(%s)", (nodes.PRUNE_LOCK,))
        async with pool.connection() as conn:
            assert await nodes.prune_gone(conn, 1e-6) is None  # another node is at it
    async with pool.connection() as conn:
        assert await nodes.prune_gone(conn, 1e-6) == 1

    # The slot's holder stays while its slot is held, the newest of each node id always.
    left = await rows(pool, "SELECT incarnation FROM nodes ORDER BY incarnation")
    assert left == [(holder.incarnation,), (newest.incarnation,), (sweeper.incarnation,)]
    assert await rows(pool, "SELECT incarnation FROM node_routes") == [(newest.incarnation,)]


async def test_a_rejoined_node_replays_its_journal_before_its_sweep_takes_the_rows_back(
    pool: Pool, tmp_path: Path
) -> None:
    async with pool.connection() as conn:
        before = await nodes.register(conn, "gw1", 600.0)
    queue = ClusterQueue(pool, FieldCipher({1: bytes(range(32))}, bytes(32)), lambda: before)
    store = Store(tmp_path / "gw1.db", bytes(32))
    await store.open()
    swept: list[list[Recovered]] = []
    done = asyncio.Event()

    def recovered(found: list[Recovered]) -> None:
        swept.append(found)
        done.set()

    membership = Membership(
        pool,
        "gw1",
        SystemClock(),
        lease=2.0,
        margin=0.5,
        interval=0.05,
        on_recovered=recovered,
        before_sweep=queue.replay_journal,
    )
    try:
        queue.journal = OutcomeJournal(store)
        now = SystemClock().time()
        ids = ["rejoin-0", "rejoin-1"]
        await queue.accept(
            [
                NewMessage(i, "tok", Priority.NORMAL, NUMBER, BODY, "gsm7", 1, now, now + 3600)
                for i in ids
            ]
        )
        await queue.claim_group(ids, ROUTE, now)
        await queue.journal_outcomes([(i, ROUTE, [f"c-{i}"], now) for i in ids], [])

        await membership.start()  # a new incarnation: the one that claimed them lapses now
        await asyncio.wait_for(done.wait(), WAIT)
        assert swept[0] == [Recovered(before.incarnation, "gw1", 0)]  # nothing left to take
        assert queue.journal.pending == 0
        assert await rows(
            pool, "SELECT id, state FROM messages WHERE id = ANY(%s) ORDER BY id", (ids,)
        ) == [(i, "sent") for i in ids]
    finally:
        await membership.stop()
        await store.close()
