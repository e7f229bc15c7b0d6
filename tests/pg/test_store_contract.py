"""The store contract (issue 18, S1): the same cases on the SQLite store and on the
PostgreSQL queue, through the `QueueStore` interface only.

`Backend` gives two nodes' stores: on SQLite both are the one store (one node); on
PostgreSQL two `ClusterQueue`s with their own incarnations on one database. `lose_claims`
takes node A's claims away as each backend does: SQLite recovers its `sending` rows (a
restart), PostgreSQL registers A again (the old incarnation's lease ends) and a peer
recovers them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import nodes
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.cluster.queue_store import ClusterQueue, LateOutcome
from gateway.cluster.schema import migrate
from gateway.links.placeholders import Minted
from gateway.models import Priority, State
from gateway.store.crypto import FieldCipher
from gateway.store.idempotency import IdempotentAnswer
from gateway.store.queue_store import QueueStore
from gateway.store.store import ClaimedMessage, NewMessage, Store
from gateway.store.transitions import Transition

NOW = 1_800_000_000.0
ROUTE = "smpp-a"


@dataclass
class Backend:
    kind: str
    a: QueueStore
    b: QueueStore
    pool: Pool | None = None
    sqlite: Store | None = None
    _renode: Any = None

    async def lose_claims(self) -> int:
        """Node A's claims are lost (a crash); returns how many rows were taken back."""
        if self.sqlite is not None:
            return await self.sqlite.recover_in_flight(NOW)
        assert self.pool is not None
        await self._renode()  # A starts again: its old incarnation's lease ends now
        return await self.b.recover_in_flight(NOW)

    async def row(self, message_id: str) -> tuple[str, bool]:
        """(state, possible_duplicate) as stored."""
        found: Any
        if self.sqlite is not None:
            found = await self.sqlite.reader.one(
                "SELECT state, possible_duplicate FROM messages WHERE id = ?", (message_id,)
            )
        else:
            assert self.pool is not None
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT state, possible_duplicate FROM messages WHERE id = %s", (message_id,)
                )
                found = await cur.fetchone()
        assert found is not None, message_id
        return str(found[0]), bool(found[1])


def cipher() -> FieldCipher:
    return FieldCipher({1: bytes(range(32))}, bytes(range(32, 64)))


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        store = Store(tmp_path / "gw.db", bytes(32))
        await store.open()
        try:
            yield Backend("sqlite", store, store, sqlite=store)
        finally:
            await store.close()
        return
    dsn: str = request.getfixturevalue("migrated_dsn")
    async with AsyncConnectionPool(dsn, min_size=1, max_size=12, open=False) as pool:
        async with pool.connection() as conn:
            await migrate(conn)
        yield await _cluster(pool)


async def _cluster(pool: Pool) -> Backend:
    selves: dict[str, Incarnation] = {}
    for name in ("node-a", "node-b"):
        async with pool.connection() as conn:
            selves[name] = await nodes.register(conn, name, 60.0)

    async def renode() -> None:
        async with pool.connection() as conn:
            selves["node-a"] = await nodes.register(conn, "node-a", 60.0)

    shared = cipher()
    # A's store keeps the incarnation it claimed under, as a running process would.
    stale = selves["node-a"]
    a = ClusterQueue(pool, shared, lambda: stale)
    b = ClusterQueue(pool, shared, lambda: selves["node-b"])
    return Backend("postgresql", a, b, pool=pool, _renode=renode)


def message(
    n: int, *, priority: Priority = Priority.NORMAL, at: float = NOW - 60, to: str = "+15550001"
) -> NewMessage:
    return NewMessage(
        id=f"msg-{n:04d}-{uuid.uuid4().hex[:6]}",
        token_id="tok",
        priority=priority,
        to=to,
        body=f"body {n}",
        encoding="gsm7",
        segments=1,
        created_at=at,
        expires_at=NOW + 3600,
        purpose="reminder",
    )


