"""SMSC faults through the real gateway: store + scheduler + SMPP driver over TCP.

Every test runs the whole gateway (dispatch loop included) against the in-process
`SmscSimulator` on 127.0.0.1, on the system clock with timers shortened to fractions of
a second, or (the two-hour outage) on a `FakeClock` moved by the test. Nothing sleeps:
a test waits on `Rig.until`, which re-checks its condition after every store commit,
every route health change and every simulator event.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.base import RouteHealth, RouteState
from drivers.clock import Clock, FakeClock, SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from drivers.smpp.status import Status
from gateway.app import Gateway
from gateway.store.inbound_parts import Filed, FiledPart
from tests.conftest import accept, make_config, poke_on_commit
from tests.store_rows import inbound_rows, message_row

PASSWORD = "pw"
WITHIN = 8.0  # every wait is bounded well under the 10 s a test may take
FINAL_OK = ("sent", "delivered")

Predicate = Callable[[], bool | Awaitable[bool]]


def smpp_route(sim: SmscSimulator, **extra: Any) -> dict[str, Any]:
    """An SMPP route to the simulator with every timer in fractions of a second."""
    return {
        "name": "carrier",
        "type": "smpp",
        "host": "127.0.0.1",
        "port": sim.port,
        "system_id": "smsgw",
        "password": PASSWORD,
        "window": 10,
        "enquire_link_interval": 0.3,
        "response_timeout": 0.5,
        "bind_timeout": 0.5,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "throttle_min": 0.2,
        "throttle_max": 0.4,
        **extra,
    }


@dataclass
class Rig:
    """A running gateway and its simulator; `poke()` wakes every `until`."""

    gw: Gateway
    sim: SmscSimulator
    waiters: set[asyncio.Event] = field(default_factory=set)

    def poke(self) -> None:
        for changed in self.waiters:
            changed.set()

    @property
    def driver(self) -> SmppDriver:
        driver = self.gw.routes["carrier"].driver
        assert isinstance(driver, SmppDriver)
        return driver

    async def until(self, predicate: Predicate, within: float = WITHIN) -> None:
        """Return once `predicate()` holds; re-checked after every change."""
        changed = (
            asyncio.Event()
        )  # one per waiter: waits may nest (test_link_lost_between_parts...)
        self.waiters.add(changed)
        try:
            async with asyncio.timeout(within):
                while True:
                    changed.clear()  # before checking: a change during the check counts
                    result = predicate()
                    if inspect.isawaitable(result):
                        result = await result
                    if result:
                        return
                    await changed.wait()
        finally:
            self.waiters.discard(changed)

    async def until_up(self) -> None:
        await self.until(lambda: self.driver.health().state is RouteState.UP)

    async def rows(self, ids: list[str]) -> list[Any]:
        rows = [await message_row(self.gw.store, i) for i in ids]
        assert all(r is not None for r in rows)
        return rows

    async def states(self, ids: list[str]) -> list[str]:
        return [str(r["state"]) for r in await self.rows(ids)]

    def all_in(self, ids: list[str], states: tuple[str, ...]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return all(s in states for s in await self.states(ids))

        return check


async def _relay(sim: SmscSimulator, poke: Callable[[], None]) -> None:
    """Poke after every simulator event (`wait_until` wakes on each one)."""
    while True:
        calls = 0

        def second_call() -> bool:
            nonlocal calls
            calls += 1
            return calls > 1

        await sim.wait_until(second_call)
        poke()


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    config = SimulatorConfig(password=PASSWORD, receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(config) as s:
        yield s


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def open_rig(tmp_path: Path, sim: SmscSimulator) -> AsyncIterator[RigFactory]:
    opened: list[tuple[Rig, asyncio.Task[None]]] = []

    async def factory(
        routes: list[dict[str, Any]] | None = None, clock: Clock | None = None, **route_extra: Any
    ) -> Rig:
        config = make_config(
            tmp_path,
            routes if routes is not None else [smpp_route(sim, **route_extra)],
            queue={"retry_base": 0.05, "retry_cap": 0.2},
            http={"shutdown_grace": 0.5},
        )
        gw = await Gateway.open(config, clock or SystemClock())
        rig = Rig(gw, sim)
        poke_on_commit(gw.store.writer, rig.poke)
        reported = gw.sink.health_changed

        def health_changed(route: str, health: RouteHealth) -> None:
            reported(route, health)
            rig.poke()

        gw.sink.health_changed = health_changed  # type: ignore[method-assign]
        relay = asyncio.create_task(_relay(sim, rig.poke))
        opened.append((rig, relay))
        await gw.start(dispatch=True)
        await rig.until_up()
        return rig

    yield factory
    for rig, relay in opened:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        if not rig.gw.stopped:
            await rig.gw.stop()


def _texts(sim: SmscSimulator) -> list[str]:
    return [m.text for m in sim.submitted]


# -- 1. the happy path --------------------------------------------------------------------


async def test_happy_path_every_message_delivered_once(open_rig: RigFactory) -> None:
    rig = await open_rig()
    classes = ("critical", "high", "normal", "bulk")
    bodies = [f"happy {i:02d}" for i in range(20)]
    ids = [await accept(rig.gw, body=b, priority=classes[i % 4]) for i, b in enumerate(bodies)]

    await rig.until(rig.all_in(ids, ("delivered",)))

    assert Counter(_texts(rig.sim)) == Counter(bodies)  # each exactly once
    assert rig.sim.receipts_sent == 20
    by_id = {m.message_id for m in rig.sim.submitted}
    for mid in ids:
        events = await rig.gw.store.events(mid)
        sent = [e for e in events if e.state == "sent"]
        assert len(sent) == 1 and sent[0].carrier_id in by_id
        row = await message_row(rig.gw.store, mid)
        assert row is not None
        assert (row["route"], row["attempts"], row["possible_duplicate"]) == ("carrier", 1, 0)


async def test_a_route_window_wider_than_the_bind_waits_for_room(open_rig: RigFactory) -> None:
    """Route window 12 over one bind of 3: submits beyond the bind's window wait in the
    driver for a free slot; none is re-queued as `not ready` or flagged."""
    rig = await open_rig(window=12, session_window=3)
    bodies = [f"wide {i:02d}" for i in range(24)]
    ids = [await accept(rig.gw, body=b) for b in bodies]

    await rig.until(rig.all_in(ids, ("delivered",)))

    assert Counter(_texts(rig.sim)) == Counter(bodies)
    for mid in ids:
        assert [e.state for e in await rig.gw.store.events(mid)] == [
            "queued",
            "sending",
            "sent",
            "delivered",
        ]


# -- 2. throttling ------------------------------------------------------------------------


async def test_throttling_costs_no_attempt_and_keeps_priority(open_rig: RigFactory) -> None:
    # One submit at a time, so the order the SMSC accepts them in is the dispatch order.
    rig = await open_rig(window=1)
    rig.sim.throttle(3)
    bulk = [await accept(rig.gw, body=f"bulk {i}", priority="bulk") for i in range(3)]
    await rig.until(lambda: rig.sim.throttled >= 1)
    critical = await accept(rig.gw, body="critical", priority="critical")
    ids = [*bulk, critical]

    await rig.until(rig.all_in(ids, FINAL_OK))

    assert rig.sim.throttled == 3
    texts = _texts(rig.sim)
    assert sorted(texts) == sorted(["bulk 0", "bulk 1", "bulk 2", "critical"])
    assert texts[0] == "critical"  # queued during the throttle, yet first out
    for row in await rig.rows(ids):
        assert row["attempts"] == 1  # the submit that went through; throttled ones cost none
        assert row["possible_duplicate"] == 0
    assert rig.driver.health().counters["throttled"] == 3


async def test_throttling_a_full_window_loses_nothing(open_rig: RigFactory) -> None:
    rig = await open_rig()  # window 10: every submit is in flight when throttled
    rig.sim.throttle(6)
    ids = [await accept(rig.gw, body=f"burst {i}") for i in range(10)]

    await rig.until(rig.all_in(ids, FINAL_OK))

    assert Counter(_texts(rig.sim)) == Counter(f"burst {i}" for i in range(10))
    for row in await rig.rows(ids):
        assert (row["attempts"], row["possible_duplicate"]) == (1, 0)


async def test_throttled_message_keeps_its_place_in_its_class(open_rig: RigFactory) -> None:
    rig = await open_rig(window=1)
    rig.sim.throttle(1)
    rig.sim.stop_answering()  # all three are queued before the throttle comes back
    ids = [await accept(rig.gw, body=f"bulk {i}", priority="bulk") for i in range(3)]
    rig.sim.resume_answering()

    await rig.until(rig.all_in(ids, FINAL_OK))

    assert _texts(rig.sim) == ["bulk 0", "bulk 1", "bulk 2"]


def _busiest(times: list[float], width: float) -> int:
    """The most arrivals in any `width`-second window."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + width) - i for i, t in enumerate(ordered)), default=0
    )


