"""The embedded default's modems (gateway/demo.py) as the bank driver reaches them.

An unplugged emulated modem frees its pty, and the kernel gives that /dev/pts/N to the
next pty opened anywhere on the machine (another test's emulator, a terminal). A driver
configured with /dev/pts/N reopened it after the unplug and sent through the stranger:
`modem1:0` (a fresh emulator's first reference) in test_embedded_default's failover.
The ports are now by-id style links that vanish on unplug and come back on replug.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.clock import SystemClock
from drivers.modem.bank import ModemBankDriver
from drivers.modem.driver import ModemState
from drivers.modem.emulator import EmulatedModem
from gateway.demo import embedded_modems
from tests.modem_rig import Bench, HoldingSink, bank_options, sms


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    modems = embedded_modems(tmp_path / "demo-modems")
    for modem in modems:
        modem.send_latency = modem.report_delay = 0.01
        await modem.start()
    sink = HoldingSink()
    bank = ModemBankDriver("modems", bank_options([m.path for m in modems]), sink, SystemClock())
    bench = Bench(bank, sink, modems)
    await bank.start()
    try:
        await bench.until(lambda: all(m.ready for m in bank.modems.values()))
        yield bench
    finally:
        await bank.aclose()
        for modem in modems:
            await modem.aclose()


async def test_an_unplugged_modem_is_not_reopened_on_the_next_pty(bench: Bench) -> None:
    unplugged, driver = bench.emulators[0], bench.modem(0)
    assert unplugged.link_path is not None and unplugged.path == str(unplugged.link_path)
    await unplugged.unplug()
    await bench.until(lambda: driver.state is ModemState.UNPLUGGED)

    async with EmulatedModem(send_latency=0.01) as stranger:  # likely on the freed /dev/pts/N
        # The driver's next attempt to reopen its port, now that the stranger is there.
        driver.progress.clear()
        async with asyncio.timeout(5):
            await driver.progress.wait()
        assert driver.state is ModemState.UNPLUGGED, driver.detail
        result = await bench.bank.submit(sms("after the unplug"))
        assert all(c.startswith("m2:") for c in result.carrier_ids), result.carrier_ids
        assert stranger.sent == [] and unplugged.sent == []

    await unplugged.replug()  # the same configured port leads to the same modem again
    await bench.until(lambda: driver.ready)
    assert not bench.member(0)["errors"]
