from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.smpp.concat import Incomplete, Reassembler, missing_marker
from drivers.smpp.encoding import Concat

NUMBER = "+12025550147"  # a canary: never in a repr
KEY = ("main", NUMBER, "+12025550199")
OTHER_KEY = ("main", "+12025550148", "+12025550199")
BODY = "CANARY potassium 6.9 mmol/L call ward 7B"  # stands in for patient data


def part(seq: int, total: int = 3, reference: int = 7, ref_bits: int = 8) -> Concat:
    return Concat(reference, total, seq, ref_bits)


def test_in_order() -> None:
    r = Reassembler()
    assert r.add(KEY, part(1), "a", now=0.0) is None
    assert r.add(KEY, part(2), "b", now=1.0) is None
    assert len(r) == 1
    assert r.add(KEY, part(3), "c", now=2.0) == "abc"
    assert len(r) == 0
    assert r.next_deadline() is None


def test_any_order_and_duplicates_first_copy_wins() -> None:
    r = Reassembler()
    assert r.add(KEY, part(3), "c", now=0.0) is None
    assert r.add(KEY, part(3), "X", now=0.0) is None
    assert r.add(KEY, part(1), "a", now=0.0) is None
    assert r.add(KEY, part(1), "a", now=0.0) is None
    assert r.add(KEY, part(2), "b", now=0.0) == "abc"


def test_single_part_set_is_returned_at_once() -> None:
    r = Reassembler()
    assert r.add(KEY, part(1, total=1), BODY, now=0.0) == BODY
    assert len(r) == 0 and r.next_deadline() is None


def test_sets_are_kept_apart_by_key_reference_width_and_total() -> None:
    r = Reassembler()
    assert r.add(KEY, part(1, total=2), "a", now=0.0) is None
    assert r.add(OTHER_KEY, part(2, total=2), "X", now=0.0) is None
    assert r.add(KEY, part(2, total=2, reference=8), "X", now=0.0) is None
    assert r.add(KEY, part(2, total=2, ref_bits=16), "X", now=0.0) is None
    # Same reference, another total: another message reusing the reference.
    assert r.add(KEY, part(2, total=3), "X", now=0.0) is None
    assert len(r) == 5
    assert r.add(KEY, part(2, total=2), "b", now=0.0) == "ab"
    assert r.add(KEY, part(1, total=3), "Y", now=0.0) is None
    assert r.add(KEY, part(3, total=3), "Z", now=0.0) == "YXZ"
    assert len(r) == 3


def test_expiry_returns_what_arrived_with_markers() -> None:
    r = Reassembler(timeout=300.0)
    assert r.next_deadline() is None
    r.add(KEY, part(1, total=4), "a", now=10.0)
    r.add(KEY, part(3, total=4), "c", now=20.0)
    assert r.next_deadline() == 310.0
    assert r.expire(309.9) == []
    (incomplete,) = r.expire(310.0)
    assert incomplete == Incomplete(
        key=KEY,
        text="a" + missing_marker(2, 4) + "c" + missing_marker(4, 4),
        reference=7,
        ref_bits=8,
        total=4,
        received=(1, 3),
        missing=(2, 4),
        first_seen=10.0,
        reason="timeout",
    )
    assert missing_marker(2, 4) == "[part 2 of 4 missing]"
    assert len(r) == 0 and r.next_deadline() is None and r.expire(1e9) == []
    # A straggler starts a new set rather than reviving the old one.
    assert r.add(KEY, part(2, total=4), "b", now=311.0) is None
    assert r.next_deadline() == 611.0


def test_expiry_keeps_an_empty_part_apart_from_a_missing_one() -> None:
    r = Reassembler(timeout=5.0)
    r.add(KEY, part(1, total=2), "", now=0.0)
    (incomplete,) = r.expire(5.0)
    assert incomplete.text == missing_marker(2, 2)
    assert incomplete.received == (1,)


def test_expiry_goes_oldest_first_and_only_as_due() -> None:
    r = Reassembler(timeout=100.0)
    for index in range(5):
        r.add(("main", str(index)), part(1), "x", now=float(index * 10))
    assert r.next_deadline() == 100.0
    assert [i.key for i in r.expire(125.0)] == [("main", "0"), ("main", "1"), ("main", "2")]
    assert r.next_deadline() == 130.0
    assert len(r) == 2


def test_a_late_part_of_a_set_still_open_completes_it() -> None:
    r = Reassembler(timeout=100.0)
    r.add(KEY, part(1, total=2), "a", now=0.0)
    assert r.add(KEY, part(2, total=2), "b", now=99.0) == "ab"
    assert r.expire(1000.0) == []


def test_redelivered_part_of_a_completed_set_is_ignored() -> None:
    r = Reassembler(timeout=100.0)
    r.add(KEY, part(1, total=2), "a", now=0.0)
    assert r.add(KEY, part(2, total=2), "b", now=1.0) == "ab"
    assert r.add(KEY, part(2, total=2), "b", now=2.0) is None  # lost deliver_sm_resp
    assert r.add(KEY, part(1, total=2), "a", now=3.0) is None
    assert len(r) == 0 and r.expire(1000.0) == []


