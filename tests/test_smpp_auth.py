"""A carrier refusing the route's credentials (issue 10, point 13).

Carriers lock an account after a few refused binds, so the SMPP driver must bind once,
raise `DriverAuthFailed`, park the route and bind again only on an operator's resume
or a changed secret. Against the repo's `SmscSimulator` over loopback TCP, on a
`FakeClock` moved by the test through a window of fake time in which the old driver
rebound at every `reconnect_max`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from drivers.base import DriverAuthFailed, OutboundSms, RouteHealth, RouteState
from drivers.clock import FakeClock
from drivers.smpp.driver import SmppDriver, SmppOptions
from drivers.smpp.gate import CREDENTIAL_CHECK
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from drivers.text import split
from gateway.admin.route_cards import route_cards
from gateway.app import Gateway
from gateway.http_app import build_app, runner_options
from gateway.panel_users import Role
from gateway.store.route_parks import RouteParks
from gateway.tokens import create_token
from tests.admin_support import PanelClient
from tests.conftest import FAST_PASSWORD_HASH, accept, make_config, state_of
from tests.sinks import RecordingSink
from tests.store_rows import message_row
from tests.test_api import start_client

RIGHT, WRONG = "right-pw", "wrong-pw"
WITHIN = 8.0
MINUTES = 30  # of fake time; the old driver rebound at least once a minute


def options(sim: SmscSimulator, secret: Path, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": sim.port,
        "system_id": "smsgw",
        "password_file": str(secret),
        "bind_timeout": 0.5,  # fake seconds; each also bounds a real wait in the link loop
        "reconnect_min": 1.0,
        "reconnect_max": 60.0,
        **extra,
    }


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    async with SmscSimulator(SimulatorConfig(password=RIGHT, receipt_delay=0.0)) as s:
        yield s


def set_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "smpp-password"
    path.write_text(WRONG + "\n")
    return path


async def settled(sim: SmscSimulator, clock: FakeClock) -> None:
    """Until the driver sleeps on the clock again, or connects once more."""
    more = asyncio.ensure_future(sim.wait_until(lambda: sim.connections > 1))
    asleep = asyncio.ensure_future(clock.wait_sleeping(1))
    done, pending = await asyncio.wait(
        {more, asleep}, timeout=WITHIN, return_when="FIRST_COMPLETED"
    )
    for task in pending:
        task.cancel()
    assert done, "the driver neither slept nor reconnected"


async def parked_for(minutes: int, sim: SmscSimulator, clock: FakeClock) -> None:
    for _ in range(minutes):
        clock.advance(60)
        await settled(sim, clock)


def _sms() -> OutboundSms:
    plan = split("hello")
    return OutboundSms("m", "+12025550147", plan.parts, plan.encoding.value)


async def test_refused_password_binds_once_and_parks_until_an_operator_resumes(
    sim: SmscSimulator, secret: Path
) -> None:
    clock, sink = FakeClock(), RecordingSink()
    driver = SmppDriver("carrier", SmppOptions(**options(sim, secret)), sink, clock)
    await driver.start()
    try:
        await sink.until(lambda: "0x0000000e" in driver.health().detail, WITHIN)  # RINVPASWD
        await parked_for(MINUTES, sim, clock)
        assert (sim.connections, sim.binds) == (1, 0)  # one refused bind in half an hour
        assert driver.health().state is RouteState.PARKED
        with pytest.raises(DriverAuthFailed) as refused:
            await driver.submit(_sms())
        assert refused.value.code == "smpp:0x0000000e"

        set_secret(secret, RIGHT)  # the operator fixes the secret, then resumes
        assert driver.resume() is True
        await sink.until(lambda: driver.health().state is RouteState.UP, WITHIN)
        assert (sim.connections, sim.binds) == (2, 1)
        assert len((await driver.submit(_sms())).carrier_ids) == 1
        assert driver.resume() is False  # nothing to resume: no extra bind
        assert sim.connections == 2
    finally:
        await driver.aclose()


@pytest.mark.parametrize("refusal", ["system_id", "password"])
async def test_a_changed_secret_rebinds_without_an_operator(
    sim: SmscSimulator, secret: Path, refusal: str
) -> None:
    clock, sink = FakeClock(), RecordingSink()
    extra = {"system_id": "nobody"} if refusal == "system_id" else {}
    if refusal == "system_id":
        set_secret(secret, RIGHT)
    driver = SmppDriver("carrier", SmppOptions(**options(sim, secret, **extra)), sink, clock)
    await driver.start()
    try:
        await sink.until(lambda: driver.health().state is RouteState.PARKED, WITHIN)
        await parked_for(3, sim, clock)  # the secret is re-read: unchanged, no bind
        assert sim.connections == 1
        if refusal == "system_id":
            return  # ESME_RINVSYSID parks as well; the system id is config (restart)
        set_secret(secret, RIGHT)
        clock.advance(CREDENTIAL_CHECK)
        await sink.until(lambda: driver.health().state is RouteState.UP, WITHIN)
        assert (sim.connections, sim.binds) == (2, 1)
    finally:
        await driver.aclose()


async def test_with_several_binds_a_wrong_password_costs_one_refusal(
    sim: SmscSimulator, secret: Path
) -> None:
    clock, sink = FakeClock(), RecordingSink()
    opts = SmppOptions(**options(sim, secret, bind="transmitter+receiver", binds=2))
    driver = SmppDriver("carrier", opts, sink, clock)
    await driver.start()
    try:
        await sink.until(lambda: driver.health().state is RouteState.PARKED, WITHIN)
        await parked_for(5, sim, clock)
        assert sim.connections == 1
        set_secret(secret, RIGHT)
        assert driver.resume()
        await sink.until(lambda: driver.health().state is RouteState.UP, WITHIN)
        assert (sim.connections, sim.binds) == (5, 4)
    finally:
        await driver.aclose()


# -- the gateway: park, alert, show, resume ------------------------------------------------


def watch_health(gw: Gateway) -> Callable[[RouteState], Awaitable[None]]:
    """A wait for the carrier route's state, re-checked on each health change."""
    changed = asyncio.Event()
    reported = gw.sink.health_changed

    def health_changed(name: str, health: RouteHealth) -> None:
        reported(name, health)
        changed.set()

    gw.sink.health_changed = health_changed  # type: ignore[method-assign]

    async def until_state(state: RouteState) -> None:
        async with asyncio.timeout(WITHIN):
            while gw.routes["carrier"].health().state is not state:
                changed.clear()
                await changed.wait()

    return until_state