async def claim_all(store: QueueStore, want: int = 1000) -> list[ClaimedMessage]:
    return await store.claim_due(ROUTE, want, NOW)


async def test_claims_go_in_class_then_due_time_then_id_order(backend: Backend) -> None:
    ms = [
        message(1, priority=Priority.BULK, at=NOW - 300),
        message(2, priority=Priority.NORMAL, at=NOW - 10),
        message(3, priority=Priority.NORMAL, at=NOW - 200),
        message(4, priority=Priority.CRITICAL, at=NOW - 5),
        message(5, priority=Priority.NORMAL, at=NOW - 200),
        message(6, priority=Priority.NORMAL, at=NOW + 100),  # not due yet
    ]
    await backend.a.accept(ms)
    expected = sorted(ms[:5], key=lambda m: (int(m.priority), m.created_at, m.id))
    claimed = await backend.b.claim_due(ROUTE, 3, NOW)
    assert [c.id for c in claimed] == [m.id for m in expected[:3]]
    rest = await backend.a.claim_due(ROUTE, 10, NOW)
    assert [c.id for c in rest] == [m.id for m in expected[3:]]
    first = claimed[0]
    assert (first.to, first.body, first.attempts) == ("+15550001", "body 4", 1)


async def test_each_message_is_claimed_once_by_eight_concurrent_claimers(
    backend: Backend,
) -> None:
    ms = [message(i, to=f"+1555{i:07d}") for i in range(240)]
    await backend.a.accept(ms)
    stores = [backend.a, backend.b] * 4

    async def claimer(store: QueueStore) -> list[str]:
        got: list[str] = []
        while True:
            claimed = await store.claim_due(ROUTE, 7, NOW)
            if not claimed:
                return got
            got += [c.id for c in claimed]

    taken = await asyncio.gather(*(claimer(s) for s in stores))
    counts = Counter(i for ids in taken for i in ids)
    assert set(counts) == {m.id for m in ms}
    assert max(counts.values()) == 1


async def test_a_finish_after_the_claim_was_lost_changes_nothing(backend: Backend) -> None:
    m = message(1)
    await backend.a.accept([m])
    (claimed,) = await backend.a.claim_due(ROUTE, 1, NOW)
    assert await backend.lose_claims() == 1
    states, _ = await backend.a.record_outcomes([(m.id, ROUTE, ["stale-1"], NOW)], [])
    assert isinstance(states[0], Exception)  # SQLite refuses it; PostgreSQL keeps it late
    assert await backend.row(m.id) == ("queued", True)
    (again,) = await backend.b.claim_due(ROUTE, 1, NOW)  # the peer (or the restart) sends
    assert again.id == claimed.id and again.possible_duplicate
    states, _ = await backend.b.record_outcomes([(m.id, ROUTE, ["fresh-1"], NOW)], [])
    assert states == [State.SENT]
    assert await backend.row(m.id) == ("sent", True)


async def test_recovery_requeues_in_flight_flagged_as_possible_duplicates(
    backend: Backend,
) -> None:
    ms = [message(i) for i in range(3)]
    await backend.a.accept(ms)
    claimed = await backend.a.claim_due(ROUTE, 2, NOW)
    assert not any(c.possible_duplicate for c in claimed)
    assert await backend.lose_claims() == 2
    for c in claimed:
        assert await backend.row(c.id) == ("queued", True)
    assert await backend.row(ms[2].id) == ("queued", False)
    again = await backend.b.claim_due(ROUTE, 10, NOW)
    flagged = {c.id: c.possible_duplicate for c in again}
    assert flagged == {claimed[0].id: True, claimed[1].id: True, ms[2].id: False}
    events = [e.state for e in await backend.b.events(claimed[0].id)]
    assert events == ["queued", "sending", "queued", "sending"]


