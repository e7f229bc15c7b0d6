"""The fence in the group sender (issue 18, point 2): once a cluster node's lease may
have lapsed it claims nothing, and what it claimed but had not handed to the driver goes
back to the queue unsent (not flagged: it never left), for a live node to send."""

from __future__ import annotations

from gateway.app import Gateway
from gateway.scheduler import Scheduler
from gateway.store.records import StoredEvent
from tests.conftest import GatewayFactory, accept, loopback, state_of


class Fence:
    """Lets `live` checks pass, then raises as `lease.Fence.check` does once fenced."""

    def __init__(self, live: int) -> None:
        self.live = live
        self.checks = 0

    def __call__(self) -> None:
        self.checks += 1
        if self.checks > self.live:
            raise RuntimeError("lease not renewed in time")


def _number(i: int) -> str:
    return f"+1202555{2000 + i:04d}"


async def _sender(gw: Gateway, fence: Fence) -> Scheduler:
    scheduler = Scheduler(
        gw.store, gw.routes, gw.router, gw.config.queue, gw.clock, gw.metrics, fence=fence
    )
    await scheduler.load()
    return scheduler


async def test_a_fenced_node_claims_nothing(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    ids = [await accept(gw, to=_number(i)) for i in range(3)]
    fence = Fence(live=0)
    await (await _sender(gw, fence)).run_until_idle()
    assert fence.checks >= 1
    assert loopback(gw).health().counters["submitted"] == 0
    assert [await state_of(gw, i) for i in ids] == ["queued"] * 3


async def test_claimed_but_not_handed_over_goes_back_unsent(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    ids = [await accept(gw, to=_number(i)) for i in range(3)]
    fence = Fence(live=1)  # the claim's check passes; the hand-over's finds it fenced
    await (await _sender(gw, fence)).run_until_idle()
    assert loopback(gw).health().counters["submitted"] == 0
    for message_id in ids:
        assert await state_of(gw, message_id) == "queued"
        events: list[StoredEvent] = await gw.store.events(message_id)
        assert [(e.state, e.error_code) for e in events][-2:] == [
            ("sending", None),
            ("queued", "cluster:fenced"),
        ]
        stored = await gw.store.message(message_id)
        assert stored is not None
        assert not stored.possible_duplicate and stored.attempts == 0
