"""Which dead peer's session a node drains, and when (`gateway/integrations/mqtt_drain.py`);
the drain itself against a real mosquitto: tests/pg/test_mqtt_share_drain.py."""

from __future__ import annotations

import asyncio

import aiomqtt

from drivers.clock import FakeClock
from gateway.integrations.mqtt_drain import ShareDrain

GRACE = 10.0


class _Recorded(ShareDrain):
    """The decision only: which topics would be drained (no broker here)."""

    def __init__(self, clock: FakeClock, own: str) -> None:
        super().__init__(
            clock=clock,
            after=GRACE,
            own_status=own,
            client_for=lambda _: aiomqtt.Client("127.0.0.1"),
            client_id_of=lambda topic: "smsgw-" + topic.rsplit("/", 1)[-1],
            share_filter="$share/smsgw/hosp/send",
            send_topic="hosp/send",
            handler=lambda: None,
        )
        self.taken: list[str] = []

    async def _drain(self, topic: str) -> None:
        self.taken.append(topic)


async def _settle(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_peer_back_within_the_grace_keeps_its_session() -> None:
    clock = FakeClock()
    drain = _Recorded(clock, "hosp/status/gw1")
    drain.peer_offline("hosp/status/gw2", set)
    await clock.wait_sleeping(1)
    await _settle(clock, GRACE - 1)
    drain.peer_online("hosp/status/gw2")
    await _settle(clock, 5)
    assert drain.taken == []


async def test_a_peer_away_past_the_grace_is_drained_by_the_first_live_node_only() -> None:
    clock = FakeClock()
    first = _Recorded(clock, "hosp/status/gw1")
    second = _Recorded(clock, "hosp/status/gw3")
    # Each node's view: the other live nodes saying online.
    first.peer_offline("hosp/status/gw2", lambda: {"hosp/status/gw3"})
    second.peer_offline("hosp/status/gw2", lambda: {"hosp/status/gw1"})
    await clock.wait_sleeping(2)
    await _settle(clock, GRACE)
    assert (first.taken, second.taken) == (["hosp/status/gw2"], [])
    await first.aclose()
    await second.aclose()


async def test_a_peer_that_says_offline_twice_is_drained_once() -> None:
    clock = FakeClock()
    drain = _Recorded(clock, "hosp/status/gw1")
    drain.peer_offline("hosp/status/gw2", set)
    drain.peer_offline("hosp/status/gw2", set)  # its will, then a retained repeat
    await clock.wait_sleeping(1)
    await _settle(clock, GRACE)
    assert drain.taken == ["hosp/status/gw2"]
