"""The sans-I/O AT engine, fed byte streams as modems write them; time is a number."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modem.atcodec import (
    CTRL_Z,
    ESC,
    MAX_LINE,
    Abandoned,
    AtBusy,
    AtEngine,
    Event,
    Final,
    Garbled,
    PromptAnswered,
    Response,
    Stray,
    Timeout,
    Unsolicited,
    command_name,
    parse_final,
)
from drivers.modem.errors import Kind

T0 = 100.0
PDU = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"


def started(command: str, pdu: str | None = None, timeout: float = 5.0) -> AtEngine:
    engine = AtEngine()
    engine.send(command, now=T0, timeout=timeout, pdu=pdu, token="tok")
    assert engine.data_to_send() == command.encode() + b"\r"
    return engine


def only(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


def test_ok_with_intermediate_lines() -> None:
    engine = started("AT+CGMI")
    event = only(engine.receive_data(b"\r\nQuectel\r\n\r\nOK\r\n", T0))
    assert isinstance(event, Response)
    assert event.final.ok and event.lines == ("Quectel",) and event.token == "tok"
    assert not engine.busy and engine.next_deadline() is None


def test_echo_is_dropped() -> None:
    engine = started("AT+CSQ")
    event = only(engine.receive_data(b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n", T0))
    assert isinstance(event, Response) and event.lines == ("+CSQ: 20,99",)


@pytest.mark.parametrize(
    ("line", "final"),
    [
        ("ERROR", Final("error")),
        ("+CME ERROR: 14", Final("cme", 14)),
        ("+CME ERROR: SIM busy", Final("cme", 14)),
        ("+CME ERROR: SIM PIN required", Final("cme", 11)),
        ("+CMS ERROR: 331", Final("cms", 331)),
        ("+CMS ERROR: no network service", Final("cms", 331)),
        ("+CMS ERROR: Unassigned (unallocated) number", Final("cms", 1)),
        ("+CMS ERROR: SIM not inserted", Final("cms", 310)),
        ("+CMS ERROR: something new", Final("cms", None)),
        ("COMMAND NOT SUPPORT", Final("error")),
    ],
)
def test_error_results_numeric_and_verbose(line: str, final: Final) -> None:
    engine = started("AT+CPIN?")
    event = only(engine.receive_data(f"\r\n{line}\r\n".encode(), T0))
    assert isinstance(event, Response)
    assert (event.final.kind, event.final.number) == (final.kind, final.number)


def test_error_classification() -> None:
    assert Final("cme", 14).info().kind is Kind.SIM_BUSY
    assert Final("cme", 12).info().kind is Kind.SIM
    assert Final("cms", 331).info().code == "cms:331"
    assert Final("cms", 331).info().kind is Kind.TRANSIENT
    assert Final("cms", 1).info().kind is Kind.PERMANENT
    assert Final("cms", 330).info().kind is Kind.MODEM
    assert Final("error").info().code == "at:error"
    assert Final("cms", 600).info().kind is Kind.TRANSIENT
    with pytest.raises(ValueError, match="OK"):
        Final("ok").info()


def test_prompt_writes_pdu_and_ctrl_z() -> None:
    engine = started("AT+CMGS=23", pdu=PDU)
    event = only(engine.receive_data(b"\r\n> ", T0 + 1))
    assert isinstance(event, PromptAnswered)
    assert engine.data_to_send() == PDU.encode() + CTRL_Z
    assert engine.next_deadline() == T0 + 1 + 5.0  # the answer gets its own timeout
    event = only(engine.receive_data(b"\r\n+CMGS: 7\r\n\r\nOK\r\n", T0 + 2))
    assert isinstance(event, Response) and event.final.ok and event.lines == ("+CMGS: 7",)


def test_prompt_with_echo_of_command_and_pdu() -> None:
    engine = started("AT+CMGS=23", pdu=PDU)
    events = engine.receive_data(b"AT+CMGS=23\r\r\n> ", T0)
    assert [type(e) for e in events] == [PromptAnswered]
    engine.data_to_send()
    events = engine.receive_data(PDU.encode() + b"\x1a\r\n+CMGS: 8\r\n\r\nOK\r\n", T0)
    response = only(events)
    assert isinstance(response, Response) and response.lines == ("+CMGS: 8",)


def test_urc_between_prompt_and_pdu_and_mid_response() -> None:
    engine = started("AT+CMGS=23", pdu=PDU)
    stream = (
        b'\r\n+CMTI: "SM",3\r\n\r\n> \r\n+CMTI: "SM",4\r\n\r\n+CMGS: 9\r\n^RSSI: 17\r\n\r\nOK\r\n'
    )
    events = engine.receive_data(stream, T0)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Unsolicited", "PromptAnswered", "Unsolicited", "Unsolicited", "Response"]
    urcs = [e for e in events if isinstance(e, Unsolicited)]
    assert [(u.name, u.value) for u in urcs] == [
        ("+CMTI", '"SM",3'),
        ("+CMTI", '"SM",4'),
        ("^RSSI", "17"),
    ]
    response = events[-1]
    assert isinstance(response, Response) and response.lines == ("+CMGS: 9",)


def test_own_prefix_is_an_answer_not_a_urc() -> None:
    engine = started("AT+CREG?")
    events = engine.receive_data(b"\r\n+CREG: 1\r\n+CREG: 0,1\r\nOK\r\n", T0)
    # Inside AT+CREG? both lines are the answer; outside they would be URCs.
    response = only(events)
    assert isinstance(response, Response) and response.lines == ("+CREG: 1", "+CREG: 0,1")
    idle = AtEngine()
    urc = only(idle.receive_data(b"\r\n+CREG: 5\r\n", T0))
    assert isinstance(urc, Unsolicited) and urc.name == "+CREG" and urc.value == "5"


def test_cmt_and_cds_carry_their_pdu_line() -> None:
    engine = AtEngine()
    events = engine.receive_data(b"\r\n+CMT: ,24\r\n07911326040000F0\r\n+CDS: 25\r\n0006AB\r\n", T0)
    assert [(e.name, e.value, e.pdu) for e in events if isinstance(e, Unsolicited)] == [
        ("+CMT", ",24", "07911326040000F0"),
        ("+CDS", "25", "0006AB"),
    ]


def test_cmt_without_pdu_line_is_still_reported() -> None:
    engine = AtEngine()
    events = engine.receive_data(b"+CMT: ,24\r\nOK\r\n", T0)
    assert [type(e).__name__ for e in events] == ["Unsolicited", "Stray"]
    first = events[0]
    assert isinstance(first, Unsolicited) and (first.name, first.pdu) == ("+CMT", None)


def test_a_notification_between_cmt_and_its_pdu_is_not_the_pdu() -> None:
    engine = AtEngine()
    events = engine.receive_data(b"+CMT: ,24\r\nRING\r\n^CEND:1,0,104,16\r\n0791AB\r\n", T0)
    assert [(type(e).__name__, getattr(e, "name", "")) for e in events] == [
        ("Unsolicited", "RING"),
        ("Unsolicited", "^CEND"),
        ("Unsolicited", "+CMT"),
    ]
    last = events[-1]
    assert isinstance(last, Unsolicited) and last.pdu == "0791AB"


@pytest.mark.parametrize(
    "line",
    [
        "RDY",
        "SMS DONE",
        "*ATREADY",
        "*ATREADY: 1",
        "^BOOT:123,0,0,0,72",
        "+QIND: SMS DONE",
        "+CPIN: READY",
    ],
)
def test_boot_urcs(line: str) -> None:
    engine = started("AT+CSQ")
    events = engine.receive_data(f"\r\n{line}\r\n+CSQ: 5,99\r\nOK\r\n".encode(), T0)
    assert isinstance(events[0], Unsolicited) and isinstance(events[1], Response)


def test_timeout_in_prompt_phase_cancels_with_esc() -> None:
    engine = started("AT+CMGS=23", pdu=PDU, timeout=5)
    assert engine.on_timer(T0 + 4.9) == []
    event = only(engine.on_timer(T0 + 5))
    assert isinstance(event, Timeout) and not event.pdu_written
    assert engine.data_to_send() == ESC
    assert not engine.busy


def test_timeout_after_pdu_written_says_so() -> None:
    engine = started("AT+CMGS=23", pdu=PDU, timeout=5)
    engine.receive_data(b"> ", T0 + 1)
    engine.data_to_send()
    event = only(engine.on_timer(T0 + 6))
    assert isinstance(event, Timeout) and event.pdu_written
    assert engine.data_to_send() == b""
    late = only(engine.receive_data(b"\r\n+CMGS: 4\r\n\r\nOK\r\n", T0 + 7)[1:])
    assert isinstance(late, Stray)


def test_abandon_reports_the_command() -> None:
    engine = started("AT+CMGS=23", pdu=PDU)
    engine.receive_data(b"> ", T0)
    event = only(engine.abandon())
    assert isinstance(event, Abandoned) and event.pdu_written and event.token == "tok"
    assert not engine.busy


def test_one_command_in_flight() -> None:
    engine = started("AT")
    with pytest.raises(AtBusy):
        engine.send("AT", now=T0, timeout=1)


def test_garbled_lines_never_crash() -> None:
    engine = started("AT+COPS?")
    events = engine.receive_data(b'\r\n\xff\xfe\x80\r\n+COPS: 0,0,"Op"\r\nOK\r\n', T0)
    assert isinstance(events[0], Garbled) and events[0].reason == "not_utf8"
    assert isinstance(events[1], Response) and events[1].lines == ('+COPS: 0,0,"Op"',)
    long = only(AtEngine().receive_data(b"A" * (MAX_LINE + 1), T0))
    assert isinstance(long, Garbled) and long.reason == "too_long"


def test_reprs_hide_values() -> None:
    urc = Unsolicited("+CMT", ",24", "07911326")
    assert "07911326" not in repr(urc) and ",24" not in repr(urc)
    assert "secret" not in repr(Final("cme", None, "secret"))


def test_command_names_and_finals() -> None:
    assert command_name("AT+CMGS=23") == "+CMGS"
    assert command_name("AT^SYSINFO") == "^SYSINFO"
    assert command_name("ATE0") == "E"
    assert parse_final("OK") == Final("ok")
    assert parse_final("+CMGS: 3") is None


# A realistic session: echo on, boot URCs, a CMGS with URCs interleaved, a CMGR,
# junk bytes, and a +CMT/+CDS pair. Each segment is what the modem writes once the
# command before it was sent; fed in any chunking it must give the same events.
STREAM_COMMANDS = [
    ("AT+CMGS=23", PDU),
    ("AT+CMGR=3", None),
    ("AT+CSQ", None),
    ("AT+CMGL=4", None),
]
SEGMENTS = [
    b"\r\nRDY\r\n"
    b'AT+CMGS=23\r\r\n+CMTI: "SM",3\r\n\r\n> ' + PDU.encode() + b"\x1a"
    b"\r\n^RSSI: 9\r\n\r\n+CMGS: 12\r\n\r\nOK\r\n",
    b'AT+CMGR=3\r\r\n+CMGR: 0,,24\r\n07911326040000F0\r\n+CDSI: "SM",4\r\n\r\nOK\r\n',
    b"\xff\x00garbage\r\n+CMT: ,24\r\n0791AB\r\n"
    b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\n+CMS ERROR: no network service\r\n",
    # Vendor notifications between +CMGL headers and their PDUs, and between a +CMT
    # and its PDU (Huawei call progress, Wavecom +WIND, HANGUP).
    b"AT+CMGL=4\r\r\n+CMGL: 1,1,,24\r\n^CEND:1,0,104,16\r\n07911326040000F0\r\n"
    b"+CMGL: 2,0,,24\r\n\r\n^ORIG:1,0\r\n\r\n^CONF:1\r\n^CONN:1,0\r\n0791AB\r\n"
    b"+CMT: ,24\r\n+WIND: 4\r\nHANGUP: 1\r\n0791CD\r\n\r\nOK\r\n",
]


def run_stream(chunked: list[list[bytes]]) -> list[Event]:
    """Send each command, then feed its segment's chunks."""
    engine = AtEngine()
    events: list[Event] = []
    for (command, pdu), chunks in zip(STREAM_COMMANDS, chunked, strict=True):
        assert not engine.busy
        engine.send(command, now=T0, timeout=5, pdu=pdu)
        for chunk in chunks:
            events += engine.receive_data(chunk, T0)
    return events


