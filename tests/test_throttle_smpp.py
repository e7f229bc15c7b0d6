"""Issue 16, point 4: a route with no rate finds a throttling carrier's rate.

The whole gateway (store, scheduler, SMPP driver over TCP) against the in-process
`SmscSimulator` limited to a rate (`limit_rate`: a token bucket on the injected clock,
the excess answered ESME_RTHROTTLED). Gateway and simulator share one `FakeClock`; the
test moves it in small steps and, at each, runs the scheduler until nothing more can
go at that instant (`run_until_idle`: every submit sent has had its answer). So twelve
carrier seconds take a few real ones and the counts do not depend on the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from drivers.base import RouteHealth, RouteState
from drivers.clock import FakeClock
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway import metrics_state
from gateway.admin.render import environment
from gateway.admin.route_cards import route_cards
from gateway.app import Gateway
from gateway.intake import SendRequest
from tests.conftest import CANARY_NUMBER, make_config, state_of

PASSWORD = "pw"
TICK = 0.01  # carrier seconds per step


@dataclass
class Carrier:
    """The simulator and what it accepted when, in carrier (fake) seconds."""

    sim: SmscSimulator
    clock: FakeClock
    start: float
    accepted: list[float] = field(default_factory=list)
    first_throttle: float | None = None

    def note(self) -> None:
        now = self.clock.monotonic() - self.start
        self.accepted += [now] * (len(self.sim.submitted) - len(self.accepted))
        if self.first_throttle is None and self.sim.throttled:
            self.first_throttle = now

    def rate(self, start: float, end: float) -> float:
        return sum(1 for t in self.accepted if start <= t < end) / (end - start)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Carrier]]:
    clock = FakeClock()
    config = SimulatorConfig(password=PASSWORD, receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(config, clock) as sim:
        route = {
            "name": "carrier",
            "type": "smpp",
            "host": "127.0.0.1",
            "port": sim.port,
            "system_id": "smsgw",
            "password": PASSWORD,
            "window": 10,
            "burst": 2,  # a token may come between two steps: the real loop wakes for each
            "enquire_link_interval": 30.0,
            "response_timeout": 5.0,
        }  # no `rate`: the carrier's is to be found
        # Lazy writes (a `sent`, a receipt) wait in real time while this clock is moved
        # by hand: with none, each step's outcomes commit at once, as they would under
        # the steady load of claims the real clock brings.
        config = make_config(tmp_path, [route], store={"lazy_commit_ms": 0})
        gw = await Gateway.open(config, clock)
        up = asyncio.Event()
        reported = gw.sink.health_changed

        def health_changed(name: str, health: RouteHealth) -> None:
            reported(name, health)
            if health.state is RouteState.UP:
                up.set()

        gw.sink.health_changed = health_changed  # type: ignore[method-assign]
        await gw.start(dispatch=False)
        async with asyncio.timeout(8):
            if gw.routes["carrier"].health().state is not RouteState.UP:
                await up.wait()
        try:
            yield gw, Carrier(sim, clock, clock.monotonic())
        finally:
            await gw.stop()


async def _queue(gw: Gateway, n: int, priority: str, tag: str) -> list[str]:
    """Accept `n` messages in one commit, as `POST /messages/batch` does."""
    now = gw.clock.time()
    prepared = [
        gw.intake.prepare(
            SendRequest(to=CANARY_NUMBER, body=f"{tag} {i}", priority=priority), None, now
        )
        for i in range(n)
    ]
    await gw.store.insert(gw.intake.statements(prepared))
    gw.intake.accepted(prepared)
    return [p.message.id for p in prepared]


async def _run(gw: Gateway, carrier: Carrier, until: float, each: Callable[[], None]) -> None:
    """Step the shared clock to `until` carrier seconds, sending all that may go at each."""
    while carrier.clock.monotonic() - carrier.start < until:
        await gw.scheduler.run_until_idle()
        carrier.note()
        each()
        carrier.clock.advance(TICK)


async def test_a_route_with_no_rate_reaches_the_carriers_within_ten_seconds(
    rig: tuple[Gateway, Carrier],
) -> None:
    gw, carrier = rig
    rate = 40.0
    carrier.sim.limit_rate(rate, burst=4)
    route = gw.routes["carrier"]
    bulk = await _queue(gw, 620, "bulk", "bulk")
    critical: list[str] = []
    rates: list[float | None] = []

    await _run(gw, carrier, 14.0, lambda: rates.append(route.bucket.rate))
    first = carrier.first_throttle
    assert first is not None and first < 1.0
    assert carrier.rate(first + 10, 14.0) >= 0.9 * rate  # found within 10 s, and held
    assert carrier.rate(first + 10, 14.0) <= 1.05 * rate
    assert route.config.rate is None and route.discovered_rate is not None
    assert 0.8 * rate <= route.bucket.rate <= 1.1 * rate  # type: ignore[operator]
    assert route.describe()["discovered_rate"] == route.discovered_rate  # GET /routes
    (card,) = route_cards(gw, {})
    assert card["discovered"] and card["rate"] == round(route.bucket.rate, 2)  # type: ignore[arg-type]
    shown = environment().get_template("_route_card.html").render(r=card, can_act=False)
    assert "found from the carrier&#39;s throttling" in shown or "carrier's throttling" in shown
    await metrics_state.refresh(gw)
    scraped = generate_latest(gw.metrics.registry).decode()
    for name, value in (
        ("smsgw_route_rate", route.bucket.rate),
        ("smsgw_route_discovered_rate", route.discovered_rate),
    ):
        line = next(x for x in scraped.splitlines() if x.startswith(name + '{route="carrier"}'))
        assert float(line.split()[-1]) == pytest.approx(value)

    # Critical messages queued now overtake the bulk backlog under the found rate, and
    # throttled ones (no attempt charged) go again within a few carrier seconds.
    critical = await _queue(gw, 10, "critical", "critical")
    at = carrier.clock.monotonic() - carrier.start
    await _run(gw, carrier, at + 1.0, lambda: None)
    assert {await state_of(gw, m) for m in critical} <= {"sent", "delivered"}
    assert "queued" in {await state_of(gw, m) for m in bulk[-100:]}  # they overtook these
    waits = []
    for mid in bulk:
        events = await gw.store.events(mid)
        for i, e in enumerate(events):
            if e.error_code == "smpp:throttled" or (e.error_code or "").endswith("0x00000058"):
                later = [x.at for x in events[i + 1 :] if x.state == "sending"]
                if later:
                    waits.append(later[0] - e.at)
    assert waits, "the carrier throttled nothing"
    assert max(waits) <= 3.0


async def test_tracks_a_carrier_whose_limit_falls_and_rises(
    rig: tuple[Gateway, Carrier],
) -> None:
    gw, carrier = rig
    carrier.sim.limit_rate(40.0, burst=4)
    await _queue(gw, 1000, "bulk", "bulk")
    await _run(gw, carrier, 6.0, lambda: None)
    carrier.sim.limit_rate(10.0, burst=2)
    await _run(gw, carrier, 12.0, lambda: None)
    assert 0.9 * 10 <= carrier.rate(9.0, 12.0) <= 1.1 * 10  # found the drop within 3 s
    carrier.sim.limit_rate(60.0, burst=6)
    await _run(gw, carrier, 24.0, lambda: None)
    assert carrier.rate(21.0, 24.0) >= 0.9 * 60  # and the rise within ten