async def test_throttling_storm_keeps_to_the_rate_costs_nothing_and_keeps_priority(
    open_rig: RigFactory, sim: SmscSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half the submits are throttled for a while: the retries go through the route's
    token bucket like any submit, no message loses an attempt or fails, and critical
    messages queued during the storm overtake the bulk ones still waiting."""
    rate, burst = 100.0, 2
    rig = await open_rig(
        [
            smpp_route(
                sim,
                rate=rate,
                burst=burst,
                window=2,
                # Link pauses too short to hold anything back: only the token bucket
                # stands between the retries and the SMSC.
                throttle_min=0.001,
                throttle_max=0.002,
            )
        ]
    )
    # The order the scheduler takes messages in (a group's claim commits later).
    taken: list[str] = []
    start = rig.gw.scheduler._start

    def taking(group: list[Any], *args: Any, **kwargs: Any) -> None:
        taken.extend(entry.id for entry in group)
        start(group, *args, **kwargs)

    monkeypatch.setattr(rig.gw.scheduler, "_start", taking)
    rig.sim.throttle_storm(20)  # 10 throttled, alternating with 10 accepted
    bulk = [await accept(rig.gw, body=f"storm bulk {i}", priority="bulk") for i in range(12)]
    await rig.until(lambda: rig.sim.throttled >= 2)
    critical = [
        await accept(rig.gw, body=f"storm critical {i}", priority="critical") for i in range(3)
    ]
    # Read from the scheduler once the critical ones are in its queue, with no await in
    # between: a bulk message it still holds has not been taken, so it must leave after
    # them. The store's state is not that test: a group the scheduler took before the
    # critical ones came stays `queued` there until its claim commits, which a busy
    # writer may do after the critical accepts.
    held, mark = set(rig.gw.scheduler.held()), len(taken)
    waiting = {mid for mid in bulk if mid in held}
    ids = [*bulk, *critical]

    await rig.until(rig.all_in(ids, FINAL_OK))

    assert rig.sim.throttled == 10
    arrivals = [t for t, _ in rig.sim.arrivals]
    assert len(arrivals) == len(ids) + 10  # each throttled submit came once more
    for width in (0.1, 0.25, 0.5, 1.0):
        # A token bucket lets `burst` + `rate` * width through in a window; one more
        # for the window's edges and the loopback's jitter.
        assert _busiest(arrivals, width) <= burst + rate * width + 1, width
    for row in await rig.rows(ids):
        assert (row["attempts"], row["possible_duplicate"]) == (1, 0)
    texts = _texts(rig.sim)
    assert Counter(texts) == Counter(
        [f"storm bulk {i}" for i in range(12)] + [f"storm critical {i}" for i in range(3)]
    )
    assert len(waiting) >= 3  # a real queue was waiting behind the storm
    # The scheduler took every critical message before any bulk one it still held.
    last_critical = max(taken.index(mid) for mid in critical)
    assert all(taken.index(mid, mark) > last_critical for mid in waiting), (mark, taken)
    # At the carrier, the same order, except where the storm throttled a critical
    # submit while a bulk one beside it in the window went through: that critical
    # message comes back at its turn, after it.
    throttled = await _throttled(rig, critical)
    first_bulk = min(texts.index(f"storm bulk {bulk.index(mid)}") for mid in waiting)
    early = [
        i
        for i, mid in enumerate(critical)
        if mid not in throttled and texts.index(f"storm critical {i}") > first_bulk
    ]
    assert not early, (early, texts)


async def _throttled(rig: Rig, ids: list[str]) -> set[str]:
    """The messages the carrier pushed back at least once (queued again with a code)."""
    rows = await rig.gw.store.reader.all(
        "SELECT DISTINCT message_id FROM message_events WHERE state = 'queued'"
        " AND error_code IS NOT NULL AND message_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    )
    return {str(r[0]) for r in rows}


# -- 3. the link drops with a window in flight --------------------------------------------


async def test_link_dropped_mid_window_flags_in_flight_and_loses_nothing(
    open_rig: RigFactory,
) -> None:
    # A long response timeout: the submits stay in flight until the drop, however slow.
    rig = await open_rig(window=4, response_timeout=6.0)
    rig.sim.stop_answering()
    bodies = [f"drop {i}" for i in range(6)]
    ids = [await accept(rig.gw, body=b) for b in bodies]

    async def window_in_flight() -> bool:
        states = await rig.states(ids)
        # Four at the carrier; the other two are claimed (`sending`) behind them.
        return states.count("sending") == 6 and rig.driver.health().in_flight == 4

    await rig.until(window_in_flight)
    in_flight = [i for i, s in zip(ids, await rig.states(ids), strict=True) if s == "sending"]
    before = rig.sim.connections
    rig.sim.drop_connections()
    rig.sim.resume_answering()

    await rig.until(rig.all_in(ids, FINAL_OK))

    assert rig.sim.connections > before  # the driver reconnected
    rows = {r["id"]: r for r in await rig.rows(ids)}
    flagged = {i for i, r in rows.items() if r["possible_duplicate"]}
    # Exactly the window that was at the carrier; messages claimed behind it (also
    # `sending`) never left and are not flagged.
    assert len(flagged) == 4
    assert flagged <= set(in_flight)
    texts = Counter(_texts(rig.sim))
    assert set(texts) == set(bodies)  # none lost
    duplicated = {t for t, n in texts.items() if n > 1}
    assert duplicated <= {bodies[ids.index(i)] for i in flagged}


async def test_link_lost_between_parts_flags_the_resend(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SMSC accepted part 1 of 2, then the link went before part 2 was sent: the
    resend repeats part 1, so the message must be flagged a possible duplicate."""
    rig = await open_rig()
    driver = rig.driver
    submit_part = driver._request
    dropped = False

    async def request(*args: Any) -> Any:
        nonlocal dropped
        response = await submit_part(*args)
        if not dropped:  # after the first part's answer, before the next part goes
            dropped = True
            rig.sim.drop_connections()
            await rig.until(lambda: driver.health().state is RouteState.DOWN)
        return response

    monkeypatch.setattr(driver, "_request", request)
    mid = await accept(rig.gw, body="two parts " + "x" * 200)

    await rig.until(rig.all_in([mid], FINAL_OK))

    row = await message_row(rig.gw.store, mid)
    assert row is not None
    assert row["possible_duplicate"] == 1
    parts = Counter((m.concat.seq if m.concat else 0) for m in rig.sim.submitted)
    assert parts == {1: 2, 2: 1}  # part 1 twice: a real duplicate, and flagged


async def test_a_claim_whose_answer_was_lost_is_given_back_and_sent_once(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim committed but its caller saw an error (on a cluster: the database went
    away before the commit's answer). The rows are `sending` with nothing in flight;
    they are given back to `queued` untried, sent once, and not flagged."""
    rig = await open_rig()
    store = rig.gw.store
    claim_group = store.claim_group
    lost = 0

    async def committed_then_lost(*args: Any) -> Any:
        nonlocal lost
        claimed = await claim_group(*args)
        if not lost:
            lost += 1
            raise ConnectionError("the claim's answer was lost")
        return claimed

    monkeypatch.setattr(store, "claim_group", committed_then_lost)
    monkeypatch.setattr(rig.gw.scheduler, "claim_with_accept", lambda *_: False)
    mid = await accept(rig.gw, body="given back")
    await rig.until(rig.all_in([mid], FINAL_OK))
    assert lost == 1
    row = await message_row(store, mid)
    assert row is not None and row["possible_duplicate"] == 0
    assert _texts(rig.sim) == ["given back"]
    states = [e.state for e in await store.events(mid)]
    assert states[:4] == ["queued", "sending", "queued", "sending"]


# -- 4. a half-open link ------------------------------------------------------------------


async def test_half_open_link_goes_down_and_recovers(open_rig: RigFactory) -> None:
    rig = await open_rig()
    before = rig.sim.connections
    rig.sim.stop_answering()

    await rig.until(lambda: rig.driver.health().state is RouteState.DOWN)
    await rig.until(lambda: rig.sim.connections > before)  # it is trying again
    assert not rig.driver.health().can_send
    rig.sim.resume_answering()
    await rig.until_up()

    mid = await accept(rig.gw, body="after recovery")
    await rig.until(rig.all_in([mid], ("delivered",)))
    assert _texts(rig.sim) == ["after recovery"]


async def test_half_open_with_a_submit_in_flight_flags_it(open_rig: RigFactory) -> None:
    rig = await open_rig()
    rig.sim.stop_answering()
    mid = await accept(rig.gw, body="in doubt")
    await rig.until(lambda: rig.driver.health().in_flight == 1)

    # Unanswered: the submit times out, then the enquire_link; the link goes down.
    await rig.until(lambda: rig.driver.health().state is RouteState.DOWN)
    rig.sim.resume_answering()  # the SMSC now reads the old submit from the dead link
    await rig.until(rig.all_in([mid], FINAL_OK))

    row = await message_row(rig.gw.store, mid)
    assert row is not None
    # Each unanswered try (a response timeout, the link's end) costs an attempt.
    assert row["possible_duplicate"] == 1 and row["attempts"] >= 1
    assert set(_texts(rig.sim)) == {"in doubt"}  # at least once; any copies are flagged


class PokingClock(FakeClock):
    """A fake clock that pokes the rig whenever a task goes to sleep on it, so a test can
    wait for the driver to be back asleep between two reconnect attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.on_sleep: list[Callable[[], None]] = []

    async def sleep(self, seconds: float) -> None:
        for poke in self.on_sleep:
            poke()
        await super().sleep(seconds)


async def test_two_hour_outage_expires_what_is_due_and_never_sends_it_late(
    open_rig: RigFactory, sim: SmscSimulator
) -> None:
    """The SMSC is unreachable for two hours of fake time. Messages whose expiry falls
    inside the outage are `expired` as it passes and never reach the SMSC when it comes
    back; the others are sent then."""
    clock = PokingClock()
    rig = await open_rig(clock=clock)
    clock.on_sleep.append(rig.poke)
    port = sim.port
    await sim.aclose()  # not listening any more: every reconnect is refused
    await rig.until(lambda: rig.driver.health().state is RouteState.DOWN)

    hour = 3600.0
    start = clock.time()

    def within(seconds: float) -> datetime:
        return datetime.fromtimestamp(start + seconds, UTC)

    short = [
        await accept(rig.gw, body="short 1h", priority="critical", expires_at=within(hour)),
        await accept(rig.gw, body="short 1h59", priority="bulk", expires_at=within(2 * hour - 60)),
    ]
    long = [
        await accept(rig.gw, body="long 4h", priority="critical"),  # the class default
        await accept(rig.gw, body="long 2h30", priority="bulk", expires_at=within(2.5 * hour)),
    ]

    clock.advance(hour)
    await rig.until(rig.all_in(short[:1], ("expired",)))
    assert await rig.states([*short[1:], *long]) == ["queued"] * 3
    clock.advance(hour)  # two hours down
    await rig.until(rig.all_in(short, ("expired",)))
    assert await rig.states(long) == ["queued"] * 2

    back = SimulatorConfig(port=port, password=PASSWORD, receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(back) as smsc:
        driver = rig.driver
        while driver.health().state is not RouteState.UP:
            tries = driver.health().counters["reconnects"]
            clock.advance(1.0)  # past any reconnect back-off (at most reconnect_max)
            await rig.until(
                lambda tries=tries: (
                    driver.health().state is RouteState.UP
                    or driver.health().counters["reconnects"] > tries
                )
            )
        await rig.until(rig.all_in(long, ("delivered",)))
        assert sorted(m.text for m in smsc.submitted) == ["long 2h30", "long 4h"]

        for row in await rig.rows(short):
            assert (row["error_code"], row["attempts"], row["route"]) == (
                "gateway:expired",
                0,
                None,
            )
            events = [e.state for e in await rig.gw.store.events(row["id"])]
            assert events == ["queued", "expired"]  # never claimed, never sent
        await rig.gw.stop()  # while the SMSC is there to answer the unbind


# -- 5. garbage from the SMSC -------------------------------------------------------------


async def test_unknown_command_is_nacked_and_the_session_keeps_working(
    open_rig: RigFactory,
) -> None:
    rig = await open_rig()
    connections, binds = rig.sim.connections, rig.sim.binds
    rig.sim.send_garbage(fatal=False)

    mid = await accept(rig.gw, body="after garbage")
    await rig.until(rig.all_in([mid], ("delivered",)))

    assert (rig.sim.connections, rig.sim.binds) == (connections, binds)
    assert rig.driver.health().counters["reconnects"] == 0
    row = await message_row(rig.gw.store, mid)
    assert row is not None and row["possible_duplicate"] == 0


async def test_unframeable_garbage_resets_the_link_and_it_recovers(open_rig: RigFactory) -> None:
    rig = await open_rig()
    binds = rig.sim.binds
    rig.sim.send_garbage(fatal=True)

    await rig.until(lambda: rig.sim.binds > binds)
    await rig.until_up()
    assert rig.driver.health().counters["reconnects"] >= 1
    mid = await accept(rig.gw, body="after reset")
    await rig.until(rig.all_in([mid], ("delivered",)))


# -- 6. permanent rejection ---------------------------------------------------------------


async def test_permanent_rejection_fails_without_a_retry(open_rig: RigFactory) -> None:
    rig = await open_rig()
    rig.sim.reject_next(Status.ESME_RINVDSTADR)  # 0x0B
    mid = await accept(rig.gw, body="bad number")

    await rig.until(rig.all_in([mid], ("failed",)))

    row = await message_row(rig.gw.store, mid)
    assert row is not None
    assert (row["error_code"], row["attempts"]) == ("smpp:0x0000000b", 1)
    assert rig.sim.submitted == []


# -- 7. inbound ---------------------------------------------------------------------------


async def test_inbound_is_committed_before_it_is_acknowledged(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await open_rig()
    store = rig.gw.store
    acked_at_commit: list[int] = []  # deliver_sm_resp the SMSC had when each commit ended
    failures = [RuntimeError("disk full")]  # the first store attempt fails

    def committing(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            result = await original(*args, **kwargs)
            acked_at_commit.append(rig.sim.mo_sent)
            return result

        return wrapped

    monkeypatch.setattr(store, "insert_inbound_once", committing(store.insert_inbound_once))
    monkeypatch.setattr(store, "file_inbound_part", committing(store.file_inbound_part))
    rig.sim.inject_mo("+12025550147", "4000", "STOP")

    async def stored(n: int) -> bool:
        return len(await inbound_rows(store, 10)) == n

    await rig.until(lambda: rig.sim.mo_sent == 1)
    assert await stored(1)
    assert rig.sim.redelivered == 1  # refused once (ESME_RX_T_APPN), then redelivered

    long_text = "Yes I will come to the appointment on Tuesday at nine. " * 3
    rig.sim.inject_mo("+12025550148", "4000", long_text, parts=2)
    await rig.until(lambda: rig.sim.mo_sent == 3)
    assert await stored(2)

    # Each deliver_sm, every part of a concatenated message included, was committed
    # before the SMSC had its deliver_sm_resp: at the k-th commit at most k - 1 were.
    assert len(acked_at_commit) == 3
    assert all(acked < k for k, acked in enumerate(acked_at_commit, start=1))
    got = {
        store.decrypt(r["sender_ct"], r["id"], "sender"): store.decrypt(
            r["body_ct"], r["id"], "body"
        )
        for r in await inbound_rows(store, 10)
    }
    assert got == {"+12025550147": "STOP", "+12025550148": long_text}
    assert {r["route"] for r in await inbound_rows(store, 10)} == {"carrier"}
    assert await store.held_inbound_parts() == 0


async def test_inbound_parts_survive_a_gateway_restart(open_rig: RigFactory) -> None:
    """Part 1 of 2 is acknowledged to the SMSC, then the gateway goes away; part 2
    reaches the next gateway on the same store, which stores the whole message."""
    text = "Yes I will come to the appointment on Tuesday at nine. " * 3
    sender = "+12025550148"
    first = await open_rig()
    first.sim.inject_mo(sender, "4000", text, parts=2, reference=42, seqs=[1])
    await first.until(lambda: first.sim.mo_sent == 1)
    assert await inbound_rows(first.gw.store, 10) == []
    await first.gw.stop()  # the SMSC has forgotten part 1: only our disk has it

    second = await open_rig()
    store = second.gw.store
    assert await store.held_inbound_parts() == 1
    second.sim.inject_mo(sender, "4000", text, parts=2, reference=42, seqs=[2])
    await second.until(lambda: second.sim.mo_sent == 2)

    (row,) = await inbound_rows(store, 10)
    assert store.decrypt(row["body_ct"], row["id"], "body") == text
    assert store.decrypt(row["sender_ct"], row["id"], "sender") == sender
    assert (row["route"], row["incomplete"]) == ("carrier", 0)
    assert await store.held_inbound_parts() == 0


async def test_a_part_redelivered_after_its_commit_is_stored_once(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link falls after the last part is committed, before its deliver_sm_resp: the
    SMSC delivers that part again, and the gateway recognises it."""
    rig = await open_rig()
    store = rig.gw.store
    file_part = store.file_inbound_part
    outcomes: list[Filed] = []

    async def file_then_drop(*args: Any, **kwargs: Any) -> FiledPart:
        filed = await file_part(*args, **kwargs)
        outcomes.append(filed.outcome)
        if filed.outcome is Filed.COMPLETED:
            rig.sim.drop_connections()  # the answer to this deliver_sm never arrives
        return filed

    monkeypatch.setattr(store, "file_inbound_part", file_then_drop)
    text = "Please call me back about the results of my blood test. " * 3
    rig.sim.inject_mo("+12025550148", "4000", text, parts=2)

    await rig.until(lambda: rig.sim.mo_sent == 2)

    # The part that completed the set came again (and part 1 too, when its answer was
    # still on the way as the link fell: the driver handles deliver_sm side by side).
    assert 1 <= rig.sim.redelivered <= 2
    assert outcomes[:2] == [Filed.HELD, Filed.COMPLETED]
    assert outcomes[2:] == [Filed.DUPLICATE] * rig.sim.redelivered
    (row,) = await inbound_rows(store, 10)
    assert store.decrypt(row["body_ct"], row["id"], "body") == text
    assert await store.held_inbound_parts() == 0  # nothing left to expire as incomplete


# -- 8. failover --------------------------------------------------------------------------


async def test_failover_to_the_next_route_when_the_smsc_is_gone(
    open_rig: RigFactory, sim: SmscSimulator
) -> None:
    backup = {"name": "backup", "type": "loopback", "latency": 0.0, "receipt_delay": 0.0}
    rig = await open_rig([smpp_route(sim), backup])
    await sim.aclose()
    await rig.until(lambda: rig.driver.health().state is RouteState.DOWN)

    ids = [await accept(rig.gw, body=f"failover {i}") for i in range(3)]
    await rig.until(rig.all_in(ids, FINAL_OK))

    assert {r["route"] for r in await rig.rows(ids)} == {"backup"}
    assert sim.submitted == []


async def test_a_whole_mo_stored_then_refused_is_stored_once_when_redelivered(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store committed the message, then the step after it failed: the SMSC got
    ESME_RX_T_APPN and delivers it again, which is stored under the same id, once (as on
    a cluster, `tests/pg/test_inbound_outage.py`)."""
    rig = await open_rig()
    store = rig.gw.store
    insert_inbound = store.insert_inbound_once
    used: list[tuple[str, bool]] = []
    failures = [RuntimeError("the step after the commit failed")]

    async def stored_then_failed(*args: Any, **kwargs: Any) -> Any:
        once = await insert_inbound(*args, **kwargs)
        used.append((once.inbound_id, once.stored))
        if failures:
            raise failures.pop()
        return once

    monkeypatch.setattr(store, "insert_inbound_once", stored_then_failed)
    rig.sim.inject_mo("+12025550147", "4000", "C")
    await rig.until(lambda: rig.sim.mo_sent == 1)
    assert rig.sim.delivery_error_statuses == {Status.ESME_RX_T_APPN: 1}
    (first, _), (again, _) = used
    assert (first, again, [s for _, s in used]) == (again, first, [True, False])
    assert [r["id"] for r in await inbound_rows(store, 10)] == [first]