def test_same_reference_with_other_text_is_a_new_message() -> None:
    r = Reassembler(timeout=100.0)
    r.add(KEY, part(1, total=2), "a", now=0.0)
    assert r.add(KEY, part(2, total=2), "b", now=1.0) == "ab"
    assert r.add(KEY, part(1, total=2), "c", now=2.0) is None
    assert r.add(KEY, part(2, total=2), "b", now=3.0) == "cb"


def test_completed_sets_are_forgotten_after_the_timeout() -> None:
    r = Reassembler(timeout=100.0)
    r.add(KEY, part(1, total=2), "a", now=0.0)
    r.add(KEY, part(2, total=2), "b", now=1.0)
    r.expire(101.0)
    assert r.add(KEY, part(2, total=2), "b", now=101.0) is None
    assert len(r) == 1


def test_memory_bound_evicts_the_oldest_set() -> None:
    r = Reassembler(timeout=300.0, max_sets=3)
    for index in range(3):
        r.add(("main", str(index)), part(1), "x", now=float(index))
    assert r.next_deadline() == 300.0
    r.add(("main", "3"), part(1), "y", now=50.0)
    assert len(r) == 3
    assert r.next_deadline() == 50.0  # the evicted set is due at once
    (evicted,) = r.expire(50.0)
    assert (evicted.key, evicted.reason, evicted.first_seen) == (("main", "0"), "evicted", 0.0)
    assert r.next_deadline() == 301.0
    # The evicted set's next part opens a new set, evicting the next oldest.
    assert r.add(("main", "0"), part(2), "x", now=60.0) is None
    assert [i.key for i in r.expire(60.0)] == [("main", "1")]


def test_evicted_sets_waiting_are_bounded_too() -> None:
    r = Reassembler(max_sets=2)
    for index in range(10):
        r.add(("main", str(index)), part(1), "x", now=float(index))
    assert len(r) == 2
    assert r.dropped == 6
    assert [i.key[1] for i in r.expire(10.0)] == ["6", "7"]
    assert r.next_deadline() == 308.0


def test_reprs_hold_no_numbers_or_text() -> None:
    r = Reassembler(timeout=1.0)
    r.add(KEY, part(1), BODY, now=0.0)
    (incomplete,) = r.expire(1.0)
    for text in (repr(r), repr(incomplete), str(incomplete)):
        assert NUMBER not in text and "CANARY" not in text


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Reassembler(timeout=0.0)
    with pytest.raises(ValueError, match="max_sets"):
        Reassembler(max_sets=0)


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[tuple[str, ...], int, list[str]]]:
    """A few messages: (key, reference, parts), some sharing a key or a reference."""
    count = draw(st.integers(1, 6))
    result: list[tuple[tuple[str, ...], int, list[str]]] = []
    for _ in range(count):
        key = ("main", draw(st.sampled_from(["a", "b"])))
        reference = draw(st.integers(0, 3))
        texts = draw(st.lists(st.text(max_size=5), min_size=2, max_size=6))
        identity = (key, reference, len(texts))
        if all((k, r, len(t)) != identity for k, r, t in result):
            result.append((key, reference, texts))
    return result


@given(msgs=messages(), data=st.data())
def test_interleaved_messages_complete_exactly_once(
    msgs: list[tuple[tuple[str, ...], int, list[str]]], data: st.DataObject
) -> None:
    arrivals = [
        (index, seq) for index, (_, _, texts) in enumerate(msgs) for seq in range(1, len(texts) + 1)
    ]
    arrivals += data.draw(st.lists(st.sampled_from(arrivals), max_size=5))  # duplicates
    arrivals = data.draw(st.permutations(arrivals))
    r = Reassembler(timeout=1000.0)
    done: list[str] = []
    for step, (index, seq) in enumerate(arrivals):
        key, reference, texts = msgs[index]
        result = r.add(key, Concat(reference, len(texts), seq), texts[seq - 1], now=float(step))
        if result is not None:
            done.append(result)
    # Equal texts for equal identities are duplicates; distinct identities give one each.
    assert sorted(done) == sorted("".join(texts) for _, _, texts in msgs)
    assert len(r) == 0 and r.expire(1e9) == []


@given(
    steps=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 3), st.floats(0, 50)), max_size=60),
    max_sets=st.integers(1, 5),
)
def test_bounds_and_deadlines_hold(steps: list[tuple[int, int, float]], max_sets: int) -> None:
    r = Reassembler(timeout=30.0, max_sets=max_sets)
    now = 0.0
    for who, seq, advance in steps:
        now += advance
        deadline = r.next_deadline()
        if deadline is not None and deadline <= now:
            expired = r.expire(now)
            assert expired
            assert all(i.reason == "evicted" or i.first_seen + 30.0 <= now for i in expired)
            after = r.next_deadline()
            assert after is None or after > now
        r.add(("main", str(who)), Concat(1, 3, seq), "x", now)
        assert len(r) <= max_sets
