"""Issue 15, point 4: an emergency broadcast leaves over every route at once.

The embedded default's routes (`make run`: the SMSC simulator over real SMPP, a bank of
two emulated modems on real pseudo-terminals, the loopback `demo` route last), in a
real gateway on the system clock. Critical messages land on the carrier and on the
modems together; a normal-class load waits for the carrier, its first route; the
loopback route, kept for failover, takes none. Nothing sleeps: waits re-check after
every commit and every change of a route's health.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from drivers.clock import SystemClock
from drivers.modem.emulator import EmulatedModem
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway import config as config_mod
from gateway.app import Gateway
from tests.conftest import accept, make_config, poke_on_commit
from tests.store_rows import message_row

pytestmark = pytest.mark.timeout(60)

SMSC, MODEMS, LOOPBACK = (
    config_mod.EMBEDDED_SMSC_ROUTE,
    config_mod.EMBEDDED_MODEM_ROUTE,
    config_mod.EMBEDDED_LOOPBACK_ROUTE,
)


class Rig:
    def __init__(self, gw: Gateway, sim: SmscSimulator, modems: list[EmulatedModem]) -> None:
        self.gw, self.sim, self.modems = gw, sim, modems
        self.changed = asyncio.Event()
        poke_on_commit(gw.store.writer, self.changed.set)
        gw.sink.wake_on_health(self.changed.set)

    async def until(self, check: Callable[[], Awaitable[bool]]) -> None:
        async with asyncio.timeout(40):
            while True:
                self.changed.clear()
                if await check():
                    return
                await self.changed.wait()

    async def routes_up(self) -> None:
        async def up() -> bool:
            now = self.gw.clock.monotonic()
            return all(self.gw.routes[n].usable(now) for n in (SMSC, MODEMS))

        await self.until(up)

    async def sent_routes(self, ids: list[str]) -> list[str]:
        """Each message's route once every one of them has left (sent or delivered)."""

        async def left() -> bool:
            rows = [await message_row(self.gw.store, i) for i in ids]
            return all(r["state"] in ("sent", "delivered") for r in rows)

        await self.until(left)
        return [str((await message_row(self.gw.store, i))["route"]) for i in ids]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with SmscSimulator(SimulatorConfig(password="pw", receipt_delay=0.05)) as sim:
        modems = [
            EmulatedModem(
                profile,
                imei=f"35209900176{i:04d}",
                imsi=f"00101000000{i:04d}",
                iccid=f"898821100000{i:07d}",
                send_latency=0.05,
                report_delay=0.05,
            )
            for i, profile in enumerate(("quectel-ec25", "huawei-e3372"), start=1)
        ]
        for modem in modems:
            await modem.start()
        gw = None
        try:
            config = make_config(tmp_path)
            routes = config_mod.embedded_routes(sim.port, "pw", [m.path for m in modems])
            config = msgspec.structs.replace(config, routes=routes)
            gw = await Gateway.open(config, SystemClock())
            rig = Rig(gw, sim, modems)
            await gw.start(dispatch=True)
            await rig.routes_up()
            yield rig
        finally:
            if gw is not None:
                await gw.stop()
            for modem in modems:
                await modem.aclose()


async def test_a_broadcast_spreads_over_the_carrier_and_the_modems(rig: Rig) -> None:
    normal = [await accept(rig.gw, body=f"n{i}", purpose="informational") for i in range(20)]
    assert set(await rig.sent_routes(normal)) == {SMSC}  # no spreading: the first route
    assert rig.sim.submits == 20

    critical = [
        await accept(rig.gw, body=f"alert {i}", purpose="emergency", priority="critical")
        for i in range(80)
    ]
    routes = await rig.sent_routes(critical)
    on_modems = routes.count(MODEMS)
    assert routes.count(LOOPBACK) == 0  # kept for failover: no overflow reaches it
    assert routes.count(SMSC) + on_modems == 80
    assert on_modems > 0
    assert routes.count(SMSC) > 0
    # What each peer received matches the routes recorded.
    assert rig.sim.submits == 20 + routes.count(SMSC)
    assert sum(len(m.sent) for m in rig.modems) == on_modems