async def test_a_claim_given_back_is_queued_untried_and_only_by_its_claimer(
    backend: Backend,
) -> None:
    """A claim whose answer was lost (the database went away after its commit) leaves
    rows `sending` with nothing in flight: `give_back` returns them to `queued`, with
    the attempt the claim counted given back and no duplicate flag (no driver saw
    them). Rows never claimed, or claimed by someone else, are left as they are."""
    ms = [message(i) for i in range(3)]
    await backend.a.accept(ms)
    claimed = await backend.a.claim_due(ROUTE, 2, NOW)
    assert [c.attempts for c in claimed] == [1, 1]
    claims = [(c.id, 0) for c in claimed] + [(ms[2].id, 0)]
    if backend.pool is not None:  # another node may not give back A's claims
        assert await backend.b.give_back(claims, ROUTE, NOW) == 0
        assert await backend.row(claimed[0].id) == ("sending", False)
    assert await backend.a.give_back(claims, ROUTE, NOW) == 2
    for m in ms:
        assert await backend.row(m.id) == ("queued", False)
    events = await backend.a.events(claimed[0].id)
    assert [e.state for e in events] == ["queued", "sending", "queued"]
    assert events[-1].error_code == "store:claim_unanswered"
    again = await backend.b.claim_due(ROUTE, 10, NOW)
    assert sorted(c.id for c in again) == sorted(m.id for m in ms)
    assert {c.attempts for c in again} == {1}
    assert not any(c.possible_duplicate for c in again)


async def _token_rows(backend: Backend) -> list[tuple[str, bytes]]:
    sql = "SELECT message_id, token_hash FROM link_tokens ORDER BY message_id"
    if backend.sqlite is not None:
        rows = await backend.sqlite.reader.all(sql)
    else:
        assert backend.pool is not None
        async with backend.pool.connection() as conn:
            rows = await (await conn.execute(sql)).fetchall()
    return [(str(r[0]), bytes(r[1])) for r in rows]


async def test_short_links_commit_with_their_messages_or_not_at_all(backend: Backend) -> None:
    key = IdempotentAnswer("tok", b"l" * 32, b"r" * 32, 202, b"{}", 1000.0)
    first, second = message(1), message(2)
    await backend.a.accept([first], key, [Minted(bytes(32), "lnk_1", first.id, NOW, NOW + 60)])
    assert await _token_rows(backend) == [(first.id, bytes(32))]
    # The same key again (on the other node): the message and its short link are refused.
    with pytest.raises(Exception, match=r"(?i)unique|constraint"):
        await backend.b.accept([second], key, [Minted(b"x" * 32, "lnk_1", second.id, NOW, NOW)])
    assert await _token_rows(backend) == [(first.id, bytes(32))]


