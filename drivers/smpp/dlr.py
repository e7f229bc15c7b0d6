"""SMPP delivery receipts: the Appendix B text and the receipt TLVs, parsed without I/O.

Theory of operation. An SMSC reports what became of a submitted message in a deliver_sm
or data_sm whose short_message (or message_payload) reads, in SMPP 3.4 Appendix B,
`id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
stat:DDDDDDD err:E text:...`. The appendix calls that format vendor specific and carriers
take it at its word, so the text is read as loosely as is safe:

- Everything from the first `text:` key on is dropped unread: it echoes the start of the
  body (patient data) and may hold anything, `stat:` look-alikes included.
- Before it, keys are found in any order and case, as `submit date`, `submit_date` or
  `submitdate`, with spaces around the colon. The first occurrence of a key counts; its
  value is the first word after the colon, so an empty value never swallows the next key.
- Text without an `id`, or with an `id` and no other receipt key, is not a receipt.
- Dates are YYMMDDhhmm or YYMMDDhhmmss in the zone given (UTC unless told otherwise); an
  impossible date is None. `err` keeps its letters and digits; a decimal one is padded
  to three digits (`err:34` -> "034").
- Stat words fold to the seven-letter Appendix B names (`DELIVERED` -> `DELIVRD`), then to
  `ReceiptState`; a word not recognised is `unknown`, with the carrier's word in `raw_state`.

The TLVs receipted_message_id, message_state and network_error_code win over the text
where both speak (`parse_receipt` merges; `receipt_from_tlvs` and `parse_receipt_text`
are its two halves). `id_variants` spells one carrier id in every form it may come back
in (case, leading zeros, decimal <-> hex): many SMSCs answer submit_sm in hex and
report in decimal, or the reverse.

No input makes anything here raise, and nothing returned carries the `text:` field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from drivers.base import Receipt, ReceiptState

# A decoded TLV: raw octets, an integer, or text (receipted_message_id is a C-octet string).
TlvValue = bytes | int | str

__all__ = [
    "ParsedReceipt",
    "as_receipt",
    "error_code",
    "id_variants",
    "parse_receipt",
    "parse_receipt_text",
    "receipt",
    "receipt_from_tlvs",
]

MAX_ID_LENGTH = 65  # message_id is a C-Octet String of at most 65 octets (SMPP 3.4 5.2.23)

# Appendix B name -> the spellings carriers use for it (letters only, upper case).
_STAT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "DELIVRD": ("DELIVERED", "DELIVRED", "DELIVERD", "DELIVER", "DELIVD", "DELIVR"),
    "UNDELIV": ("UNDELIVERABLE", "UNDELIVERED", "UNDELIVRD", "UNDELIVD", "UNDELIVERD", "FAILED"),
    "EXPIRED": ("EXPIRD", "EXPIRE"),
    "DELETED": ("DELETD", "DELETE"),
    "ACCEPTD": ("ACCEPTED", "ACCEPT", "ACCPTD"),
    "UNKNOWN": ("UNKNWN", "UNKNOW"),
    "REJECTD": ("REJECTED", "REJECT", "REJCTD"),
    # BUFFERED is what several SMSCs send for "in retry"; SCHEDULED is SMPP 5.0's state 0,
    # which 5.0 itself says 3.4 SMSCs report as ENROUTE.
    "ENROUTE": ("BUFFERED", "BUFFRED", "SCHEDULED", "SCHEDLD"),
    "SKIPPED": ("SKIPPD", "SKIP"),
}
_CANONICAL = {s: name for name, rest in _STAT_SPELLINGS.items() for s in (name, *rest)}
_STATES = {
    "DELIVRD": ReceiptState.DELIVERED,
    "UNDELIV": ReceiptState.FAILED,
    "REJECTD": ReceiptState.FAILED,
    "DELETED": ReceiptState.FAILED,
    "EXPIRED": ReceiptState.EXPIRED,
    "ENROUTE": ReceiptState.ENROUTE,
    # SMPP 5.0 (4.7.15) lists SKIPPED as a final state: "accepted but not transmitted or
    # broadcast on the network". Nothing will follow it, so `enroute` would leave the
    # message waiting for ever; `failed` lets the gateway report it or try another route.
    "SKIPPED": ReceiptState.FAILED,
    "ACCEPTD": ReceiptState.ACCEPTED,
    "UNKNOWN": ReceiptState.UNKNOWN,
}
# message_state TLV values (SMPP 3.4 5.2.28; 0 and 9 from 5.0).
_TLV_STATES = {
    0: "ENROUTE",
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
    9: "SKIPPED",
}
_NOT_YET_WRONG = frozenset({ReceiptState.ENROUTE, ReceiptState.ACCEPTED})

# The keys are ASCII; without re.ASCII, case folding would let U+017F (long s) match the
# "s" of `sub` and yield key names outside the table.
_KEY = re.compile(
    r"(?<![A-Za-z_])(submit[\s_]*date|done[\s_]*date|dlvrd|sub|status|stat|error|err|id|text)"
    r"\s*:",
    re.IGNORECASE | re.ASCII,
)
_KEY_NAMES = {"status": "stat", "error": "err"}
_RECEIPT_KEYS = frozenset({"sub", "dlvrd", "submitdate", "donedate", "stat", "err"})
_KEY_SPACING = re.compile(r"[\s_]")
_NOT_WORD = re.compile(r"[^0-9A-Za-z_-]")
_PRINTABLE_ASCII = re.compile(r"[!-~]+")
_NOT_LETTER = re.compile(r"[^A-Z]")
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]")
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    """One delivery receipt.

    `message_id` is the carrier's id as sent (see `id_variants` to match it).
    `raw_state` is the carrier's stat word, upper case, reduced to `[A-Z0-9_-]` and 16
    characters; from the message_state TLV it is the Appendix B name; "" when absent.
    `error` is `err` (decimal padded to three digits) or the network_error_code's code,
    whose network type (3 = GSM) is `network_type`. Dates are aware datetimes.
    """

    message_id: str
    state: ReceiptState
    raw_state: str
    error: str | None
    submitted: datetime | None
    done: datetime | None
    delivered_parts: int | None
    submitted_parts: int | None
    network_type: int | None = None


def parse_receipt_text(text: str | bytes, *, tz: tzinfo = UTC) -> ParsedReceipt | None:
    """The receipt in a short_message or message_payload, or None if it is not one."""
    return parse_receipt(text, None, tz=tz)


def receipt_from_tlvs(tlvs: Mapping[str, TlvValue], *, tz: tzinfo = UTC) -> ParsedReceipt | None:
    """The receipt carried by a PDU's TLVs (message_payload included), or None."""
    return parse_receipt(None, tlvs, tz=tz)


