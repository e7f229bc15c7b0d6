"""The modem emulator over its real pseudo-terminal: a test terminal opens the slave end
and speaks plain AT bytes to it. Time is a FakeClock; nothing sleeps."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from drivers.modem.emulator import PROFILES, SHUTDOWN_SECONDS, EmulatedModem, ModemBankEmulator
from drivers.modem.pdu import (
    SmsDeliver,
    StatusReport,
    decode_incoming,
    encode_submit,
)

NUMBER = "+12025550147"
BODY = "CANARY potassium 6.9 mmol/L call ward 7B"
FINAL = rb"\r\n(OK|ERROR|\+CM[ES] ERROR: [^\r]*)\r\n"


class Terminal:
    """The host side of a modem's serial port, as a driver would open it."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd, termios.TCSANOW)  # not TCSAFLUSH: keep the boot lines
        self.buffer = bytearray()
        self.changed = asyncio.Event()
        self.closed: str | None = None  # "EOF" or the errno name once the port is gone
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as error:
            self.closed = errno.errorcode.get(error.errno or 0, "OSError")
            data = b""
        if data:
            self.buffer += data
        else:
            self.closed = self.closed or "EOF"
            self._loop.remove_reader(self.fd)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 2.0) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def expect(self, pattern: bytes) -> bytes:
        """Everything up to and including the first match of `pattern`, consumed."""
        regex = re.compile(pattern)
        await self.wait_for(lambda: regex.search(self.buffer) is not None)
        match = regex.search(self.buffer)
        assert match is not None
        taken = bytes(self.buffer[: match.end()])
        del self.buffer[: match.end()]
        return taken

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    async def command(self, line: str) -> list[str]:
        """Send `line`; the response's non-empty lines up to its final result."""
        self.send(line.encode() + b"\r")
        return lines(await self.expect(FINAL))

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.closed is None:
            self._loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = -1


def link_target_exists(link: Path) -> bool:
    return link.is_symlink() and Path(os.readlink(link)).exists()


def lines(data: bytes) -> list[str]:
    return [line for line in data.decode("latin-1").split("\r\n") if line]


ModemFactory = Callable[..., Awaitable[tuple[EmulatedModem, Terminal]]]


@pytest.fixture
async def open_modem(clock: FakeClock) -> AsyncIterator[ModemFactory]:
    """Start a modem on the fake clock and open its port; boot lines are read."""
    opened: list[tuple[EmulatedModem, Terminal]] = []

    async def factory(
        profile: str = "quectel-ec25",
        *,
        preload: Callable[[EmulatedModem], Any] | None = None,
        **kwargs: Any,
    ) -> tuple[EmulatedModem, Terminal]:
        kwargs.setdefault("echo", False)
        kwargs.setdefault("send_latency", 3.0)
        modem = EmulatedModem(profile, clock=clock, **kwargs)
        if preload is not None:
            preload(modem)
        await modem.start()
        terminal = Terminal(modem.path)
        opened.append((modem, terminal))
        await terminal.expect(boot_done(modem))
        return modem, terminal

    yield factory
    for modem, terminal in opened:
        terminal.close()
        await modem.aclose()


def boot_done(modem: EmulatedModem) -> bytes:
    last = modem.profile.boot_urcs[-1].replace("{cpin}", "[A-Z ]+")
    return re.escape(last).replace(re.escape("[A-Z ]+"), "[A-Z ]+").encode() + rb"\r\n"


async def submit(terminal: Terminal, hex_pdu: str, tpdu_length: int) -> None:
    """Type AT+CMGS and the PDU once the prompt is there."""
    terminal.send(f"AT+CMGS={tpdu_length}\r".encode())
    await terminal.expect(rb"\r\n> ")
    terminal.send(hex_pdu.encode() + b"\x1a")