async def test_an_idempotency_key_answers_on_every_node_and_commits_once(
    backend: Backend,
) -> None:
    key = IdempotentAnswer("tok", b"k" * 32, b"r" * 32, 202, b'{"id": 1}', 1000.0)
    first = message(1)
    await backend.a.accept([first], key)
    stored = await backend.b.find_idempotent("tok", b"k" * 32)
    assert stored is not None
    assert (stored.request_hash, stored.status, stored.response) == (b"r" * 32, 202, b'{"id": 1}')
    assert await backend.b.find_idempotent("tok", b"x" * 32) is None
    # The same key racing on two nodes: one accept commits, the other keeps nothing.
    other = IdempotentAnswer("tok", b"z" * 32, b"r" * 32, 202, b"{}", 1000.0)
    racers = [message(2), message(3)]
    results = await asyncio.gather(
        backend.a.accept([racers[0]], other),
        backend.b.accept([racers[1]], other),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == 1
    kept = [m for m, r in zip(racers, results, strict=True) if r is None]
    lost = [m for m, r in zip(racers, results, strict=True) if r is not None]
    assert await backend.b.events(kept[0].id) != []
    assert await backend.b.events(lost[0].id) == []
    assert len(await claim_all(backend.a)) == 2  # `first` and the one kept


async def test_an_opt_out_committed_on_one_node_blocks_the_next_claim_on_another(
    backend: Backend,
) -> None:
    if not isinstance(backend.a, ClusterQueue) or not isinstance(backend.b, ClusterQueue):
        pytest.skip("one node: the SQLite claim check is tested in tests/test_consent_*.py")
    ms = [message(1, to="+15550001"), message(2, to="+15550002")]
    await backend.b.accept(ms)
    await backend.a.opt_out(backend.a.blind_index("+15550001"), "all", NOW, "sms_stop")
    claimed = await backend.b.claim_group([m.id for m in ms], ROUTE, NOW)
    assert claimed[0] is None and isinstance(claimed[1], ClaimedMessage)
    assert await backend.row(ms[0].id) == ("blocked", False)
    assert (await backend.a.events(ms[0].id))[-1].error_code == "consent:opted_out"
    # Another purpose's opt-out does not block a reminder.
    third = message(3, to="+15550003")
    await backend.b.accept([third])
    await backend.a.opt_out(backend.a.blind_index("+15550003"), "marketing", NOW, "api")
    assert [c.id for c in await backend.b.claim_due(ROUTE, 5, NOW)] == [third.id]


async def test_outcomes_write_their_events(backend: Backend) -> None:
    ms = [message(i) for i in range(3)]
    await backend.a.accept(ms)
    claimed = await backend.a.claim_due(ROUTE, 3, NOW)
    assert len(claimed) == 3
    retry = Transition(ms[1].id, State.QUEUED, route=ROUTE, error_code="smpp:0x58", due_at=NOW)
    fail = Transition(ms[2].id, State.FAILED, route=ROUTE, error_code="smpp:0x0b")
    states, done = await backend.a.record_outcomes(
        [(ms[0].id, ROUTE, ["c-1", "c-2"], NOW)], [(retry, NOW), (fail, NOW)]
    )
    assert states == [State.SENT] and done == [True, True]
    sent = await backend.b.events(ms[0].id)
    assert [(e.state, e.carrier_id) for e in sent] == [
        ("queued", None),
        ("sending", None),
        ("sent", "c-1,c-2"),
    ]
    assert [(e.state, e.error_code) for e in await backend.b.events(ms[1].id)][-1] == (
        "queued",
        "smpp:0x58",
    )
    assert await backend.row(ms[2].id) == ("failed", False)
    (again,) = await backend.b.claim_due(ROUTE, 5, NOW)
    assert again.id == ms[1].id and again.attempts == 2


async def test_receipts_match_carrier_ids_even_before_the_submit_answer(
    backend: Backend,
) -> None:
    ms = [message(i) for i in range(2)]
    await backend.a.accept(ms)
    await backend.a.claim_due(ROUTE, 2, NOW)
    await backend.a.record_outcomes([(ms[0].id, ROUTE, ["c-1"], NOW)], [])
    assert await backend.b.apply_receipt(ROUTE, "c-1", "delivered", None, NOW) == (
        ms[0].id,
        State.DELIVERED,
    )
    assert await backend.b.apply_receipt(ROUTE, "c-1", "delivered", None, NOW) is None
    # A receipt that overtakes its submit_sm_resp is kept, then applied with it.
    assert await backend.b.apply_receipt(ROUTE, "c-2", "failed", "err:1", NOW) is None
    states, _ = await backend.a.record_outcomes([(ms[1].id, ROUTE, ["c-2"], NOW)], [])
    assert states == [State.FAILED]
    assert await backend.row(ms[1].id) == ("failed", False)
    got = await backend.b.apply_receipts(ROUTE, [("nobody", "delivered", None, ())], NOW)
    assert got == [None]


async def test_a_receipt_and_its_submit_answer_recorded_at_once_on_two_nodes_meet(
    backend: Backend,
) -> None:
    """The receipt's transaction (node B) found no carrier id and was about to keep the
    receipt early while node A recorded the submit's answer and looked for early
    receipts: without the carrier ids' locks both committed, the early receipt
    stranded and the message stayed `sent`. A held row of `early_receipts` (a third
    session) parks B right there, deterministically."""
    if backend.pool is None:
        pytest.skip("one node: SQLite's single writer orders the two")
    pool = backend.pool
    (m,) = [message(0)]
    await backend.a.accept([m])
    await backend.a.claim_due(ROUTE, 1, NOW)

    async def waiting() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type IN"
                " ('Lock', 'Advisory') AND datname = current_database()"
            )
            found = await cur.fetchone()
        assert found is not None
        return int(found[0])

    async def until(done: Any) -> None:  # what PostgreSQL's sessions wait on: polled
        for _ in range(1000):
            if await done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("not reached in 10 s")

    async with pool.connection() as blocker:
        await blocker.execute(
            "INSERT INTO early_receipts VALUES (%s, 'c-race', 'failed', NULL, %s)", (ROUTE, NOW)
        )  # uncommitted: B's insert of the same key waits on it
        receipt = asyncio.create_task(
            backend.b.apply_receipt(ROUTE, "c-race", "delivered", None, NOW)
        )
        await until(lambda: _at_least(waiting, 1))
        answer = asyncio.create_task(
            backend.a.record_outcomes([(m.id, ROUTE, ["c-race"], NOW)], [])
        )

        async def answered_or_waiting() -> bool:
            return answer.done() or await waiting() >= 2

        await until(answered_or_waiting)
        await blocker.rollback()
    await asyncio.wait_for(asyncio.gather(receipt, answer), 10)
    assert await backend.row(m.id) == ("delivered", False)


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def test_withdraw_cancels_a_waiting_message_but_not_one_sending(
    backend: Backend,
) -> None:
    ms = [message(1), message(2)]
    await backend.a.accept(ms)
    await backend.a.claim_group([ms[1].id], ROUTE, NOW)
    assert await backend.b.withdraw(ms[0].id, NOW, owner="someone-else") is None
    assert await backend.b.withdraw(ms[0].id, NOW, owner="tok") == (State.CANCELLED, True)
    assert await backend.b.withdraw(ms[0].id, NOW) == (State.CANCELLED, False)
    assert await backend.b.withdraw(ms[1].id, NOW) == (State.SENDING, False)
    assert await backend.b.withdraw("no-such-id", NOW) is None


