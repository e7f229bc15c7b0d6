"""The modem driver through real pseudo-terminals against the modem emulator.

Each test starts emulated modems (drivers/modem/emulator.py) on ptys and a bank driver
on their tty paths; what the emulator received is decoded back with the PDU codec.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import DriverAuthFailed, ReceiptState, RouteState
from drivers.clock import FakeClock
from drivers.modem.driver import ModemState
from drivers.modem.emulator import PROFILES
from drivers.modem.emulator_sim import PIN_ATTEMPTS, PUK_ATTEMPTS
from gateway.inbound import join_parts
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER
from tests.modem_rig import BenchFactory, bench_factory, sms
from tests.sinks import RecordingSink

IMEI = "356938035643809"
IMSI = "214014455667788"
ICCID = "89340144556677889900"


@pytest.fixture
async def open_bench(tmp_path: Path) -> AsyncIterator[BenchFactory]:
    async with bench_factory(tmp_path) as factory:
        yield factory


async def test_initialises_and_reports_identity_masked(open_bench: BenchFactory) -> None:
    with capture_logs() as logs:
        bench = await open_bench(
            emulated=[{"imei": IMEI, "imsi": IMSI, "iccid": ICCID, "operator": "Op", "signal": 17}]
        )
    member = bench.member()
    assert member["state"] == "ready"
    assert (member["signal"], member["registration"], member["operator"]) == (
        17,
        "registered",
        "Op",
    )
    assert member["imei"] == "…3809" and member["iccid"] == "…9900"
    assert bench.bank.health().state is RouteState.UP
    text = repr(logs) + repr(bench.bank.health())
    for identifier in (IMEI, IMSI, ICCID):
        assert identifier not in text


async def test_sends_gsm7_as_a_pdu_with_receipt_request(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    result = await bench.bank.submit(sms("Your results are ready"))
    emulator = bench.emulators[0]
    await emulator.wait_sent(1)
    (part,) = emulator.sent
    assert (part.to, part.text, part.encoding) == (CANARY_NUMBER, "Your results are ready", "gsm7")
    assert part.request_report and part.concat is None
    assert result.carrier_ids[0].startswith("m1:")


async def test_sends_concatenated_ucs2_with_the_message_reference(
    open_bench: BenchFactory,
) -> None:
    bench = await open_bench()
    parts = ("Здравствуйте " * 5, "🙂 до свидания")
    result = await bench.bank.submit(sms(*parts, encoding="ucs2", reference=0x1234))
    emulator = bench.emulators[0]
    await emulator.wait_sent(2)
    assert [p.text for p in emulator.sent] == list(parts)
    assert all(p.encoding == "ucs2" for p in emulator.sent)
    concats = [p.concat for p in emulator.sent]
    assert [(c.ref, c.total, c.seq) for c in concats if c] == [(0x34, 2, 1), (0x34, 2, 2)]
    assert len(set(result.carrier_ids)) == 2


async def test_status_report_marks_the_part_delivered(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    result = await bench.bank.submit(sms("a" * 153, "b"))
    await bench.until(lambda: len(bench.sink.receipts) >= 2)
    assert {r.carrier_id: r.state for r in bench.sink.receipts} == dict.fromkeys(
        result.carrier_ids, ReceiptState.DELIVERED
    )
    # Stored reports are deleted once the sink has them.
    await bench.until(lambda: not bench.emulators[0].sim_messages)


async def test_failed_status_report(open_bench: BenchFactory) -> None:
    bench = await open_bench(emulated=[{"report_status": 0x41}])
    result = await bench.bank.submit(sms())
    await bench.until(lambda: len(bench.sink.receipts) >= 1)
    (receipt,) = bench.sink.receipts
    assert (receipt.carrier_id, receipt.state) == (result.carrier_ids[0], ReceiptState.FAILED)
    assert receipt.error_code == "tp-st:0x41"


async def test_inbound_is_stored_then_deleted_from_the_sim(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    with capture_logs() as logs:
        emulator.inject_inbound(CANARY_NUMBER, CANARY_BODY)
        await bench.until(lambda: len(bench.sink.inbounds) == 1 and not emulator.sim_messages)
        await bench.bank.submit(sms(CANARY_BODY, to=CANARY_NUMBER))
    (inbound,) = bench.sink.inbounds
    assert (inbound.sender, inbound.body) == (CANARY_NUMBER, CANARY_BODY)
    text = repr(logs) + repr(bench.bank.health())
    assert CANARY_DIGITS not in text and "CANARY" not in text


async def test_multipart_inbound_goes_part_by_part(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    body = "Please call the ward about your appointment. " * 8
    emulator.inject_inbound(CANARY_NUMBER, body, parts=3, order=[2, 0, 1])
    await bench.until(lambda: len(bench.sink.inbounds) == 3 and not emulator.sim_messages)
    # Each part goes to the gateway, which holds them on disk and joins them.
    parts = {i.part.seq: i for i in bench.sink.inbounds if i.part is not None}
    assert sorted(parts) == [1, 2, 3]
    sets = {(p.reference, p.ref_bits, p.total) for i in parts.values() if (p := i.part)}
    assert len(sets) == 1 and next(iter(sets))[2] == 3
    assert join_parts({seq: p.body for seq, p in parts.items()}, 3) == body


async def test_messages_left_on_the_sim_are_ingested_at_start(open_bench: BenchFactory) -> None:
    def preload(emulators: list[Any]) -> None:
        emulators[0].preload_sim(CANARY_NUMBER, "left over 1")
        emulators[0].preload_sim("+447700900123", "left over 2")

    bench = await open_bench(before_start=preload)
    emulator = bench.emulators[0]
    await bench.until(lambda: len(bench.sink.inbounds) == 2 and not emulator.sim_messages)
    assert sorted(i.body for i in bench.sink.inbounds) == ["left over 1", "left over 2"]


class FailingSink(RecordingSink):
    fail = True

    async def inbound(self, route: str, sms: Any) -> None:
        if self.fail:
            raise OSError("disk full")
        await super().inbound(route, sms)


async def test_inbound_stays_on_the_sim_until_the_sink_commits(open_bench: BenchFactory) -> None:
    sink = FailingSink()
    bench = await open_bench(sink=sink)
    emulator = bench.emulators[0]
    with capture_logs() as logs:
        emulator.inject_inbound(CANARY_NUMBER, CANARY_BODY)
        await bench.until(
            lambda: any(e["event"] == "modem_inbound_not_stored" for e in logs), within=5
        )
    assert len(emulator.sim_messages) == 1 and not sink.inbounds
    assert CANARY_DIGITS not in repr(logs) and "CANARY" not in repr(logs)
    sink.fail = False  # the gateway recovers: the rescan stores it, then deletes it
    await bench.until(lambda: len(sink.inbounds) == 1 and not emulator.sim_messages)
    assert sink.inbounds[0].body == CANARY_BODY


async def test_pin_from_a_file_is_entered_once(open_bench: BenchFactory, tmp_path: Path) -> None:
    pin_file = tmp_path / "sim.pin"
    pin_file.write_text("4321\n")
    bench = await open_bench(emulated=[{"pin": "4321"}], modems=[{"pin_file": str(pin_file)}])
    assert bench.modem().ready


async def test_an_accepted_pin_is_entered_again_after_a_power_cycle(
    open_bench: BenchFactory, tmp_path: Path
) -> None:
    pin_file = tmp_path / "sim.pin"
    pin_file.write_text("4321")
    bench = await open_bench(emulated=[{"pin": "4321"}], modems=[{"pin_file": str(pin_file)}])
    emulator = bench.emulators[0]
    reopens = bench.modem().counters["reopens"]
    await emulator.unplug()
    await emulator.replug()  # the SIM lost power: it asks for its PIN again
    await bench.until(lambda: bench.modem().counters["reopens"] > reopens and bench.modem().ready)
    assert emulator.sim.pin_attempts == PIN_ATTEMPTS


async def test_wrong_pin_stops_the_modem_without_a_second_try(
    open_bench: BenchFactory, tmp_path: Path
) -> None:
    pin_file = tmp_path / "sim.pin"
    pin_file.write_text("1111")
    with capture_logs() as logs:
        bench = await open_bench(
            emulated=[{"pin": "4321"}], modems=[{"pin_file": str(pin_file)}], ready=False
        )
        await bench.until(lambda: bench.modem().state is ModemState.SIM_ERROR)
    assert [e for e in logs if e["event"] == "modem_sim_problem"]
    assert "1111" not in repr(logs)
    assert bench.bank.health().state is RouteState.PARKED
    with pytest.raises(DriverAuthFailed):
        await bench.bank.submit(sms())
    # The modem stays stopped, even when the port comes back: no second PIN attempt.
    emulator = bench.emulators[0]
    await emulator.unplug()
    await emulator.replug()
    assert bench.modem().state is ModemState.SIM_ERROR
    assert emulator.sim.pin_attempts == PIN_ATTEMPTS - 1
    assert emulator.sim.puk_attempts == PUK_ATTEMPTS


async def test_restore_retries_the_sim_but_never_the_refused_pin(
    open_bench: BenchFactory, tmp_path: Path
) -> None:
    pin_file = tmp_path / "sim.pin"
    pin_file.write_text("1111")
    bench = await open_bench(
        emulated=[{"pin": "4321"}], modems=[{"pin_file": str(pin_file)}], ready=False
    )
    await bench.until(lambda: bench.modem().state is ModemState.SIM_ERROR)
    emulator = bench.emulators[0]
    # An operator presses Restore without fixing the PIN: the same PIN is not tried again.
    bench.bank.restore(bench.modem().name)
    await bench.until(lambda: bench.modem().state is ModemState.SIM_ERROR)
    assert "not retried" in bench.member()["detail"]
    assert emulator.sim.pin_attempts == PIN_ATTEMPTS - 1
    # With the right PIN in the file, Restore brings the modem up.
    pin_file.write_text("4321")
    bench.bank.restore(bench.modem().name)
    await bench.until(lambda: bench.modem().ready)
    assert emulator.sim.pin_attempts == PIN_ATTEMPTS


async def test_no_pin_configured_is_a_sim_error(open_bench: BenchFactory) -> None:
    bench = await open_bench(emulated=[{"pin": "4321"}], ready=False)
    await bench.until(lambda: bench.modem().state is ModemState.SIM_ERROR)
    assert "PIN" in bench.member()["detail"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("echo", [True, False])
async def test_every_profile_sends_receives_and_reports(
    open_bench: BenchFactory, profile: str, echo: bool
) -> None:
    bench = await open_bench(emulated=[{"profile": profile, "echo": echo, "iccid": ICCID}])
    assert bench.member()["iccid"] == "…9900"
    result = await bench.bank.submit(sms("a" * 153, "€uro"))
    bench.emulators[0].inject_inbound(CANARY_NUMBER, CANARY_BODY)
    await bench.until(lambda: len(bench.sink.receipts) == 2 and len(bench.sink.inbounds) == 1)
    assert {r.carrier_id for r in bench.sink.receipts} == set(result.carrier_ids)
    assert [p.text for p in bench.emulators[0].sent] == ["a" * 153, "€uro"]


@pytest.mark.parametrize("profile", ["simcom-sim7600", "wavecom-fastrack"])
async def test_a_modem_that_restarts_by_itself_is_initialised_again(
    open_bench: BenchFactory, profile: str
) -> None:
    # SIMCom SIM7600 (*ATREADY) and Wavecom Fastrack (+WIND: 3): AT+CFUN=1,1 keeps the
    # port and prints the boot lines again.
    modem_clock = FakeClock()  # the emulator's: its restart takes no real time
    bench = await open_bench(
        emulated=[{"profile": profile, "clock": modem_clock, "send_latency": 0}]
    )
    modem = bench.modem()
    emulator = bench.emulators[0]
    opened = modem.counters["reopens"]
    emulator.after_reset_command()  # as if the firmware restarted on its own
    for _ in range(2):  # the shutdown, then the boot
        await modem_clock.wait_sleeping(1)
        modem_clock.advance(10)
    await bench.until(lambda: modem.counters["reopens"] > opened and modem.ready)
    await bench.bank.submit(sms("after the restart"))
    assert emulator.sent[-1].text == "after the restart"


async def test_direct_reports_and_messages_without_storage(open_bench: BenchFactory) -> None:
    # AT+CNMI mt=2, ds=1: +CMT and +CDS carry the PDU; nothing is stored on the SIM.
    bench = await open_bench(cnmi="2,2,0,1,0")
    result = await bench.bank.submit(sms())
    bench.emulators[0].inject_inbound(CANARY_NUMBER, CANARY_BODY, parts=2)
    await bench.until(lambda: len(bench.sink.receipts) == 1 and len(bench.sink.inbounds) == 2)
    assert bench.sink.receipts[0].carrier_id == result.carrier_ids[0]
    assert "".join(i.body for i in bench.sink.inbounds) == CANARY_BODY
    assert not bench.emulators[0].sim_messages
