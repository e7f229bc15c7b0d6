"""What the driver asks a modem and how it reads the answers: pure functions over lines.

Each parser takes the intermediate lines of a `Response` (or a URC's value) and
returns a typed value, or None when the modem said something else; none raises.
Identifiers (IMEI, IMSI, ICCID) are only ever shown through `mask`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

SimState = Literal["ready", "pin", "puk", "other"]
Registration = Literal["registered", "roaming", "searching", "denied", "not_registered", "unknown"]

_REG_STAT: dict[int, Registration] = {
    0: "not_registered",
    1: "registered",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "registered",  # SMS only, home (TS 27.007 +CEREG/+CREG stat 6/7)
    7: "roaming",
}
_INTS = re.compile(r"-?\d+")
_QUOTED = re.compile(r'"([^"]*)"')
_DIGITS = re.compile(r"\b(\d{6,22}[0-9A-Fa-f]?)\b")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def mask(identifier: str | None) -> str | None:
    """`356938035643809` → `…3809`: the last four, enough to tell SIMs apart."""
    if not identifier:
        return None
    return "…" + identifier[-4:]


def quote_pin(pin: str) -> str:
    if not pin.isdigit() or not 4 <= len(pin) <= 8:
        raise ValueError("a SIM PIN is 4 to 8 digits")
    return f'AT+CPIN="{pin}"'


def prefixed(lines: Sequence[str], name: str) -> list[str]:
    """The values of the lines that start with `name:` (`+CSQ: 20,99` → `20,99`)."""
    head = name.upper() + ":"
    return [ln[len(head) :].strip() for ln in lines if ln.upper().startswith(head)]


def parse_cpin(lines: Sequence[str]) -> SimState | None:
    values = prefixed(lines, "+CPIN") or prefixed(lines, "^CPIN")
    if not values:
        return None
    value = values[0].split(",")[0].strip().upper()
    if value == "READY":
        return "ready"
    if value == "SIM PIN":
        return "pin"
    if value == "SIM PUK":
        return "puk"
    return "other"


def parse_registration(value: str) -> Registration | None:
    """A `+CREG`/`+CGREG`/`+CEREG` value, answer (`n,stat[,...]`) or URC (`stat[,...]`)."""
    fields = [f.strip() for f in value.split(",")]
    numbers = [int(f) for f in fields if f.isdigit()]
    if not numbers:
        return None
    # An answer starts with the URC mode n; a URC starts with stat. Answers have at least
    # two fields and their second is a bare digit; a URC with location has quoted fields.
    stat = numbers[1] if len(fields) >= 2 and fields[1].isdigit() else numbers[0]
    return _REG_STAT.get(stat, "unknown")


def parse_csq(lines: Sequence[str]) -> int | None:
    """RSSI 0-31 (99 = unknown → None)."""
    for value in prefixed(lines, "+CSQ"):
        numbers = _INTS.findall(value)
        if numbers and 0 <= int(numbers[0]) <= 31:
            return int(numbers[0])
    return None


def parse_rssi_urc(value: str) -> int | None:
    """Huawei `^RSSI: n`."""
    numbers = _INTS.findall(value)
    if numbers and 0 <= int(numbers[0]) <= 31:
        return int(numbers[0])
    return None


def parse_cops(lines: Sequence[str]) -> str | None:
    for value in prefixed(lines, "+COPS"):
        names = _QUOTED.findall(value)
        if names and names[0]:
            return str(names[0])
    return None


def parse_cmgs(lines: Sequence[str]) -> int | None:
    for value in prefixed(lines, "+CMGS"):
        numbers = _INTS.findall(value)
        if numbers:
            return int(numbers[0]) & 0xFF
    return None


def parse_storage_index(value: str) -> int | None:
    """`"SM",3` from +CMTI / +CDSI → 3."""
    numbers = _INTS.findall(value.split(",", 1)[-1])
    return int(numbers[0]) if numbers else None


@dataclass(frozen=True, slots=True)
class Record:
    """One stored message as AT+CMGR gives it: `stat` (0 received unread, 1 read, 2 stored
    unsent, 3 stored sent; None when the modem left it out) and the PDU hex."""

    stat: int | None
    pdu: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Stored:
    """One message in the modem's storage, from AT+CMGL."""

    index: int
    stat: int | None
    pdu: str = field(repr=False)


def _header_fields(value: str) -> list[str]:
    return [f.strip() for f in value.split(",")]


def _stat(fields: Sequence[str]) -> int | None:
    """<stat> of `stat,[alpha],length` (also `stat,length`); None if absent or odd."""
    if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) <= 3:
        return int(fields[0])
    return None


def _pdu_after(lines: Sequence[str], start: int, header: str) -> str | None:
    """The first hex line after `start`, before the next `header` line. A vendor line
    that slipped in (a notification the engine did not know) is never taken as the PDU."""
    for line in lines[start + 1 :]:
        text = line.strip()
        if text.upper().startswith(header):
            return None
        if _HEX.fullmatch(text):
            return text
    return None


def parse_cmgr(lines: Sequence[str]) -> Record | None:
    """The record of an AT+CMGR answer (`+CMGR: stat,[alpha],length` then the PDU)."""
    for i, line in enumerate(lines):
        if line.upper().startswith("+CMGR:"):
            pdu = _pdu_after(lines, i, "+CMGR:")
            return None if pdu is None else Record(_stat(_header_fields(line[6:])), pdu)
    return None


def parse_cmgl(lines: Sequence[str]) -> list[Stored]:
    """`+CMGL: index,stat,[alpha],length` lines, each followed by its PDU."""
    found: list[Stored] = []
    for i, line in enumerate(lines):
        if not line.upper().startswith("+CMGL:"):
            continue
        fields = _header_fields(line[6:])
        pdu = _pdu_after(lines, i, "+CMGL:")
        if fields[0].isdigit() and pdu is not None:
            found.append(Stored(int(fields[0]), _stat(fields[1:]), pdu))
    return found


def parse_identifier(lines: Sequence[str]) -> str | None:
    """The first long digit run (IMEI, IMSI, or an ICCID with a trailing F/hex digit)."""
    for line in lines:
        m = _DIGITS.search(line.replace('"', " "))
        if m:
            return m.group(1)
    return None


def first_text(lines: Sequence[str]) -> str | None:
    """The first answer line without a `+X:` prefix (manufacturer, model)."""
    for line in lines:
        text = line.strip()
        if text and not text.startswith(("+", "^")):
            return text
        if ":" in text:
            return text.split(":", 1)[1].strip() or None
    return None