def parse_receipt(
    short_message: str | bytes | None,
    tlvs: Mapping[str, TlvValue] | None = None,
    *,
    tz: tzinfo = UTC,
) -> ParsedReceipt | None:
    """Merge a receipt's text and TLVs, the TLVs winning; None if it is not a receipt.

    The text is `short_message`, or the `message_payload` TLV when that is empty (SMPP
    forbids both). Keys of `tlvs` are TLV names; values are raw octets, integers or text.
    """
    tlvs = tlvs or {}
    text: object = short_message or tlvs.get("message_payload")
    fields = _fields(text) if isinstance(text, str | bytes | bytearray) else {}
    message_id = _tlv_id(tlvs.get("receipted_message_id")) or _clean_id(fields.get("id", ""))
    tlv_state = _TLV_STATES.get(_tlv_int(tlvs.get("message_state"), 1, -1), "")
    network = _tlv_int(tlvs.get("network_error_code"), 3, -1)
    has_receipt_key = not _RECEIPT_KEYS.isdisjoint(fields)
    if message_id is None or not (tlv_state or network >= 0 or has_receipt_key):
        return None
    raw_state = tlv_state or _NOT_WORD.sub("", fields.get("stat", "").upper())[:16]
    canonical = _CANONICAL.get(_letters(raw_state))
    error = _error(fields.get("err", ""))
    network_type = None
    if network >= 0:
        network_type, error = network >> 16, f"{network & 0xFFFF:03d}"
    return ParsedReceipt(
        message_id=message_id,
        state=_STATES[canonical] if canonical else ReceiptState.UNKNOWN,
        raw_state=raw_state,
        error=error,
        submitted=_date(fields.get("submitdate", ""), tz),
        done=_date(fields.get("donedate", ""), tz),
        delivered_parts=_count(fields.get("dlvrd", "")),
        submitted_parts=_count(fields.get("sub", "")),
        network_type=network_type,
    )


def error_code(parsed: ParsedReceipt) -> str | None:
    """A stable code such as `"smpp-dlr:UNDELIV:034"`, or None when nothing went wrong.

    Nothing went wrong for `delivered`, and for `enroute`/`accepted` with no non-zero
    error. The name is the Appendix B one (`OTHER` for a word not recognised); the error
    part is left off when the receipt carries none.
    """
    return _code(parsed.state, parsed.raw_state, parsed.error)


def _code(state: ReceiptState, raw_state: str, error: str | None) -> str | None:
    erred = bool(error and error.strip("0"))
    if state is ReceiptState.DELIVERED or (state in _NOT_YET_WRONG and not erred):
        return None
    name = _CANONICAL.get(_letters(raw_state), "OTHER")
    return f"smpp-dlr:{name}:{error}" if error else f"smpp-dlr:{name}"


def as_receipt(parsed: ParsedReceipt, alternates: bool = False) -> Receipt:
    """The `drivers.base.Receipt` the driver hands to its `EventSink` (with `alternates`,
    the id's other spellings from `id_variants`)."""
    return Receipt(
        parsed.message_id,
        parsed.state,
        error_code(parsed),
        id_variants(parsed.message_id)[1:] if alternates else (),
    )


