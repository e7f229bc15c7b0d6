"""The AT command engine: one command in flight, its answer, and everything unasked for.

Theory of operation. An `AtEngine` stands between a driver and one modem's serial byte
stream. It touches no port and no clock: the caller sends a command (`send`), writes
out `data_to_send()` after *every* call, feeds what the port delivered to
`receive_data(data, now)` and calls `on_timer(now)` once `next_deadline()` has passed.
What happened comes back as events, the frozen dataclasses below.

The stream is cut into lines at CR or LF; empty lines are skipped. One command is in
flight at a time (`busy`). While it is:

- its echo (the command line itself, when the modem has echo on) is dropped, and so is
  the echo of a PDU written after a prompt;
- `OK`, `ERROR`, `+CME ERROR: n`, `+CMS ERROR: n` (numeric, or verbose text mapped back
  to the number through `drivers.modem.errors`) and the dial results end it with a
  `Response` carrying the intermediate lines collected so far;
- for a command sent with a `pdu` (AT+CMGS, AT+CMGW), the `> ` prompt (which ends in no
  line terminator) makes the engine queue the PDU and Ctrl-Z for writing;
- a line that starts with the command's own name (`+CREG: 0,1` for `AT+CREG?`) is
  part of the answer, any other line naming an unsolicited result code is not.

Unsolicited result codes (`URC_NAMES`: +CMTI, +CDSI, +CREG, RING, ^RSSI, RDY, ...) are
recognised anywhere: between commands, between the lines of an answer (a `+CMGL`
header and its PDU line included), between the prompt and the PDU. `+CMT`, `+CDS` and
`+CBM` carry a PDU on the following hex line, which the `Unsolicited` event holds; a
known notification in between is reported on its own and the PDU still awaited. With
no command in flight, every line is unsolicited; a stray final result (an answer that
came after its command timed out) is `Stray`.

A line that is not UTF-8, or a run of more than `MAX_LINE` bytes without a terminator,
is reported as `Garbled` and otherwise ignored; the engine never raises on input.

Each command has a timeout; at its deadline `on_timer` ends it with `Timeout`. If the
modem was still to show the prompt, an ESC is queued to cancel the prompt state.
`Timeout.pdu_written` (and `Abandoned.pdu_written`, from `abandon()` when the port was
lost) says whether the PDU had left: then the message may have been sent.

Event fields that may hold patient data (URC values, PDUs, command text, which can
carry a PIN) are left out of every repr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from drivers.base import ProtocolError
from drivers.modem import errors

CTRL_Z = b"\x1a"
ESC = b"\x1b"
MAX_LINE = 4096

# URCs named by the whole line.
_URC_WORDS = frozenset(
    {"RING", "RDY", "SMS DONE", "PB DONE", "*ATREADY", "CALL READY", "SMS READY", "NO CARRIER"}
)
# URCs named by the text before their colon.
URC_NAMES = frozenset(
    {
        "+CMTI", "+CMT", "+CDS", "+CDSI", "+CBM", "+CBMI",
        "+CREG", "+CGREG", "+CEREG", "+C5GREG", "+CGEV",
        "+CUSD", "+CPIN", "+CRING", "+CLIP", "+CIEV", "+CTZV", "+CTZE", "+CTZR",
        "+QIND", "+QUSIM", "+CFUN", "+CPINR", "+STIN", "+PSUTTZ", "*PSUTTZ", "+CSQN",
        "^RSSI", "^HCSQ", "^BOOT", "^MODE", "^SRVST", "^SIMST", "^SYSINFO", "^SYSINFOEX",
        "^DSFLOWRPT", "^RSSILVL", "^STIN", "^NDISSTAT", "^CPIN", "*ATREADY",
        # Call progress that voice-capable sticks report even on an SMS-only SIM: Huawei
        # ^ORIG/^CONF/^CONN/^CEND (and ^SMMEMFULL), ZTE/Telit-style HANGUP, the
        # supplementary-service +CSSI/+CSSU/+CCWA; Wavecom's +WIND (boot, SIM and
        # call indications, Fastrack M1306B) — a modem may put any of them between a
        # +CMGL/+CMGR header and its PDU.
        "^ORIG", "^CONF", "^CONN", "^CEND", "^SMMEMFULL", "HANGUP",
        "+CSSI", "+CSSU", "+CCWA", "+WIND",
    }
)  # fmt: skip
# URCs whose next line is a PDU (TS 27.005 §3.4.1, PDU mode).
URC_WITH_PDU = frozenset({"+CMT", "+CDS", "+CBM"})

_FINAL_WORDS = {"OK": "ok", "ERROR": "error", "COMMAND NOT SUPPORT": "error"}
_DIAL_FINALS = frozenset({"NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE", "CONNECT"})
_ERROR_LINE = re.compile(r"^\+(CME|CMS) ERROR:\s*(.*)$", re.IGNORECASE)
_COMMAND_NAME = re.compile(r"^AT([+^$*%#&][A-Z0-9]+|[A-Z&])", re.IGNORECASE)
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


class AtBusy(ProtocolError):
    """`send` while a command is in flight: this side's mistake; nothing was sent."""

    def __init__(self) -> None:
        super().__init__("a command is already in flight", code="at:busy", remote=False)