async def test_gateway_parks_alerts_and_resumes_on_the_operator_action(
    tmp_path: Path, sim: SmscSimulator, secret: Path
) -> None:
    clock = FakeClock()
    route = {"name": "carrier", "type": "smpp", **options(sim, secret)}
    gw = await Gateway.open(make_config(tmp_path, [route]), clock)
    until_state = watch_health(gw)
    token = await create_token(gw.store, "ops", frozenset({"send", "read", "admin"}), clock)
    client = await start_client(gw)
    auth = {"Authorization": f"Bearer {token.text}"}
    try:
        with capture_logs() as logs:
            await gw.start(dispatch=False)
            await until_state(RouteState.PARKED)
            mid = await accept(gw)
            await gw.scheduler.run_until_idle()
        alerts = [e for e in logs if e["event"] == "route_auth_failed"]
        assert [(e["log_level"], e["route"]) for e in alerts] == [("error", "carrier")]
        registry = gw.metrics.registry
        assert registry.get_sample_value("smsgw_route_auth_failed", {"route": "carrier"}) == 1
        refusals = registry.get_sample_value(
            "smsgw_route_auth_refusals_total", {"route": "carrier"}
        )
        assert refusals == 1
        row = await message_row(gw.store, mid)
        assert row is not None and (row["state"], row["attempts"]) == ("queued", 0)

        listed = await (await client.get("/api/v1/routes", headers=auth)).json()
        (described,) = [r for r in listed["routes"] if r["name"] == "carrier"]
        assert (described["state"], described["auth_failed"]) == ("parked", True)
        (card,) = route_cards(gw, {})
        assert (card["state"], card["auth_failed"], card["paused"]) == ("parked", True, True)

        await parked_for(MINUTES, sim, clock)
        assert sim.connections == 1

        set_secret(secret, RIGHT)
        resumed = await client.post("/api/v1/routes/carrier/resume", headers=auth)
        assert resumed.status == 200, await resumed.text()
        await until_state(RouteState.UP)
        assert (sim.connections, sim.binds) == (2, 1)
        assert "route_reconnected" in [e.action for e in await gw.audit.entries()]
        await gw.scheduler.run_until_idle()
        assert await state_of(gw, mid) in ("sent", "delivered")
        assert registry.get_sample_value("smsgw_route_auth_failed", {"route": "carrier"}) == 0
        assert await RouteParks(gw.store).all() == {}  # a restart now binds
    finally:
        await client.close()
        await gw.stop()