async def test_live_messages_and_expiry(backend: Backend) -> None:
    ms = [message(1), message(2)]
    scheduled = msgspec.structs.replace(message(3), send_at=NOW + 600, created_at=NOW)
    await backend.a.accept([*ms, scheduled])
    live = {m.id: (m.state, m.to) async for m in backend.b.live_messages()}
    assert live == {
        ms[0].id: (State.QUEUED, "+15550001"),
        ms[1].id: (State.QUEUED, "+15550001"),
        scheduled.id: (State.SCHEDULED, "+15550001"),
    }
    gone = Transition(ms[0].id, State.EXPIRED, error_code="gateway:expired")
    bad = Transition(scheduled.id, State.SENT)
    assert await backend.b.transition_many([gone, bad], NOW) == [True, False]
    # A message past its expiry is never claimed.
    late = NOW + 7200
    assert await backend.a.claim_due(ROUTE, 5, late) == []


async def test_postgresql_ciphertexts_are_bound_to_id_and_column(backend: Backend) -> None:
    if backend.pool is None:
        pytest.skip("the SQLite store's binding is tested in tests/test_crypto*.py")
    m = message(1)
    await backend.a.accept([m])
    async with backend.pool.connection() as conn:
        row = await (
            await conn.execute("SELECT to_ct, body_ct FROM messages WHERE id = %s", (m.id,))
        ).fetchone()
    assert row is not None
    shared = cipher()  # the same keys, as a store migrated from SQLite holds
    assert shared.decrypt(bytes(row[0]), m.id, "to") == "+15550001"
    assert shared.decrypt(bytes(row[1]), m.id, "body") == "body 1"
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal: the AAD differs
        shared.decrypt(bytes(row[0]), m.id, "body")