@dataclass(frozen=True, slots=True)
class Final:
    """How a command ended: `ok`, or an error family with its number (None: unknown)."""

    kind: Literal["ok", "error", "cme", "cms"]
    number: int | None = None
    text: str = field(default="", repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def info(self) -> errors.ErrorInfo:
        """The error's stable code and kind (see `drivers.modem.errors`)."""
        if self.kind == "ok":
            raise ValueError("an OK result is not an error")
        return errors.classify(self.kind, self.number)


class Event:
    """Something the engine saw or decided."""


@dataclass(frozen=True, slots=True)
class Response(Event):
    """The command in flight ended with a final result."""

    name: str
    final: Final
    lines: tuple[str, ...] = field(repr=False)
    token: object = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Timeout(Event):
    """The command in flight got no final result in time."""

    name: str
    pdu_written: bool
    lines: tuple[str, ...] = field(repr=False)
    token: object = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Abandoned(Event):
    """The command in flight was given up by the caller (`abandon`, e.g. port lost)."""

    name: str
    pdu_written: bool
    token: object = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PromptAnswered(Event):
    """The `> ` prompt came and the PDU plus Ctrl-Z were queued for writing."""

    name: str
    token: object = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Unsolicited(Event):
    """An unsolicited result code: `name` (`+CMTI`, `RING`), `value` after the colon,
    and for +CMT/+CDS/+CBM the PDU line that followed."""

    name: str
    value: str = field(default="", repr=False)
    pdu: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Stray(Event):
    """A final result with no command in flight (a late answer)."""

    line: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Garbled(Event):
    """Bytes that are not a line the engine can read; `reason` says why."""

    reason: Literal["not_utf8", "too_long"]
    data: bytes = field(repr=False)


@dataclass(slots=True)
class _Command:
    text: str
    name: str
    deadline: float
    timeout: float
    pdu: str | None
    token: object
    lines: list[str] = field(default_factory=list)
    echo_seen: bool = False
    prompted: bool = False


def command_name(command: str) -> str:
    """`AT+CMGS=23` → `+CMGS`; `ATE0` → `E`; the prefix the answer's lines carry."""
    m = _COMMAND_NAME.match(command.strip())
    return m.group(1).upper() if m else command.strip().upper()


def parse_final(line: str) -> Final | None:
    """The final result a line states, or None if it is not one."""
    upper = line.upper()
    kind = _FINAL_WORDS.get(upper)
    if kind == "ok":
        return Final("ok")
    if kind is not None or upper in _DIAL_FINALS - {"CONNECT"}:
        return Final("error", text=line)
    m = _ERROR_LINE.match(line)
    if m is None:
        return None
    family: Literal["cme", "cms"] = "cme" if m.group(1).upper() == "CME" else "cms"
    detail = m.group(2).strip()
    if detail.isdigit():
        return Final(family, int(detail), detail)
    lookup = errors.lookup_cme_text if family == "cme" else errors.lookup_cms_text
    return Final(family, lookup(detail), detail)


def urc_name(line: str) -> str | None:
    """The URC a line starts, or None when it names none."""
    if line.upper() in _URC_WORDS:
        return line.upper()
    head, colon, _ = line.partition(":")
    if colon and head.strip().upper() in URC_NAMES:
        return head.strip().upper()
    return None


class AtEngine:
    """One modem's AT conversation; see the module docstring."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._out = bytearray()
        self._command: _Command | None = None
        self._pending_urc: Unsolicited | None = None

    @property
    def busy(self) -> bool:
        return self._command is not None

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def send(
        self,
        command: str,
        *,
        now: float,
        timeout: float,
        pdu: str | None = None,
        token: object = None,
    ) -> None:
        """Start `command` (without CR); `pdu` is written when the prompt comes."""
        if self._command is not None:
            raise AtBusy()
        self._command = _Command(command, command_name(command), now + timeout, timeout, pdu, token)
        self._out += command.encode("ascii") + b"\r"

    def next_deadline(self) -> float | None:
        return None if self._command is None else self._command.deadline

    def on_timer(self, now: float) -> list[Event]:
        cmd = self._command
        if cmd is None or now < cmd.deadline:
            return []
        self._command = None
        if cmd.pdu is not None and not cmd.prompted:
            self._out += ESC
        return [Timeout(cmd.name, cmd.prompted, tuple(cmd.lines), cmd.token)]

    def abandon(self) -> list[Event]:
        """Give up the command in flight and any partial input (the port went away)."""
        self._buffer.clear()
        self._out.clear()
        events: list[Event] = []
        if self._pending_urc is not None:
            events.append(self._pending_urc)
            self._pending_urc = None
        cmd, self._command = self._command, None
        if cmd is not None:
            events.append(Abandoned(cmd.name, cmd.prompted, cmd.token))
        return events

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            start = 0
            while start < len(self._buffer) and self._buffer[start] in b"\r\n":
                start += 1
            if start:
                del self._buffer[:start]
            if not self._buffer:
                break
            if self._buffer[0:1] == b">" and self._awaiting_prompt():
                del self._buffer[:1]
                if self._buffer[0:1] == b" ":
                    del self._buffer[:1]
                events += self._prompt(now)
                continue
            end = _line_end(self._buffer)
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    chunk = bytes(self._buffer[:MAX_LINE])
                    del self._buffer[:MAX_LINE]
                    events.append(Garbled("too_long", chunk))
                    continue
                break
            if end > MAX_LINE:
                events.append(Garbled("too_long", bytes(self._buffer[:MAX_LINE])))
                del self._buffer[:MAX_LINE]
                continue
            raw = bytes(self._buffer[:end])
            del self._buffer[:end]
            events += self._line(raw)
        return events

    # -- lines ---------------------------------------------------------------------------

    def _awaiting_prompt(self) -> bool:
        cmd = self._command
        return cmd is not None and cmd.pdu is not None and not cmd.prompted

    def _prompt(self, now: float) -> list[Event]:
        cmd = self._command
        assert cmd is not None and cmd.pdu is not None
        cmd.prompted = True
        cmd.deadline = now + cmd.timeout
        self._out += cmd.pdu.encode("ascii") + CTRL_Z
        return [PromptAnswered(cmd.name, cmd.token)]

    def _line(self, raw: bytes) -> list[Event]:
        try:
            line = raw.decode("utf-8").strip(" \t\x00")
        except UnicodeDecodeError:
            return [Garbled("not_utf8", raw)]
        if not line:
            return []
        events: list[Event] = []
        pending = self._pending_urc
        if pending is not None:
            if _HEX.match(line):
                self._pending_urc = None
                return [Unsolicited(pending.name, pending.value, line)]
            name = urc_name(line)
            if name is not None and name not in URC_WITH_PDU:
                # A notification between +CMT/+CDS and its PDU: the PDU still follows.
                return self._unsolicited(name, line)
            self._pending_urc = None
            events.append(pending)
        cmd = self._command
        if cmd is not None and self._is_echo(cmd, line):
            return events
        name = urc_name(line)
        if cmd is None:
            final = parse_final(line)
            if final is not None and name is None:
                return [*events, Stray(line)]
            return [*events, *self._unsolicited(name or "", line)]
        if name is not None and name != cmd.name:
            return [*events, *self._unsolicited(name, line)]
        final = parse_final(line)
        if final is None:
            cmd.lines.append(line)
            return events
        self._command = None
        return [*events, Response(cmd.name, final, tuple(cmd.lines), cmd.token)]

    def _unsolicited(self, name: str, line: str) -> list[Event]:
        value = line[len(name) :].lstrip(" :") if name and name not in _URC_WORDS else ""
        if not name:
            value = line
        event = Unsolicited(name, value)
        if name in URC_WITH_PDU:
            self._pending_urc = event
            return []
        return [event]

    @staticmethod
    def _is_echo(cmd: _Command, line: str) -> bool:
        if not cmd.echo_seen and not cmd.prompted and _same(line, cmd.text):
            cmd.echo_seen = True
            return True
        if cmd.prompted and cmd.pdu is not None:
            echoed = line.replace("\x1a", "").lstrip("> ").strip()
            return bool(echoed) and echoed.upper() == cmd.pdu.upper()
        return False


def _same(line: str, command: str) -> bool:
    return line.replace(" ", "").upper() == command.replace(" ", "").upper()


def _line_end(buffer: bytearray) -> int:
    cr, lf = buffer.find(b"\r"), buffer.find(b"\n")
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)