async def test_panel_shows_the_parked_route_and_its_resume_rebinds(
    tmp_path: Path, sim: SmscSimulator, secret: Path
) -> None:
    clock = FakeClock()
    route = {"name": "carrier", "type": "smpp", **options(sim, secret)}
    gw = await Gateway.open(make_config(tmp_path, [route], admin=FAST_PASSWORD_HASH), clock)
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    panel = PanelClient(gw, TestClient(server))
    await panel.client.start_server()
    until_state = watch_health(gw)
    try:
        await gw.start(dispatch=False)
        await panel.add_user("op", Role.OPERATOR)
        token = await panel.login_ok("op")
        await until_state(RouteState.PARKED)
        page = await (await panel.client.get("/routes")).text()
        assert 'data-field="state">parked' in page
        assert "refused the credentials" in page
        assert "Resume carrier" in page

        set_secret(secret, RIGHT)
        resumed = await panel.post("/routes/carrier/resume", token=token)
        assert resumed.status == 303
        await until_state(RouteState.UP)
        assert (sim.connections, sim.binds) == (2, 1)
        newest = (await gw.audit.entries(limit=1))[0]
        assert (newest.action, newest.target_id) == ("route_reconnected", "carrier")
        assert newest.actor.startswith("user:")
    finally:
        await panel.client.close()
        await gw.stop()


async def test_a_restart_with_the_same_credentials_stays_parked(
    tmp_path: Path, sim: SmscSimulator, secret: Path
) -> None:
    clock = FakeClock()
    config = make_config(tmp_path, [{"name": "carrier", "type": "smpp", **options(sim, secret)}])

    async def run(until: RouteState) -> Gateway:
        gw = await Gateway.open(config, clock)
        until_state = watch_health(gw)
        await gw.start(dispatch=False)
        await until_state(until)
        await gw.scheduler.run_until_idle()  # alerts, and remembers or forgets the park
        return gw

    gw = await run(RouteState.PARKED)
    (park,) = (await RouteParks(gw.store).all()).values()
    assert park.code == "smpp:0x0000000e"
    await gw.stop()

    gw = await run(RouteState.PARKED)  # parked from the start: no bind tried
    registry = gw.metrics.registry
    assert registry.get_sample_value("smsgw_route_auth_failed", {"route": "carrier"}) == 1
    await parked_for(5, sim, clock)
    assert (sim.connections, sim.binds) == (1, 0)
    await gw.stop()

    set_secret(secret, RIGHT)  # changed credentials: tried at the next start
    gw = await run(RouteState.UP)
    assert (sim.connections, sim.binds) == (2, 1)
    assert await RouteParks(gw.store).all() == {}
    await gw.stop()