def test_stream_events_in_one_piece() -> None:
    events = run_stream([[seg] for seg in SEGMENTS])
    names = [type(e).__name__ for e in events]
    assert names == [
        "Unsolicited",  # RDY
        "Unsolicited",  # +CMTI
        "PromptAnswered",
        "Unsolicited",  # ^RSSI
        "Response",  # +CMGS
        "Unsolicited",  # +CDSI mid CMGR
        "Response",  # CMGR
        "Garbled",
        "Unsolicited",  # +CMT with its PDU
        "Response",  # CSQ ending in CMS 331
        "Unsolicited",  # ^CEND
        "Unsolicited",  # ^ORIG
        "Unsolicited",  # ^CONF
        "Unsolicited",  # ^CONN
        "Unsolicited",  # +WIND, while the +CMT waits for its PDU
        "Unsolicited",  # HANGUP
        "Unsolicited",  # +CMT with its PDU
        "Response",  # CMGL with only its own lines
    ]
    cmgr = events[6]
    assert isinstance(cmgr, Response) and cmgr.lines == ("+CMGR: 0,,24", "07911326040000F0")
    csq = events[9]
    assert isinstance(csq, Response) and csq.final == Final("cms", 331)
    notified = [e.name for e in events[10:16] if isinstance(e, Unsolicited)]
    assert notified == ["^CEND", "^ORIG", "^CONF", "^CONN", "+WIND", "HANGUP"]
    cmt = events[16]
    assert isinstance(cmt, Unsolicited) and (cmt.name, cmt.pdu) == ("+CMT", "0791CD")
    cmgl = events[17]
    assert isinstance(cmgl, Response) and cmgl.lines == (
        "+CMGL: 1,1,,24",
        "07911326040000F0",
        "+CMGL: 2,0,,24",
        "0791AB",
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    chunked = []
    for segment in SEGMENTS:
        cuts = data.draw(st.lists(st.integers(0, len(segment)), max_size=12))
        points = sorted({0, len(segment), *cuts})
        chunked.append([segment[a:b] for a, b in itertools.pairwise(points)])
    assert run_stream(chunked) == run_stream([[seg] for seg in SEGMENTS])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, busy: bool) -> None:
    engine = AtEngine()
    if busy:
        engine.send("AT+CMGS=10", now=T0, timeout=1, pdu="00")
    engine.receive_data(data, T0)
    engine.on_timer(T0 + 2)
    engine.abandon()