# ------------------------------------------------------------------ boot and identity


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_boot_lines_and_identity(profile: str, clock: FakeClock) -> None:
    modem = EmulatedModem(profile, clock=clock, echo=False, imei="490154203237518")
    await modem.start()
    terminal = Terminal(modem.path)
    try:
        booted = lines(await terminal.expect(boot_done(modem)))
        expected = [line.replace("{cpin}", "READY") for line in modem.profile.boot_urcs]
        assert booted == expected
        assert await terminal.command("AT") == ["OK"]
        spec = PROFILES[profile]
        assert await terminal.command("AT+CGMI") == [spec.manufacturer, "OK"]
        assert await terminal.command("AT+CGMM") == [spec.model, "OK"]
        assert await terminal.command("AT+CGMR") == [spec.revision, "OK"]
        assert await terminal.command("AT+CGSN") == ["490154203237518", "OK"]
        assert await terminal.command("AT+CIMI") == ["001010123456789", "OK"]
        for command in spec.iccid_commands:
            reply = await terminal.command("AT" + command)
            assert reply[0].endswith(": 8988211000000000017") and reply[-1] == "OK"
    finally:
        terminal.close()
        await modem.aclose()


async def test_echo_follows_ate(open_modem: ModemFactory) -> None:
    _, terminal = await open_modem(echo=True)
    terminal.send(b"AT\r")
    assert await terminal.expect(FINAL) == b"AT\r\r\nOK\r\n"
    terminal.send(b"ATE0\r")
    assert await terminal.expect(FINAL) == b"ATE0\r\r\nOK\r\n"
    terminal.send(b"AT\r")
    assert await terminal.expect(FINAL) == b"\r\nOK\r\n"


async def test_cmee_words_errors(open_modem: ModemFactory) -> None:
    _, terminal = await open_modem()
    assert await terminal.command('AT+CPIN="1234"') == ["ERROR"]  # CMEE=0: plain
    assert await terminal.command("AT+CMEE=1") == ["OK"]
    assert await terminal.command('AT+CPIN="1234"') == ["+CME ERROR: 3"]
    assert await terminal.command("AT+CMEE=2") == ["OK"]
    assert await terminal.command('AT+CPIN="1234"') == ["+CME ERROR: operation not allowed"]
    assert await terminal.command("AT+CMEE?") == ["+CMEE: 2", "OK"]
    assert await terminal.command("AT+NOSUCH") == ["ERROR"]
    assert await terminal.command("AT+CMGF=1") == ["ERROR"]  # text mode is not emulated


async def test_init_sequence_a_driver_sends(open_modem: ModemFactory) -> None:
    _, terminal = await open_modem()
    assert await terminal.command("AT+CMEE=1;+CMGF=0") == ["OK"]
    assert await terminal.command("AT+CNMI=2,1,0,1,0") == ["OK"]
    assert await terminal.command("AT+CNMI?") == ["+CNMI: 2,1,0,1,0", "OK"]
    assert await terminal.command('AT+CPMS="SM","SM","SM"') == ["+CPMS: 0,30,0,30,0,30", "OK"]
    assert await terminal.command('AT+CPMS="ME","ME","ME"') == ["+CPMS: 0,100,0,100,0,100", "OK"]
    assert await terminal.command('AT+CPMS="XX"') == ["+CMS ERROR: 302"]
    assert await terminal.command("AT+CSMS=1") == ["+CSMS: 1,1,1", "OK"]
    assert await terminal.command('AT+CSCS="GSM"') == ["OK"]
    assert await terminal.command("AT+CSQ") == ["+CSQ: 20,99", "OK"]
    assert await terminal.command("AT+COPS=3,0") == ["OK"]
    assert await terminal.command("AT+COPS?") == ['+COPS: 0,0,"Emulated",7', "OK"]
    assert await terminal.command("AT+COPS=3,2;+COPS?") == ['+COPS: 0,2,"00101",7', "OK"]
    assert await terminal.command("AT+CFUN?") == ["+CFUN: 1", "OK"]
    assert await terminal.command("AT+CNMA") == ["OK"]


# ------------------------------------------------------------------ SIM PIN


