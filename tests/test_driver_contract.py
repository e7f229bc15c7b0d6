"""The driver contract: one suite that every route driver must pass.

A new driver joins by adding a harness to `HARNESSES`: something that builds the
driver against a recording sink and can make its receipts come due.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from drivers.base import (
    Driver,
    DriverError,
    DriverNotReady,
    OutboundSms,
    ReceiptState,
    RouteState,
)
from drivers.clock import FakeClock, SystemClock
from drivers.loopback import LoopbackDriver, LoopbackOptions
from drivers.modem.bank import ModemBankDriver
from drivers.modem.emulator import EmulatedModem
from drivers.smpp.driver import SmppDriver, SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from drivers.smpp.status import Status
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER
from tests.modem_rig import bank_options
from tests.sinks import RecordingSink


@dataclass
class Harness:
    driver: Driver
    sink: RecordingSink
    receipts_due: Callable[[int], Awaitable[None]]  # returns once `n` receipts are in
    arrange_failure: Callable[[], Awaitable[None]]  # the next submit must fail for good
    started: Callable[[], Awaitable[None]]  # returns once the route is up
    failing_number: str
    cleanup: Callable[[], Awaitable[None]] | None = None


async def loopback_harness() -> Harness:
    clock = FakeClock()
    sink = RecordingSink()
    opts = LoopbackOptions(latency=0, receipt_delay=3, reject_prefixes=("+1202555019",))
    driver = LoopbackDriver("lb", opts, sink, clock)

    async def receipts_due(n: int) -> None:
        clock.advance(3)
        await driver.settle()

    async def nothing() -> None:
        return None

    return Harness(driver, sink, receipts_due, nothing, nothing, "+12025550199")


async def smpp_harness() -> Harness:
    """The SMPP driver over real TCP against the SMSC simulator."""
    sim = SmscSimulator(SimulatorConfig(password="pw", receipt_delay=0.0))
    await sim.start()
    sink = RecordingSink()
    opts = SmppOptions(
        host="127.0.0.1", port=sim.port, system_id="smsgw", password="pw", reconnect_min=0.05
    )
    driver = SmppDriver("smpp", opts, sink, SystemClock())

    async def receipts_due(n: int) -> None:
        await sink.until(lambda: len(sink.receipts) >= n)

    async def arrange_failure() -> None:
        sim.reject_next(Status.ESME_RINVDSTADR)

    async def started() -> None:
        await sink.until(lambda: driver.health().can_send)

    return Harness(
        driver, sink, receipts_due, arrange_failure, started, "+12025550199", cleanup=sim.aclose
    )


async def modem_harness() -> Harness:
    """A one-modem bank over a real pseudo-terminal against the modem emulator."""
    emulator = EmulatedModem(send_latency=0.0, report_delay=0.0)
    await emulator.start()
    sink = RecordingSink()
    driver = ModemBankDriver("modem", bank_options([emulator.path]), sink, SystemClock())

    async def receipts_due(n: int) -> None:
        await sink.until(lambda: len(sink.receipts) >= n)

    async def arrange_failure() -> None:
        emulator.fail_next("AT+CMGS", "+CMS ERROR: 1")  # unassigned number: permanent

    async def started() -> None:
        await sink.until(lambda: driver.health().can_send)

    return Harness(
        driver, sink, receipts_due, arrange_failure, started, "+12025550199", emulator.aclose
    )


HARNESSES: dict[str, Callable[[], Awaitable[Harness]]] = {
    "loopback": loopback_harness,
    "modem": modem_harness,
    "smpp": smpp_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = await HARNESSES[request.param]()
    await h.driver.start()
    await h.started()
    yield h
    await h.driver.aclose()
    if h.cleanup is not None:
        await h.cleanup()


def _sms(parts: tuple[str, ...] = ("hello",), to: str = CANARY_NUMBER) -> OutboundSms:
    return OutboundSms(message_id="m1", to=to, parts=parts, encoding="gsm7", reference=7)


async def test_is_a_driver_and_reports_up(harness: Harness) -> None:
    assert isinstance(harness.driver, Driver)
    assert harness.driver.health().state is RouteState.UP
    assert harness.sink.healths and harness.sink.healths[-1].state is RouteState.UP


async def test_one_carrier_id_per_part_all_distinct(harness: Harness) -> None:
    one = await harness.driver.submit(_sms())
    three = await harness.driver.submit(_sms(("a" * 153, "b" * 153, "c")))
    assert len(one.carrier_ids) == 1 and len(three.carrier_ids) == 3
    assert len({*one.carrier_ids, *three.carrier_ids}) == 4


async def test_receipts_name_the_carrier_ids(harness: Harness) -> None:
    result = await harness.driver.submit(_sms(("x" * 153, "y" * 20)))
    assert len(result.carrier_ids) == 2
    await harness.receipts_due(2)
    got = {r.carrier_id: r.state for r in harness.sink.receipts}
    assert got == dict.fromkeys(result.carrier_ids, ReceiptState.DELIVERED)


async def test_errors_are_typed_with_codes_free_of_phi(harness: Harness) -> None:
    await harness.arrange_failure()
    with pytest.raises(DriverError) as e:
        await harness.driver.submit(_sms((CANARY_BODY,), to=harness.failing_number))
    assert e.value.code and ":" in e.value.code
    for text in (e.value.code, str(e.value)):
        assert CANARY_DIGITS not in text and "CANARY" not in text
        assert harness.failing_number[2:] not in text


async def test_not_ready_after_close(harness: Harness) -> None:
    await harness.driver.aclose()
    assert not harness.driver.health().can_send
    with pytest.raises(DriverNotReady):
        await harness.driver.submit(_sms())
