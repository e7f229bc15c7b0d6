"""Real phones' records through the real pty path: the emulator holds them on its SIM
or delivers them, the driver reads them with AT+CMGL/AT+CMGR, and nothing leaves the
SIM before the gateway committed it (or quarantined it). Vectors: gammu's published
dumps (see tests/test_modem_records.py for each one's source)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.modem.emulator import EmulatedModem
from drivers.modem.emulator_sim import MessageStatus
from drivers.modem.pdu import encode_submit
from tests.modem_rig import BenchFactory, HoldingSink, bench_factory
from tests.sinks import RecordingSink
from tests.test_modem_records import (
    ALL_FF,
    CONCAT_GSM7,
    PAST_UDL,
    PLAIN_GSM7,
    STORED_SUBMIT,
    TRUNCATED_UCS2,
    ff_padded,
)


@pytest.fixture
async def open_bench(tmp_path: Path) -> AsyncIterator[BenchFactory]:
    async with bench_factory(tmp_path) as factory:
        yield factory


def preloading(*records: tuple[str, MessageStatus]) -> Any:
    def preload(emulators: list[EmulatedModem]) -> None:
        for pdu, status in records:
            emulators[0].preload_record(pdu, status)

    return preload


async def test_padded_and_overlong_records_are_stored_and_deleted_only_after_commit(
    open_bench: BenchFactory,
) -> None:
    sink = HoldingSink(gate=asyncio.Event())
    bench = await open_bench(
        sink=sink,
        before_start=preloading(
            (PAST_UDL, MessageStatus.REC_UNREAD),
            (ff_padded(PLAIN_GSM7), MessageStatus.REC_READ),
            (ff_padded(CONCAT_GSM7), MessageStatus.REC_UNREAD),
        ),
    )
    emulator = bench.emulators[0]
    await bench.until(lambda: sink.waiting == 1)
    assert len(emulator.sim_messages) == 3  # the gateway has not committed: all still there
    assert sink.gate is not None
    sink.gate.set()
    await bench.until(lambda: len(sink.inbounds) == 3 and not emulator.sim_messages)
    bodies = sorted(i.body for i in sink.inbounds)
    assert bodies[0].startswith("Ahoj pavle")
    assert bodies[1:] == ["Ok sir", "llamada perdida de: +34617653167 on 07/08  at  11:19."]
    assert not sink.quarantined


async def test_a_new_padded_record_read_with_cmgr_is_stored(open_bench: BenchFactory) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    emulator.inject_record(ff_padded(PLAIN_GSM7))  # +CMTI, then AT+CMGR of the record
    await bench.until(lambda: len(bench.sink.inbounds) == 1 and not emulator.sim_messages)
    assert bench.sink.inbounds[0].body == "Ok sir"


async def test_an_undecodable_record_is_quarantined_before_it_is_deleted(
    open_bench: BenchFactory,
) -> None:
    sink = HoldingSink(gate=asyncio.Event())
    with capture_logs() as logs:
        bench = await open_bench(
            sink=sink, before_start=preloading((TRUNCATED_UCS2, MessageStatus.REC_UNREAD))
        )
        emulator = bench.emulators[0]
        await bench.until(lambda: sink.waiting == 1)
        assert list(emulator.sim_messages.values()) == [TRUNCATED_UCS2]
        assert sink.gate is not None
        sink.gate.set()
        await bench.until(lambda: not emulator.sim_messages)
    assert sink.quarantined == [TRUNCATED_UCS2] and not sink.inbounds
    assert bench.member()["quarantined"] == 1
    (alert,) = [e for e in logs if e["event"] == "modem_pdu_undecodable"]
    assert alert["log_level"] == "error" and alert["index"] == 1
    assert TRUNCATED_UCS2[20:40] not in repr(logs)


class RefusingQuarantine(HoldingSink):
    refuse = True

    async def quarantine(self, route: str, source: str, record: str) -> None:
        if self.refuse:
            raise OSError("disk full")
        await super().quarantine(route, source, record)


async def test_a_quarantine_that_fails_keeps_the_record_and_tries_again(
    open_bench: BenchFactory,
) -> None:
    sink = RefusingQuarantine()
    with capture_logs() as logs:
        bench = await open_bench(
            sink=sink, before_start=preloading((TRUNCATED_UCS2, MessageStatus.REC_READ))
        )
        emulator = bench.emulators[0]
        await bench.until(lambda: any(e["event"] == "modem_inbound_not_stored" for e in logs))
    assert list(emulator.sim_messages.values()) == [TRUNCATED_UCS2]
    sink.refuse = False  # the rescan quarantines it, then deletes it
    await bench.until(lambda: sink.quarantined == [TRUNCATED_UCS2] and not emulator.sim_messages)


async def test_without_a_quarantine_an_undecodable_record_stays(open_bench: BenchFactory) -> None:
    sink = RecordingSink()
    with capture_logs() as logs:
        bench = await open_bench(
            sink=sink,
            before_start=preloading(
                (TRUNCATED_UCS2, MessageStatus.REC_UNREAD), (PLAIN_GSM7, MessageStatus.REC_UNREAD)
            ),
        )
        emulator = bench.emulators[0]
        await bench.until(lambda: len(sink.inbounds) == 1 and len(emulator.sim_messages) == 1)
    assert list(emulator.sim_messages.values()) == [TRUNCATED_UCS2]
    assert any(e["event"] == "modem_pdu_undecodable" for e in logs)


async def test_saved_submits_and_stored_slots_are_skipped_never_deleted(
    open_bench: BenchFactory,
) -> None:
    ours = encode_submit(to="+12025550147", text="draft", encoding="gsm7").hex
    kept = [
        (ours, MessageStatus.STO_UNSENT),
        (ours, MessageStatus.STO_SENT),
        (STORED_SUBMIT, MessageStatus.STO_SENT),  # gammu at-sms/02
        (STORED_SUBMIT, MessageStatus.REC_READ),  # a SUBMIT whatever its status says
        (ALL_FF, MessageStatus.STO_UNSENT),  # gammu at-sms-failing/33, `+CMGR: 2,...`
    ]
    bench = await open_bench(
        before_start=preloading(*kept, (PLAIN_GSM7, MessageStatus.REC_UNREAD)),
    )
    emulator = bench.emulators[0]
    await bench.until(lambda: len(bench.sink.inbounds) == 1 and 6 not in emulator.sim_messages)
    assert list(emulator.sim_messages.values()) == [pdu for pdu, _ in kept]
    assert not bench.sink.quarantined


NOTIFICATIONS = ["^CEND:1,0,104,16", "^ORIG:1,0", "^CONF:1", "^CONN:1,0", "+WIND: 5,1", "HANGUP: 1"]


@pytest.mark.parametrize("notification", NOTIFICATIONS)
async def test_a_notification_between_header_and_pdu_is_not_taken_as_the_pdu(
    open_bench: BenchFactory, notification: str
) -> None:
    def preload(emulators: list[EmulatedModem]) -> None:
        emulators[0].preload_record(PLAIN_GSM7)
        emulators[0].interleave_next("AT+CMGL", notification)  # after the first +CMGL:

    bench = await open_bench(before_start=preload)
    emulator = bench.emulators[0]
    await bench.until(lambda: len(bench.sink.inbounds) == 1 and not emulator.sim_messages)
    assert bench.sink.inbounds[0].body == "Ok sir" and not bench.sink.quarantined
    # The same between +CMGR's header and its PDU, for a message that arrives now.
    emulator.interleave_next("AT+CMGR", notification)
    emulator.inject_record(PAST_UDL)
    await bench.until(lambda: len(bench.sink.inbounds) == 2 and not emulator.sim_messages)
    assert bench.sink.inbounds[1].body.startswith("llamada perdida")
    assert not bench.sink.quarantined


async def test_wavecom_starts_though_cpin_gets_no_ok(open_bench: BenchFactory) -> None:
    with capture_logs() as logs:
        bench = await open_bench(
            emulated=[{"profile": "wavecom-fastrack"}],
            before_start=preloading((PLAIN_GSM7, MessageStatus.REC_UNREAD)),
        )
    emulator = bench.emulators[0]
    assert bench.member()["state"] == "ready" and bench.member()["model"].startswith("MULTIBAND")
    assert any(e["event"] == "modem_cpin_without_ok" for e in logs)
    await bench.until(lambda: len(bench.sink.inbounds) == 1 and not emulator.sim_messages)


async def test_an_undecodable_record_given_directly_is_quarantined(
    open_bench: BenchFactory,
) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    emulator.inject_record(TRUNCATED_UCS2, store=False)  # +CMT: nothing on the SIM
    emulator.inject_record(ff_padded(PLAIN_GSM7), store=False)
    await bench.until(lambda: bench.sink.quarantined == [TRUNCATED_UCS2])
    await bench.until(lambda: [i.body for i in bench.sink.inbounds] == ["Ok sir"])


@pytest.mark.parametrize("notification", NOTIFICATIONS)
async def test_a_notification_between_cmt_and_its_pdu_is_not_taken_as_the_pdu(
    open_bench: BenchFactory, notification: str
) -> None:
    bench = await open_bench()
    emulator = bench.emulators[0]
    emulator.interleave_next("+CMT", notification)
    emulator.inject_record(PLAIN_GSM7, store=False)
    await bench.until(lambda: [i.body for i in bench.sink.inbounds] == ["Ok sir"])
    assert not bench.sink.quarantined