async def test_the_expiry_sweep_finishes_expired_waiting_messages(backend: Backend) -> None:
    if not isinstance(backend.a, ClusterQueue):
        pytest.skip("SQLite: the scheduler expires from its heaps (tests/test_scheduler*.py)")
    ms = [message(1), message(2)]
    await backend.a.accept(ms)
    assert sorted(await backend.a.expire_due(NOW + 7200)) == sorted(m.id for m in ms)
    assert await backend.row(ms[0].id) == ("expired", False)
    assert await backend.a.expire_due(NOW + 7200) == []


async def test_a_finish_arriving_after_a_peer_claimed_again_is_kept_late(
    backend: Backend,
) -> None:
    if backend.pool is None:
        pytest.skip("one node: no finish of a dead process can arrive after its restart")
    ms = [message(1), message(2)]
    await backend.a.accept(ms)
    await backend.a.claim_due(ROUTE, 2, NOW)
    await backend.lose_claims()
    assert len(await backend.b.claim_due(ROUTE, 2, NOW)) == 2  # sending again, for B
    fail = Transition(ms[1].id, State.FAILED, route=ROUTE, error_code="smpp:0x0b")
    states, done = await backend.a.record_outcomes(
        [(ms[0].id, ROUTE, ["stale-1"], NOW)], [(fail, NOW)]
    )
    assert isinstance(states[0], LateOutcome) and done == [False]
    assert await backend.row(ms[0].id) == ("sending", True)
    assert await backend.row(ms[1].id) == ("sending", True)
    async with backend.pool.connection() as conn:
        late = await (
            await conn.execute(
                "SELECT message_id, state, carrier_ids FROM late_outcomes ORDER BY seq"
            )
        ).fetchall()
    assert late == [(ms[0].id, "sent", ["stale-1"]), (ms[1].id, "failed", [])]
    states, _ = await backend.b.record_outcomes([(ms[0].id, ROUTE, ["fresh-1"], NOW)], [])
    assert states == [State.SENT]
    assert await backend.b.apply_receipt(ROUTE, "fresh-1", "delivered", None, NOW) == (
        ms[0].id,
        State.DELIVERED,
    )


async def test_parked_routes_are_remembered_and_forgotten(backend: Backend) -> None:
    parks = backend.a.parks()
    await parks.remember(ROUTE, "smpp:0x0e", b"m" * 32, NOW)
    assert {r: (p.code, p.credentials_mac) for r, p in (await backend.b.parks().all()).items()} == {
        ROUTE: ("smpp:0x0e", b"m" * 32)
    }
    await parks.remember(ROUTE, "smpp:0x0f", b"n" * 32, NOW)
    assert (await backend.b.parks().all())[ROUTE].code == "smpp:0x0f"
    await backend.b.parks().forget(ROUTE)
    assert await parks.all() == {}
    assert len(parks.key) == 32


async def test_a_kept_answer_is_dated_by_the_gateways_clock_even_without_messages(
    backend: Backend,
) -> None:
    """An answer that created no message (every item refused) is still kept from when
    it was given, and pruned by the same clock: a retry within the window replays it."""
    refused = IdempotentAnswer("tok", b"n" * 32, b"r" * 32, 422, b"{}", 5000.0)
    await backend.a.accept([], refused)
    assert await backend.a.prune_idempotency(4999.0) == 0
    assert await backend.b.find_idempotent("tok", b"n" * 32) is not None
    assert await backend.a.prune_idempotency(5001.0) == 1
    assert await backend.b.find_idempotent("tok", b"n" * 32) is None