def receipt(
    short_message: str | bytes | None, tlvs: Mapping[str, TlvValue] | None = None
) -> Receipt | None:
    """`as_receipt(parse_receipt(short_message, tlvs), alternates=True)`, read only as
    far as the `Receipt` needs: when receipted_message_id and message_state say it all
    (delivered, or a network_error_code gives the error), the text is not parsed, and
    its dates and part counts never are (the driver's hot path: a receipt a message)."""
    tlvs = tlvs or {}
    message_id = _tlv_id(tlvs.get("receipted_message_id"))
    raw_state = _TLV_STATES.get(_tlv_int(tlvs.get("message_state"), 1, -1), "")
    network = _tlv_int(tlvs.get("network_error_code"), 3, -1)
    if not (message_id and raw_state and (network >= 0 or raw_state == "DELIVRD")):
        parsed = parse_receipt(short_message, tlvs)
        return None if parsed is None else as_receipt(parsed, alternates=True)
    error = f"{network & 0xFFFF:03d}" if network >= 0 else None
    state = _STATES[raw_state]
    return Receipt(message_id, state, _code(state, raw_state, error), id_variants(message_id)[1:])


def id_variants(message_id: str) -> tuple[str, ...]:
    """Every spelling under which the same carrier id may come back, as given first.

    Case variants, leading zeros (and a `0x`) stripped, the decimal id in hex and the
    hex id in decimal. An id of decimal digits is also valid hex, so both readings are
    listed: a route stores the variants of each submit_sm_resp id and looks up those
    of a receipt id, trying the exact id first.
    """
    given = message_id.strip().strip("\x00")
    prefixed = given[:2].lower() == "0x"
    core = given[2:] if prefixed else given
    stripped = core.lstrip("0") or core[:1]
    found = [given, given.lower(), given.upper(), stripped, stripped.lower(), stripped.upper()]
    if 0 < len(core) <= 32 and core.isascii():
        if core.isdigit() and not prefixed:
            number = int(core)
            found += [f"{number:X}", f"{number:x}"]
        if set(core) <= _HEX:
            found.append(str(int(core, 16)))
    return tuple(dict.fromkeys(v for v in found if v))


def _fields(text: str | bytes | bytearray) -> dict[str, str]:
    """Key -> first word of its value, for the first occurrence of each key before `text:`."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("latin-1")  # every octet decodes; the keys are ASCII
    text = text.replace("\x00", " ")
    found: dict[str, str] = {}
    pending: tuple[str, int] | None = None
    for match in _KEY.finditer(text):
        if pending is not None:
            _keep(found, pending[0], text[pending[1] : match.start()])
        key = _key_name(match[1])
        if key == "text":
            return found
        pending = (key, match.end())
    if pending is not None:
        _keep(found, pending[0], text[pending[1] :])
    return found


@functools.lru_cache(maxsize=256)
def _key_name(spelling: str) -> str:
    """`Submit_Date` -> `submitdate`, `status` -> `stat`: the table's name for a key."""
    key = _KEY_SPACING.sub("", spelling.lower())
    return _KEY_NAMES.get(key, key)


def _keep(found: dict[str, str], key: str, segment: str) -> None:
    words = segment.split(maxsplit=1)
    found.setdefault(key, words[0].strip(",;") if words else "")


def _clean_id(word: str) -> str | None:
    word = word.strip()
    if len(word) > MAX_ID_LENGTH or not _PRINTABLE_ASCII.fullmatch(word):
        return None
    return word


def _tlv_id(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).split(b"\x00", 1)[0].decode("latin-1")
    return _clean_id(value.split("\x00", 1)[0]) if isinstance(value, str) else None


def _tlv_int(value: object, size: int, missing: int) -> int:
    """An unsigned TLV value of `size` octets, or `missing` when absent or malformed."""
    if isinstance(value, bytes | bytearray) and len(value) == size:
        return int.from_bytes(value, "big")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 256**size:
        return value
    return missing


def _letters(word: str) -> str:
    return _NOT_LETTER.sub("", word.upper())


def _digits(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _error(word: str) -> str | None:
    word = _NOT_ALNUM.sub("", word).upper()[:8]
    if not word:
        return None
    return f"{int(word):03d}" if _digits(word) else word


def _count(word: str) -> int | None:
    return int(word) if _digits(word) and len(word) <= 9 else None


@functools.lru_cache(maxsize=1024)  # a burst of receipts shares a few minute stamps
def _date(word: str, tz: tzinfo) -> datetime | None:
    if not _digits(word) or len(word) not in (10, 12):
        return None
    year, month, day, hour, minute, second = (int(word[i : i + 2] or 0) for i in range(0, 12, 2))
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:  # month 13, 31 February, hour 24 ...
        return None