async def test_pin_flow(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem(pin="4711")
    assert await terminal.command("AT+CMEE=1") == ["OK"]
    assert await terminal.command("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert await terminal.command("AT+CIMI") == ["+CME ERROR: 11"]
    assert await terminal.command("AT+CMGL=4") == ["+CMS ERROR: 311"]
    assert await terminal.command('AT+CPIN="0000"') == ["+CME ERROR: 16"]
    assert modem.sim.pin_attempts == 2
    assert await terminal.command('AT+CPIN="4711"') == ["OK"]
    assert await terminal.command("AT+CPIN?") == ["+CPIN: READY", "OK"]
    assert modem.sim.pin_attempts == 3
    assert await terminal.command("AT+CIMI") == ["001010123456789", "OK"]


async def test_wrong_pins_lead_to_puk_that_survives_a_power_cycle(
    open_modem: ModemFactory,
) -> None:
    modem, terminal = await open_modem(pin="4711")
    await terminal.command("AT+CMEE=1")
    for _ in range(3):
        assert await terminal.command('AT+CPIN="0000"') == ["+CME ERROR: 16"]
    assert await terminal.command("AT+CPIN?") == ["+CPIN: SIM PUK", "OK"]
    assert await terminal.command("AT+CIMI") == ["+CME ERROR: 12"]
    terminal.close()
    await modem.replug()
    again = Terminal(modem.path)
    try:
        assert "+CPIN: SIM PUK" in lines(await again.expect(boot_done(modem)))
        assert await again.command('AT+CPIN="12345678","1234"') == ["OK"]
        assert await again.command("AT+CPIN?") == ["+CPIN: READY", "OK"]
    finally:
        again.close()


# ------------------------------------------------------------------ sending


async def test_send_with_status_report_as_cds(open_modem: ModemFactory, clock: FakeClock) -> None:
    modem, terminal = await open_modem(report_delay=2.0, first_message_ref=41)
    await terminal.command("AT+CNMI=2,1,0,1,0")
    pdu = encode_submit(to=NUMBER, text=BODY, encoding="gsm7", request_report=True)
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    await clock.wait_sleeping(1)  # the send latency: nothing answered yet
    assert terminal.buffer == b"" and modem.sent == []
    clock.advance(3.0)
    assert lines(await terminal.expect(FINAL)) == ["+CMGS: 41", "OK"]
    assert [(s.to, s.text, s.request_report) for s in modem.sent] == [(NUMBER, BODY, True)]
    assert modem.sent_refs == [41]
    await clock.wait_sleeping(1)
    clock.advance(2.0)
    header, hex_pdu = lines(await terminal.expect(rb"\+CDS: \d+\r\n[0-9A-F]+\r\n"))
    report = decode_incoming(hex_pdu)
    assert isinstance(report, StatusReport)
    assert (report.message_ref, report.recipient, report.outcome) == (41, NUMBER, "delivered")
    assert header == f"+CDS: {len(hex_pdu) // 2 - 1 - int(hex_pdu[:2], 16)}"


async def test_status_report_stored_with_cdsi(open_modem: ModemFactory, clock: FakeClock) -> None:
    _, terminal = await open_modem(report_delay=1.0, report_status=0x46, send_latency=0.5)
    await terminal.command("AT+CNMI=2,1,0,2,0")
    pdu = encode_submit(to=NUMBER, text="x", encoding="gsm7", request_report=True)
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    await clock.wait_sleeping(1)
    clock.advance(0.5)
    await terminal.expect(FINAL)
    await clock.wait_sleeping(1)
    clock.advance(1.0)
    assert lines(await terminal.expect(rb'\+CDSI: "SM",\d+\r\n')) == ['+CDSI: "SM",1']
    status, hex_pdu, final = await terminal.command("AT+CMGR=1")
    report = decode_incoming(hex_pdu)
    assert isinstance(report, StatusReport) and report.outcome == "failed"
    assert status.startswith("+CMGR: 0,,") and final == "OK"


async def test_escape_cancels_the_send(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    terminal.send(b"AT+CMGS=20\r")
    await terminal.expect(rb"> ")
    terminal.send(b"0011\x1b")
    assert lines(await terminal.expect(FINAL)) == ["OK"]
    assert modem.sent == []
    assert await terminal.command("AT") == ["OK"]


async def test_wrong_length_or_garbage_pdu_is_refused(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CMEE=1")
    pdu = encode_submit(to=NUMBER, text="hi", encoding="gsm7")
    await submit(terminal, pdu.hex, pdu.tpdu_length + 1)
    assert lines(await terminal.expect(FINAL)) == ["+CMS ERROR: 304"]
    await submit(terminal, "00ZZ", 10)
    assert lines(await terminal.expect(FINAL)) == ["+CMS ERROR: 304"]
    assert modem.sent == []


async def test_unregistered_modem_refuses_to_send(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CMEE=1")
    assert await terminal.command("AT+CREG=2") == ["OK"]
    assert await terminal.command("AT+CREG?") == ['+CREG: 2,1,"1A2B","01C3D4E5",7', "OK"]
    assert await terminal.command("AT+CEREG=1") == ["OK"]
    modem.set_registered(False)
    assert lines(await terminal.expect(rb"\+CEREG: 2\r\n")) == ["+CREG: 2", "+CEREG: 2"]
    assert await terminal.command("AT+COPS?") == ["+COPS: 0", "OK"]
    pdu = encode_submit(to=NUMBER, text="hi", encoding="gsm7")
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    assert lines(await terminal.expect(FINAL)) == ["+CMS ERROR: 331"]
    modem.set_registered(True)
    assert lines(await terminal.expect(rb"\+CEREG: 1\r\n")) == [
        '+CREG: 1,"1A2B","01C3D4E5",7',
        "+CEREG: 1",
    ]


# ------------------------------------------------------------------ receiving


async def test_cmti_then_read_and_delete(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CMEE=1;+CNMI=2,1,0,1,0")
    modem.inject_inbound(NUMBER, BODY)
    assert lines(await terminal.expect(rb'\+CMTI: "SM",\d+\r\n')) == ['+CMTI: "SM",1']
    header, hex_pdu, final = await terminal.command("AT+CMGR=1")
    sms = decode_incoming(hex_pdu)
    assert isinstance(sms, SmsDeliver) and (sms.sender, sms.text) == (NUMBER, BODY)
    assert final == "OK"
    assert header == f"+CMGR: 0,,{len(hex_pdu) // 2 - 1 - int(hex_pdu[:2], 16)}"
    assert (await terminal.command("AT+CMGR=1"))[0].startswith("+CMGR: 1,,")  # now read
    assert modem.sim_messages == {1: hex_pdu}
    assert await terminal.command("AT+CMGD=1") == ["OK"]
    assert modem.sim_messages == {}
    assert await terminal.command("AT+CMGR=1") == ["+CMS ERROR: 321"]
    assert await terminal.command("AT+CMGR=31") == ["+CMS ERROR: 321"]


async def test_simcom_reads_an_empty_slot_as_ok(open_modem: ModemFactory) -> None:
    _, terminal = await open_modem("simcom-sim7600")
    assert await terminal.command("AT+CMGR=3") == ["OK"]


async def test_direct_cmt_when_mt_is_2(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CNMI=2,2,0,1,0")
    modem.inject_inbound(NUMBER, "Привет", encoding="ucs2")
    _, hex_pdu = lines(await terminal.expect(rb"\+CMT: ,\d+\r\n[0-9A-F]+\r\n"))
    sms = decode_incoming(hex_pdu)
    assert isinstance(sms, SmsDeliver) and (sms.text, sms.encoding) == ("Привет", "ucs2")
    assert modem.sim_messages == {}


async def test_concatenated_inbound_in_shuffled_order(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CNMI=2,1,0,1,0")
    text = BODY * 6  # 240 characters: three parts
    modem.inject_inbound(NUMBER, text, parts=3, order=[2, 0, 1])
    await terminal.expect(rb'\+CMTI: "SM",3\r\n')
    listed = await terminal.command("AT+CMGL=4")
    assert listed[-1] == "OK" and len(listed) == 7
    parts = [decode_incoming(p) for p in listed[1:-1:2]]
    assert all(isinstance(p, SmsDeliver) for p in parts)
    delivered = [p for p in parts if isinstance(p, SmsDeliver)]
    assert [p.concat.seq for p in delivered if p.concat] == [3, 1, 2]
    assert {p.concat.ref for p in delivered if p.concat} == {delivered[0].concat.ref}  # type: ignore[union-attr]
    in_order = sorted(delivered, key=lambda p: p.concat.seq if p.concat else 0)
    assert "".join(p.text for p in in_order) == text
    assert all(line.split(",")[1] == "1" for line in (await terminal.command("AT+CMGL=4"))[:-1:2])


async def test_messages_on_the_sim_before_start(open_modem: ModemFactory) -> None:
    indexes: list[int] = []
    modem, terminal = await open_modem(
        preload=lambda m: indexes.extend(
            [m.preload_sim(NUMBER, BODY), m.preload_sim("+4915", "ü€")]
        )
    )
    assert indexes == [1, 2]
    listed = await terminal.command("AT+CMGL=4")
    texts = [decode_incoming(p) for p in listed[1:-1:2]]
    assert [t.text for t in texts if isinstance(t, SmsDeliver)] == [BODY, "ü€"]
    assert await terminal.command("AT+CMGD=1,4") == ["OK"]
    assert modem.sim_messages == {}


async def test_full_memory_holds_inbound_until_a_delete(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CNMI=2,1,0,1,0")
    for i in range(30):
        modem.preload_sim(NUMBER, f"old {i}")
    modem.inject_inbound(NUMBER, "new")
    assert await terminal.command("AT+CMGD=7") == ["OK"]
    assert lines(await terminal.expect(rb'\+CMTI: "SM",\d+\r\n')) == ['+CMTI: "SM",7']


# ------------------------------------------------------------------ faults


async def test_fail_next_sim_busy_then_ready(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CMEE=1")
    modem.fail_next("AT+CPIN?", "+CME ERROR: 14", 2)
    assert await terminal.command("AT+CPIN?") == ["+CME ERROR: 14"]
    assert await terminal.command("AT+CPIN?") == ["+CME ERROR: 14"]
    assert await terminal.command("AT+CPIN?") == ["+CPIN: READY", "OK"]


async def test_fail_next_send_answers_after_the_pdu(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CMEE=2")
    modem.fail_next("AT+CMGS", "+CMS ERROR: 331")
    pdu = encode_submit(to=NUMBER, text="hi", encoding="gsm7")
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    assert lines(await terminal.expect(FINAL)) == ["+CMS ERROR: no network service"]
    assert modem.sent == []


async def test_urc_between_prompt_and_pdu(open_modem: ModemFactory, clock: FakeClock) -> None:
    modem, terminal = await open_modem()
    modem.interleave_next("AT+CMGS", '+CMTI: "SM",5')
    pdu = encode_submit(to=NUMBER, text="hi", encoding="gsm7")
    terminal.send(f"AT+CMGS={pdu.tpdu_length}\r".encode())
    assert await terminal.expect(rb'\+CMTI: "SM",5\r\n') == b'\r\n> \r\n+CMTI: "SM",5\r\n'
    terminal.send(pdu.hex.encode() + b"\x1a")
    await clock.wait_sleeping(1)
    clock.advance(3.0)
    assert lines(await terminal.expect(FINAL)) == ["+CMGS: 0", "OK"]


async def test_urc_in_the_middle_of_a_listing(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem(
        preload=lambda m: [m.preload_sim(NUMBER, "a"), m.preload_sim(NUMBER, "b")]
    )
    modem.interleave_next("AT+CMGL", "RING")
    listed = await terminal.command("AT+CMGL=4")
    assert listed[0].startswith("+CMGL: 1,") and listed[1] == "RING"
    assert listed[3].startswith("+CMGL: 2,") and listed[-1] == "OK"


async def test_inbound_during_a_send_arrives_before_its_answer(
    open_modem: ModemFactory, clock: FakeClock
) -> None:
    modem, terminal = await open_modem()
    await terminal.command("AT+CNMI=2,1,0,1,0")
    pdu = encode_submit(to=NUMBER, text="hi", encoding="gsm7")
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    await clock.wait_sleeping(1)
    modem.inject_inbound(NUMBER, "reply")
    clock.advance(3.0)
    assert lines(await terminal.expect(FINAL)) == ['+CMTI: "SM",1', "+CMGS: 0", "OK"]


async def test_hang_answers_nothing_until_a_power_cycle(open_modem: ModemFactory) -> None:
    modem, terminal = await open_modem()
    modem.hang()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(terminal.command("AT"), 0.2)
    terminal.close()
    await modem.replug()
    again = Terminal(modem.path)
    try:
        await again.expect(boot_done(modem))
        assert await again.command("AT") == ["OK"]
    finally:
        again.close()


async def test_unplug_gives_eof_and_replug_repoints_the_link(
    open_modem: ModemFactory, tmp_path: Path
) -> None:
    link = tmp_path / "usb-Quectel_EC25-if02-port0"
    modem, terminal = await open_modem(link_path=link)
    assert link_target_exists(link)
    await modem.unplug()
    await terminal.wait_for(lambda: terminal.closed is not None)
    assert terminal.closed in ("EOF", "EIO")
    assert not link_target_exists(link) and not modem.plugged
    await modem.replug()
    assert link_target_exists(link)
    again = Terminal(modem.path)
    try:
        await again.expect(boot_done(modem))
        assert await again.command("AT+CGMM") == ["EC25", "OK"]
    finally:
        again.close()


async def test_unplug_during_send(
    open_modem: ModemFactory, clock: FakeClock, tmp_path: Path
) -> None:
    link = tmp_path / "modem"
    modem, terminal = await open_modem(link_path=link)
    modem.unplug_during_next_send(replug_after=1.0)
    pdu = encode_submit(to=NUMBER, text=BODY, encoding="gsm7")
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    await terminal.wait_for(lambda: terminal.closed is not None)
    assert b"+CMGS" not in terminal.buffer
    assert [s.text for s in modem.sent] == [BODY]  # the network has it
    await clock.wait_sleeping(1)
    clock.advance(1.0)
    await asyncio.wait_for(modem.wait_plugged(), 2)
    assert link_target_exists(link)
    again = Terminal(modem.path)
    try:
        await again.expect(boot_done(modem))
        assert await again.command("AT") == ["OK"]
    finally:
        again.close()


async def test_network_holds_inbound_while_the_port_is_gone(
    open_modem: ModemFactory, clock: FakeClock
) -> None:
    modem, terminal = await open_modem(report_delay=5.0, send_latency=1.0)
    await terminal.command("AT+CNMI=2,1,0,1,0")
    pdu = encode_submit(to=NUMBER, text="x", encoding="gsm7", request_report=True)
    await submit(terminal, pdu.hex, pdu.tpdu_length)
    await clock.wait_sleeping(1)
    clock.advance(1.0)
    await terminal.expect(FINAL)
    await modem.unplug()
    modem.inject_inbound(NUMBER, BODY)
    await clock.wait_sleeping(1)
    clock.advance(5.0)  # the status report comes while the port is gone: stored
    terminal.close()
    await modem.replug()
    again = Terminal(modem.path)
    try:
        await again.expect(boot_done(modem))
        listed = await again.command("AT+CMGL=4")
        decoded = [decode_incoming(p) for p in listed[1:-1:2]]
        assert [type(d) for d in decoded].count(StatusReport) == 1
        assert [d.text for d in decoded if isinstance(d, SmsDeliver)] == [BODY]
    finally:
        again.close()


async def test_reset_drops_the_usb_port(open_modem: ModemFactory, clock: FakeClock) -> None:
    modem, terminal = await open_modem("quectel-ec25", link_path=None)
    assert await terminal.command("AT+CFUN=1,1") == ["OK"]
    await clock.wait_sleeping(1)
    clock.advance(SHUTDOWN_SECONDS)
    await terminal.wait_for(lambda: terminal.closed is not None)
    await clock.wait_sleeping(1)
    clock.advance(modem.profile.reset_seconds)
    await asyncio.wait_for(modem.wait_plugged(), 2)
    again = Terminal(modem.path)
    try:
        assert "RDY" in lines(await again.expect(boot_done(modem)))
    finally:
        again.close()


async def test_reset_keeps_the_port_on_simcom(open_modem: ModemFactory, clock: FakeClock) -> None:
    modem, terminal = await open_modem("simcom-sim7600")
    await terminal.command("ATE1")
    assert await terminal.command("AT+CFUN=1,1") == ["AT+CFUN=1,1\r", "OK"]
    await clock.wait_sleeping(1)
    clock.advance(SHUTDOWN_SECONDS)
    await clock.wait_sleeping(1)
    clock.advance(modem.profile.reset_seconds)
    assert lines(await terminal.expect(boot_done(modem)))[0] == "*ATREADY: 1"
    terminal.send(b"AT\r")  # echo is back to its default after the reset: off here
    assert await terminal.expect(FINAL) == b"\r\nOK\r\n"


async def test_huawei_periodic_rssi_until_curc_off(
    open_modem: ModemFactory, clock: FakeClock
) -> None:
    _, terminal = await open_modem("huawei-e3372", signal=17)
    assert await terminal.command("AT^SYSINFO") == ["^SYSINFO: 2,3,0,5,1,,4", "OK"]
    await clock.wait_sleeping(2)
    clock.advance(20.0)
    assert lines(await terminal.expect(rb"\^RSSI: 17\r\n")) == ["^RSSI: 17"]
    assert await terminal.command("AT^CURC=0") == ["OK"]
    await clock.wait_sleeping(2)
    clock.advance(60.0)
    assert await terminal.command("AT") == ["OK"]  # nothing periodic came before it


# ------------------------------------------------------------------ bank and CLI


async def test_bank_cycles_profiles_with_links(tmp_path: Path, clock: FakeClock) -> None:
    count = len(PROFILES) + 1  # every profile, then the first again
    bank = ModemBankEmulator(count, link_dir=tmp_path, clock=clock, echo=False)
    async with bank:
        assert bank.paths == [str(tmp_path / f"modem-{i}") for i in range(1, count + 1)]
        models = []
        for modem in bank.modems:
            terminal = Terminal(modem.path)
            try:
                await terminal.expect(boot_done(modem))
                models.append((await terminal.command("AT+CGMM"))[0])
                imei = (await terminal.command("AT+CGSN"))[0]
                assert imei == modem.at.identity.imei
            finally:
                terminal.close()
        expected = [PROFILES[name].model for name in sorted(PROFILES, key=list(PROFILES).index)]
        assert models == [*expected, expected[0]]
        assert len({m.at.identity.imei for m in bank.modems}) == count
    assert os.listdir(tmp_path) == []


async def test_cli_simulate_modem_prints_ports(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "simulate",
        "modem",
        "--count",
        "2",
        "--link-dir",
        str(tmp_path),
        "--profile",
        "simcom-sim7600",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            header = (await process.stdout.readline()).decode()
            first = (await process.stdout.readline()).decode()
            second = (await process.stdout.readline()).decode()
            ready = (await process.stdout.readline()).decode()
        assert header.split() == ["PROFILE", "PORT"]
        assert first.split() == ["simcom-sim7600", str(tmp_path / "modem-1")]
        assert second.split() == ["simcom-sim7600", str(tmp_path / "modem-2")]
        assert "2 emulated modem(s) ready" in ready
        terminal = Terminal(str(tmp_path / "modem-2"))
        try:
            await terminal.expect(rb"PB DONE\r\n")
            assert await terminal.command("ATE0") == ["ATE0\r", "OK"]
            assert await terminal.command("AT+CGMM") == ["SIMCOM_SIM7600E-H", "OK"]
        finally:
            terminal.close()
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    assert os.listdir(tmp_path) == []
