"""Modem faults through the real serial path: emulated modems on pseudo-terminals.

SIM busy, no network, a hung modem, a vanished port, a URC in the middle of AT+CMGS,
repeated failures that drain a modem, and SIM budgets that park one (on a fake clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.base import DriverNotReady, PermanentSendError, RouteState, TransientSendError
from drivers.clock import FakeClock
from drivers.modem.driver import ModemState
from tests.conftest import CANARY_BODY, CANARY_NUMBER
from tests.modem_rig import BenchFactory, bench_factory, sms


@pytest.fixture
async def open_bench(tmp_path: Path) -> AsyncIterator[BenchFactory]:
    async with bench_factory(tmp_path) as factory:
        yield factory


async def test_sim_busy_is_asked_again_until_ready(open_bench: BenchFactory) -> None:
    bench = await open_bench(
        ready=False,
        before_start=lambda ems: ems[0].fail_next("AT+CPIN?", "+CME ERROR: 14", 3),
    )
    await bench.until_ready()
    assert bench.modem().counters["timeouts"] == 0


async def test_sim_busy_for_good_stops_the_modem(open_bench: BenchFactory) -> None:
    bench = await open_bench(
        ready=False,
        sim_busy_retries=2,
        before_start=lambda ems: ems[0].fail_next("AT+CPIN?", "+CME ERROR: 14", 5),
    )
    await bench.until(lambda: bench.modem().state is ModemState.SIM_ERROR)


async def test_no_network_is_transient_and_nothing_was_sent(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    bench.emulators[0].fail_next("AT+CMGS", "+CMS ERROR: 331")
    with pytest.raises(TransientSendError) as e:
        await bench.bank.submit(sms())
    assert e.value.code == "cms:331" and not e.value.maybe_sent


async def test_no_network_on_one_modem_fails_over_to_the_other(open_bench: BenchFactory) -> None:
    bench = await open_bench(2)
    first, second = bench.emulators
    first.fail_next("AT+CMGS", "+CMS ERROR: 331")
    result = await bench.bank.submit(sms(CANARY_BODY))
    assert result.carrier_ids[0].startswith("m2:")
    assert [p.text for p in second.sent] == [CANARY_BODY] and not first.sent
    assert bench.bank.health().counters["failovers"] == 1


async def test_no_modem_with_network_is_transient(open_bench: BenchFactory) -> None:
    bench = await open_bench(2)
    for emulator in bench.emulators:
        emulator.fail_next("AT+CMGS", "+CMS ERROR: 331")
    with pytest.raises(TransientSendError) as e:
        await bench.bank.submit(sms())
    assert e.value.code == "cms:331" and not e.value.maybe_sent


async def test_unassigned_number_is_permanent(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    bench.emulators[0].fail_next("AT+CMGS", "+CMS ERROR: 1")
    with pytest.raises(PermanentSendError) as e:
        await bench.bank.submit(sms())
    assert e.value.code == "cms:1"


async def test_unregistered_modem_is_not_used(open_bench: BenchFactory) -> None:
    bench = await open_bench(2)
    bench.emulators[0].set_registered(False)
    bench.emulators[0].fail_next("AT+CMGS", "+CMS ERROR: 331")
    result = await bench.bank.submit(sms())
    assert result.carrier_ids[0].startswith("m2:")
    await bench.until(lambda: bench.modem(0).state is ModemState.NO_NETWORK)
    assert bench.bank.health().state is RouteState.DEGRADED


async def test_hung_modem_is_reset_and_used_again(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    await bench.bank.submit(sms())  # after start-up's storage scan: the modem is idle
    emulator.hang()
    with pytest.raises((TransientSendError, DriverNotReady)):
        await bench.bank.submit(sms())
    await bench.until(lambda: bench.modem().counters["resets"] >= 1 or not bench.modem().ready)
    emulator.unhang()
    await bench.until(lambda: bench.modem().counters["resets"] >= 1 and bench.modem().ready)
    await bench.bank.submit(sms("after the reset"))
    assert emulator.sent[-1].text == "after the reset"


async def test_unplug_and_replug_reopens_without_restart(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    await emulator.unplug()
    await bench.until(lambda: bench.modem().state is ModemState.UNPLUGGED)
    with pytest.raises(DriverNotReady):
        await bench.bank.submit(sms())
    await emulator.replug()
    await bench.until_ready()
    await bench.bank.submit(sms("after replug"))
    assert [p.text for p in emulator.sent] == ["after replug"]


async def test_port_vanishing_mid_send_is_a_possible_duplicate(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    bench.emulators[0].unplug_during_next_send()
    with pytest.raises(TransientSendError) as e:
        await bench.bank.submit(sms())
    assert e.value.maybe_sent


async def test_cmti_between_prompt_and_pdu_is_read_after_the_send(
    open_bench: BenchFactory,
) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    index = emulator.preload_sim(CANARY_NUMBER, CANARY_BODY)  # arrives during the send
    emulator.interleave_next("AT+CMGS", f'+CMTI: "SM",{index}')
    await bench.bank.submit(sms("outbound"))
    await bench.until(lambda: len(bench.sink.inbounds) == 1 and not emulator.sim_messages)
    assert bench.sink.inbounds[0].body == CANARY_BODY
    assert [p.text for p in emulator.sent] == ["outbound"]


async def test_repeated_failures_drain_a_modem(open_bench: BenchFactory) -> None:
    bench = await open_bench(2, failure_limit=2)
    first, second = bench.emulators
    first.fail_next("AT+CMGS", "+CMS ERROR: 500", 5)
    for _ in range(2):
        result = await bench.bank.submit(sms())  # fails on m1, goes to m2
        assert result.carrier_ids[0].startswith("m2:")
    assert bench.member(0)["state"] == "drained"
    assert bench.bank.health().counters["drained"] == 1
    await bench.bank.submit(sms())
    assert len(second.sent) == 3 and not first.sent


async def test_budget_parks_a_modem_until_it_resets(tmp_path: Path) -> None:
    clock = FakeClock()
    async with bench_factory(tmp_path, clock) as open_bench:
        bench = await open_bench(2, modems=[{"per_minute": 1}, {"per_minute": 1}])
        await bench.bank.submit(sms())
        await bench.bank.submit(sms())
        assert {bench.member(i)["state"] for i in range(2)} == {"parked"}
        with pytest.raises(DriverNotReady) as e:
            await bench.bank.submit(sms())
        assert e.value.code == "modem:budget" and e.value.retry_after == pytest.approx(60)
        assert bench.bank.health().state is RouteState.DOWN
        clock.advance(60)
        await bench.bank.submit(sms())
        assert sum(m["sent_today"] for m in bench.bank.health().members.values()) == 3


async def test_work_goes_to_the_least_loaded_modem(open_bench: BenchFactory) -> None:
    bench = await open_bench(2)
    for _ in range(4):
        await bench.bank.submit(sms())
    assert [len(e.sent) for e in bench.emulators] == [2, 2]
    # Two at once: each modem takes one, never two sends on one modem.
    await asyncio.gather(bench.bank.submit(sms("x")), bench.bank.submit(sms("y")))
    assert sorted(e.sent[-1].text for e in bench.emulators) == ["x", "y"]
