"""The scheduler's depths, counted as entries come and go (`gateway/queue_depths.py`),
equal a recount of the entries it holds after every step of random sequences of its
operations on a real store: accepts (one or a batch; due, scheduled, short-lived),
rounds as time moves (promotion, expiry, dispatch, transient failures retried by back-off
on a rate-limited route), cancels, a route going down and up, messages dropped for
another node, and a restart's load."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.errors import ApiError
from gateway.intake import SendRequest
from gateway.models import Priority
from gateway.scheduler import Scheduler
from gateway.usecases.caller import Caller
from tests.conftest import CANARY_NUMBER, loopback, make_config

T = TypeVar("T")
SENDER = Caller(actor="user:u1", token_id=None, sees_all=True, may_send=True, may_read_phi=False)
ROUTES = [
    # Retries (back-off, requeued) and a rate that leaves messages waiting after a round.
    {"name": "a", "type": "loopback", "latency": 0, "receipt_delay": 5.0, "rate": 4},
    {"name": "b", "type": "loopback", "latency": 0, "receipt_delay": 5.0, "transient_fraction": 0.4}
    | {"seed": 7},
]


def recount(scheduler: Scheduler) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """`depths()` and `depths_by_route()` counted from the entries, one by one."""
    held = {
        "queued": list(scheduler._waiting.values()),
        "scheduled": [entry for _, _, entry in scheduler._scheduled],
    }
    by_class = {
        kind: {p.label: sum(e.priority is p for e in entries) for p in Priority}
        for kind, entries in held.items()
    }
    by_route: dict[str, dict[str, int]] = {}
    for kind, entries in held.items():
        firsts = Counter(e.candidates[0] for e in entries if e.candidates)
        by_route[kind] = {**dict.fromkeys(scheduler._routes, 0), **firsts}
    return by_class, by_route


def assert_counts_exact(scheduler: Scheduler) -> None:
    by_class, by_route = recount(scheduler)
    assert scheduler.depths() == by_class
    assert scheduler.depths_by_route() == by_route


class Harness:
    """One gateway on a fake clock, driven on a loop of its own (hypothesis's rules are
    synchronous), kept across examples: the counts must hold from any state."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.data_dir = data_dir
        self.gw = self.run(self._open())
        self.checks = 0

    async def _open(self) -> Gateway:
        gw = await Gateway.open(make_config(self.data_dir, ROUTES), self.clock)
        await gw.start(dispatch=False)
        store = gw.scheduler._store
        transition_many = store.transition_many

        # A reader may look while a round awaits the store (promotion, expiry).
        async def checked(*args: Any, **kwargs: Any) -> list[bool]:
            assert_counts_exact(gw.scheduler)
            self.checks += 1
            return await transition_many(*args, **kwargs)

        store.transition_many = checked  # type: ignore[method-assign]
        return gw

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def restart(self) -> None:
        self.run(self.gw.stop())
        self.gw = self.run(self._open())

    def close(self) -> None:
        if not self.gw.stopped:
            self.run(self.gw.stop())
        self.loop.close()


HARNESS: list[Harness] = []
classes = st.sampled_from(["critical", "high", "normal", "bulk"])
hints = st.sampled_from([None, "a", "b"])
picks = st.integers(0, 1000)  # an index into what is held then (which differs per run)


class DepthsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = HARNESS[0]
        # Each example starts from an empty queue (the store keeps its rows), so that
        # hypothesis replays a sequence from about the same state.
        self.gw.scheduler.drop(self.gw.scheduler.held())
        for route in ("a", "b"):
            loopback(self.gw, route).set_down(False)

    @property
    def gw(self) -> Gateway:
        return self.h.gw

    def _request(self, priority: str, hint: str | None, later: float, life: float | None) -> Any:
        now = self.h.clock.time()

        def at(offset: float) -> datetime:
            return datetime.fromtimestamp(now + offset, UTC)

        return SendRequest(
            to=CANARY_NUMBER,
            body="depth",
            priority=priority,
            route=hint,
            send_at=at(later) if later else None,
            expires_at=None if life is None else at(later + life),
        )

    @rule(
        items=st.lists(
            st.tuples(
                classes,
                hints,
                st.sampled_from([0, 0, 20, 300]),  # due now, or scheduled
                st.sampled_from([None, None, 15]),  # short-lived: may expire waiting
            ),
            min_size=1,
            max_size=4,
        )
    )
    def accept(self, items: list[tuple[str, str | None, float, float | None]]) -> None:
        """One send (`add`) or a batch (`add_many`), committed first as the API does."""
        gw = self.gw
        prepared = [gw.intake.prepare(self._request(*i), None, gw.clock.time()) for i in items]
        self.h.run(gw.store.insert(gw.intake.statements(prepared)))
        gw.intake.accepted(prepared)

    @rule(seconds=st.sampled_from([0, 0.5, 3, 12, 30, 400]))
    def rounds(self, seconds: float) -> None:
        """Time moves; rounds promote, expire, claim and send, retries come back queued."""
        self.h.clock.advance(seconds)
        self.h.run(self.gw.scheduler.run_until_idle())

    @rule(pick=picks)
    def cancel(self, pick: int) -> None:
        held = sorted(self.gw.scheduler.held())
        if not held:
            return
        message_id = held[pick % len(held)]
        # Refused for one the store has moved past `queued` meanwhile; a scheduled one
        # is cancelled in the store and stays held until its promotion finds it so.
        with contextlib.suppress(ApiError):
            self.h.run(self.gw.usecases.messages.cancel(SENDER, message_id))

    @rule(route=st.sampled_from(["a", "b"]), down=st.booleans())
    def route_health(self, route: str, down: bool) -> None:
        loopback(self.gw, route).set_down(down)
        self.gw.scheduler.wake()

    @rule(chosen=st.lists(picks, max_size=3))
    def drop(self, chosen: list[int]) -> None:
        """Another node holds these now (a cluster's `rehold`)."""
        held = sorted(self.gw.scheduler.held())
        if held:
            self.gw.scheduler.drop([held[i % len(held)] for i in chosen])

    @rule(batch=st.booleans())
    def requeue_twice(self, batch: bool) -> None:
        """A message handed to the queue again while held (one entry per id)."""
        waiting = list(self.gw.scheduler._waiting.values())
        if waiting and batch:
            self.gw.scheduler.add_many([(waiting[0], False)])
        elif waiting:
            self.gw.scheduler.add(waiting[0])

    @invariant()
    def counts_match_a_recount(self) -> None:
        assert_counts_exact(self.gw.scheduler)


def test_depths_counted_as_they_change_equal_a_recount_after_every_step(tmp_path: Path) -> None:
    HARNESS.append(Harness(tmp_path))
    try:
        run_state_machine_as_test(
            DepthsMachine,
            settings=settings(max_examples=25, stateful_step_count=30, deadline=None),
        )
        assert HARNESS[0].checks > 0  # rounds did await the store with entries held
    finally:
        HARNESS.pop().close()


@pytest.mark.parametrize("later", [False, True])
def test_a_restart_loads_the_counts_with_the_entries(tmp_path: Path, later: bool) -> None:
    h = Harness(tmp_path)
    try:
        HARNESS.append(h)
        m = DepthsMachine()
        for priority, hint, at in [
            ("bulk", "a", 0),
            ("high", "b", 0),
            ("normal", None, 30),
            ("critical", "b", 3600),  # past `LOAD_AHEAD`: read by `load_later`
        ]:
            m.accept([(priority, hint, at, None)])
        before = h.gw.scheduler.depths()
        h.run(h.gw.stop())
        h.gw = h.run(Gateway.open(make_config(tmp_path, ROUTES), h.clock))
        h.run(h.gw.scheduler.load(later=later))
        assert_counts_exact(h.gw.scheduler)
        h.run(h.gw.scheduler.load_later())
        assert_counts_exact(h.gw.scheduler)
        assert h.gw.scheduler.depths() == before
        assert before["queued"]["bulk"] == 1 and before["scheduled"]["critical"] == 1
    finally:
        HARNESS.clear()
        h.close()
