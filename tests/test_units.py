"""Pure parts: the lifecycle table, token buckets, share guard, router, ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lifecycle import (
    CANCELLABLE,
    FINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    check_transition,
)
from gateway.models import IdGenerator, Priority, State, encode_id
from gateway.ratelimit import TokenBucket
from gateway.router import Router, RouteRule
from gateway.shares import ShareGuard


def test_lifecycle_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    assert {
        State.DELIVERED,
        State.FAILED,
        State.EXPIRED,
        State.CANCELLED,
        State.BLOCKED,
    } == FINAL_STATES
    assert {State.SCHEDULED, State.QUEUED} == CANCELLABLE


@pytest.mark.parametrize(("a", "b"), [(s, t) for s in State for t in State])
def test_transition_is_legal_exactly_when_the_table_says(a: State, b: State) -> None:
    if b in TRANSITIONS[a]:
        check_transition(a, b)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(a, b)


def test_sending_precedes_sent_and_final_states_are_final() -> None:
    assert State.SENT not in TRANSITIONS[State.QUEUED]
    assert TRANSITIONS[State.QUEUED] >= {State.SENDING}
    for final in FINAL_STATES:
        assert not TRANSITIONS[final]


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait_time(0.0) == pytest.approx(0.1)
    assert not b.try_take(0.05)
    assert b.try_take(0.1)


@given(
    st.floats(0.5, 500), st.integers(1, 20), st.lists(st.floats(0, 0.05), min_size=50, max_size=300)
)
def test_token_bucket_never_exceeds_rate_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    b = TokenBucket(rate, burst, now=0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        while b.try_take(now):
            taken += 1
    assert taken <= burst + rate * now + 1e-6


def test_unlimited_bucket() -> None:
    b = TokenBucket(None, 1, 0.0)
    assert all(b.try_take(0.0) for _ in range(1000))
    assert b.wait_time(0.0) == 0.0


def test_share_guard_is_strict_priority_without_shares() -> None:
    g = ShareGuard({})
    waiting = list(Priority)
    for _ in range(100):
        assert g.order(waiting)[0] is Priority.CRITICAL
        g.served(Priority.CRITICAL, waiting)


def test_share_guard_gives_a_starved_class_its_share() -> None:
    g = ShareGuard({Priority.BULK: 0.1})
    waiting = [Priority.CRITICAL, Priority.BULK]
    served = []
    for _ in range(110):
        first = g.order(waiting)[0]
        served.append(first)
        g.served(first, waiting)
    assert served.count(Priority.BULK) == 10


def test_router_orders_and_filters() -> None:
    r = Router(
        [
            RouteRule("uk", frozenset(Priority), ("+44",)),
            RouteRule("any", frozenset({Priority.NORMAL}), ()),
        ]
    )
    assert r.candidates("+447911123456", Priority.NORMAL) == ("uk", "any")
    assert r.candidates("+12025550100", Priority.NORMAL) == ("any",)
    assert r.candidates("+12025550100", Priority.BULK) == ()
    assert r.candidates("+447911123456", Priority.NORMAL, "any") == ("any",)


def test_ids_sort_by_creation() -> None:
    gen = IdGenerator()
    ids = [gen.new() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 2000
    assert all(len(i) == 26 for i in ids)


@given(st.integers(0, 2**128 - 1))
def test_an_id_is_its_value_in_crockford_base32(value: int) -> None:
    """The written-out encoding (issue 16) against the plain definition: 130 bits, the
    value and two zero bits, read five at a time from the top."""
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    wide = value << 2
    expected = "".join(digits[(wide >> shift) & 31] for shift in range(125, -1, -5))
    assert encode_id(value) == expected
