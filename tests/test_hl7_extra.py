"""Held-out messages (tests/data/hl7-extra/, written for this test, not from the shared
samples): an Epic-like v2.3 SIU timed by SCH-11, a v2.5.1 SIU timed by AIS/AIL/AIP
only, an S14 cancelling through SCH-25, an A08 changing the phone, an ORU with OBR-25
P then F, an RDE with TQ1 times of day, escapes in names with home/work/mobile
numbers, and an ISO 8859-1 message (MSH-18 8859/1) with ü and ß. Each goes through the
running gateway's listener from python-hl7's client (in the file's own charset), gets
an ACK that hl7apy's strict validation takes, and has the effect it should."""

from __future__ import annotations

import asyncio
import codecs
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import hl7
import hl7.mllp
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message, parse_segments

from gateway.app import Gateway
from gateway.hl7.send_cmd import split_messages
from tests.conftest import GatewayFactory

EXTRA = Path(__file__).resolve().parent / "data" / "hl7-extra"
TIMEOUT = 10.0

IFACES = {
    "interfaces": [
        {
            "name": "epic",
            "listen": "127.0.0.1:0",
            "timing_source": "sch11",
            "time_zone": "America/Chicago",
        },
        {"name": "cerner", "listen": "127.0.0.1:0", "timing_source": "ais"},
        {"name": "ehr", "listen": "127.0.0.1:0", "time_zone": "UTC"},
    ]
}


async def send(gw: Gateway, iface: str, name: str, encoding: str = "utf-8") -> list[str]:
    """Every message of the file from python-hl7's client; the ACK codes (MSA-1)."""
    assert gw.hl7 is not None
    port = gw.hl7.listeners[iface].port
    messages = split_messages((EXTRA / name).read_bytes().decode(encoding).encode())
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port, encoding=encoding)
    codes = []
    try:
        for text in messages:
            writer.writemessage(hl7.parse(text))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), TIMEOUT)
            strict(str(ack))
            assert str(ack.segment("MSA")[2]) == str(hl7.parse(text).segment("MSH")[10])
            codes.append(str(ack.segment("MSA")[1]))
    finally:
        writer.close()
        await writer.wait_closed()
    return codes


def strict(ack: str) -> None:
    """hl7apy's strict validation. Before v2.3.1 MSH-9 has no structure component, from
    which hl7apy would learn the message's name: it is given (ACK) instead."""
    version = ack.split("\r", 1)[0].split("|")[11]
    if version not in ("2.1", "2.2", "2.3"):
        parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT, force_validation=True)
        return
    assert len(ack.split("\r", 1)[0].split("|")[8].split("^")) == 2  # ACK^<event>
    message = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    message.children = parse_segments(
        ack, version=version, validation_level=VALIDATION_LEVEL.STRICT
    )
    message.validate()


async def rows(gw: Gateway, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await gw.store.reader.all(sql, args)]


async def contact_of(gw: Gateway, source: str) -> list[bytes]:
    found = await rows(gw, "SELECT contact_idx FROM patients WHERE source = ?", source)
    return [r[0] for r in found]


def at(text: str, zone: str) -> float:
    return datetime.strptime(text, "%Y%m%d%H%M").replace(tzinfo=ZoneInfo(zone)).timestamp()


async def test_epic_v23_sch11_then_an_a08_that_changes_the_phone(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(hl7=IFACES)
    assert await send(gw, "epic", "epic-siu-s12-v23.hl7") == ["AA"]
    [(status, start)] = await rows(gw, "SELECT status, start_at FROM appointments")
    assert status == "booked" and start == at("202702031015", "America/Chicago")
    assert await contact_of(gw, "epic") == [gw.store.blind_index("+12175550188")]  # the CP
    assert await send(gw, "epic", "adt-a08-phone-change.hl7") == ["AA"]
    assert await contact_of(gw, "epic") == [gw.store.blind_index("+12175550199")]


async def test_ais_timing_then_an_s14_that_cancels_through_sch25(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(hl7=IFACES)
    assert await send(gw, "cerner", "siu-s12-v251-ais.hl7") == ["AA"]
    [(status, start)] = await rows(gw, "SELECT status, start_at FROM appointments")
    assert status == "booked"
    assert start == datetime.fromisoformat("2027-02-05T14:15:00-05:00").timestamp()
    assert await send(gw, "cerner", "siu-s14-cancel-sch25.hl7") == ["AA"]
    [(status, _)] = await rows(gw, "SELECT status, start_at FROM appointments")
    assert status == "cancelled"


async def test_an_oru_notifies_once_on_final_not_on_preliminary(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(hl7=IFACES)
    assert await send(gw, "ehr", "oru-r01-p-then-f.hl7") == ["AA", "AA"]
    states = await rows(gw, "SELECT state, error_text FROM hl7_messages ORDER BY received_at")
    assert states[0] == ("ignored", "no final or corrected result")
    assert states[1][0] == "mapped"
    notices = await rows(gw, "SELECT kind FROM clinical_notices")
    assert notices == [("result_available",)]


async def test_an_rde_with_tq1_times_puts_a_medication_schedule(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(hl7=IFACES)
    assert await send(gw, "ehr", "rde-o11-tq1-times.hl7") == ["AA"]
    [(times, start, end, state)] = await rows(
        gw, "SELECT times, start_date, end_date, state FROM medication_schedules"
    )
    assert state == "active" and start == "2027-01-20" and end == "2027-01-26"
    assert "08:00" in times and "20:00" in times


async def test_escaped_names_pick_the_mobile_among_home_work_and_mobile(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(hl7=IFACES)
    assert await send(gw, "ehr", "adt-a04-escapes-phones.hl7") == ["AA"]
    assert await contact_of(gw, "ehr") == [gw.store.blind_index("+13125550103")]


async def test_iso_8859_1_by_msh18_is_read_as_such(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(hl7=IFACES)
    assert (EXTRA / "adt-a28-8859-1.hl7").read_bytes().count("ü".encode("latin-1")) == 4
    assert await send(gw, "ehr", "adt-a28-8859-1.hl7", encoding="latin-1") == ["CA"]
    [(charset, flag, state)] = await rows(
        gw, "SELECT charset, charset_flag, state FROM hl7_messages"
    )
    assert (codecs.lookup(charset).name, flag, state) == ("iso8859-1", None, "mapped")
    assert await contact_of(gw, "ehr") == [gw.store.blind_index("+4915123456789")]
