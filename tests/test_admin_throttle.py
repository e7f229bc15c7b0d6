"""The throttle's decision (pure) and how a success takes its reserved try back."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.admin.throttle import LoginThrottle, Reservation
from gateway.panel_users import FailureState
from gateway.store.panel_sql import AdminRepo
from tests.conftest import GatewayFactory

T = LoginThrottle(throttle_after=3, max_delay=60.0, max_failures=10, lockout_seconds=900.0)
NOW = 1_000_000.0


def test_a_try_is_counted_and_locks_before_it_is_checked() -> None:
    states = {"a": FailureState(9, NOW - 100), "s": FailureState(2, NOW - 1), "t": FailureState()}
    r = T.reserve(states, NOW, counted=["a", "s"], lockable=["a"], guards=["t"])
    assert r.allowed
    assert r.after == {"a": FailureState(10, NOW, NOW + 900), "s": FailureState(3, NOW)}
    assert r.before == {"a": states["a"], "s": states["s"]}
    assert r.locking == ("a",)


def test_a_guard_refuses_only_while_locked() -> None:
    delayed = FailureState(8, NOW)  # would delay its own factor's next try
    r = T.reserve({"a": FailureState(), "t": delayed}, NOW, counted=["a"], guards=["t"])
    assert r.allowed
    locked = FailureState(10, NOW - 10, NOW + 890)
    r = T.reserve({"a": FailureState(), "t": locked}, NOW, counted=["a"], guards=["t"])
    assert not r.allowed and r.wait == 890 and r.after == {}


def test_a_refused_try_counts_nothing() -> None:
    states = {"a": FailureState(4, NOW)}
    r = T.reserve(states, NOW + 0.5, counted=["a"], lockable=["a"])
    assert r.wait == 0.5 and not r.after


async def test_a_success_gives_its_try_back(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    repo = AdminRepo(gw.store)

    async def reserve(now: float) -> Reservation:
        def decide(
            states: dict[str, FailureState],
        ) -> tuple[Reservation, Mapping[str, FailureState]]:
            r = T.reserve(states, now, counted=["account:x", "source:y"], lockable=["account:x"])
            return r, r.after

        return await repo.reserve_attempt(["account:x", "source:y"], decide)

    first = await reserve(NOW)
    second = await reserve(NOW + 1)
    assert await repo.failures(["account:x", "source:y"]) == {
        "account:x": FailureState(2, NOW + 1),
        "source:y": FailureState(2, NOW + 1),
    }
    # The second try succeeds: its account count is cleared, the source's goes back to
    # what it was before it, time of the last failure included.
    undo = {"source:y": (second.before["source:y"], second.after["source:y"])}
    await repo.settle_attempt(["account:x"], undo)
    assert await repo.failures(["account:x", "source:y"]) == {
        "account:x": FailureState(),
        "source:y": FailureState(1, NOW),
    }
    # The first succeeds late, after another failure was counted: the source loses one.
    await reserve(NOW + 2)
    undo = {"source:y": (first.before["source:y"], first.after["source:y"])}
    await repo.settle_attempt([], undo)
    assert (await repo.failures(["source:y"]))["source:y"] == FailureState(1, NOW + 2)
