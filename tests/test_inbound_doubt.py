"""The sink's memory of inbound deliveries it did not acknowledge (`gateway/inbound_doubt.py`):
a redelivery takes the id its earlier attempt used, oldest first, once each; entries go
after their time or beyond the bound."""

from __future__ import annotations

from gateway.inbound_doubt import InDoubt


def test_each_delivery_not_acknowledged_gives_its_id_to_one_redelivery_oldest_first() -> None:
    doubt = InDoubt()
    c = doubt.digest("carrier", "+12025550147", "4000", "C")
    assert c != doubt.digest("carrier", "+12025550147", "4000", "R")
    assert c != doubt.digest("carrier", "+1202555014", "74000", "C")  # fields kept apart
    assert c != InDoubt().digest("carrier", "+12025550147", "4000", "C")  # a key per process
    doubt.put(c, "in-1", 10.0)
    doubt.put(c, "in-2", 11.0)
    assert [doubt.take(c, 12.0), doubt.take(c, 12.0), doubt.take(c, 12.0)] == ["in-1", "in-2", None]
    assert len(doubt) == 0


def test_ids_are_forgotten_after_their_time_and_beyond_the_bound() -> None:
    doubt = InDoubt(keep_seconds=60.0, max_kept=2)
    a, b, c = (doubt.digest("r", "+1", None, text) for text in "abc")
    doubt.put(a, "in-a", 0.0)
    doubt.put(b, "in-b", 30.0)
    assert doubt.take(a, 60.0) is None  # a minute old: the carrier gave up on it
    doubt.put(a, "in-a2", 61.0)
    doubt.put(c, "in-c", 62.0)  # a third: the oldest (b) goes
    assert (len(doubt), doubt.take(b, 63.0), doubt.take(c, 63.0)) == (2, None, "in-c")
    assert doubt.take(a, 63.0) == "in-a2"
