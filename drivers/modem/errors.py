"""+CME and +CMS error tables and what the driver does about each code.

Theory of operation. A modem ends a failed command with `+CME ERROR: <n>` (equipment
and SIM, 3GPP TS 27.007 §9.2) or `+CMS ERROR: <n>` (SMS, TS 27.005 §3.2.5), numeric
after `AT+CMEE=1` and as text after `AT+CMEE=2`. CMS values 0-127 are the network's
RP-cause (TS 24.011 §8.2.5.4 and annex E), 128-255 the SMSC's TP-FCS (TS 23.040
§9.2.3.22), 300-500 the modem's own. `lookup_cme_text`/`lookup_cms_text` map a verbose
text back to its number, so the rest of the code sees numbers only.

Every code falls into one `Kind`, which is what the driver and the bank act on:

- `PERMANENT`: the message itself can never go (unassigned number, barred or invalid
  destination, a PDU the network refuses): the message fails.
- `TRANSIENT`: the network could not take it now (no service, congestion, timeout):
  try again later, on any modem.
- `MODEM`: this modem or its SIM plan cannot send (SMS not subscribed, no SMSC
  address, operator barring): the work moves to another modem; the modem counts a
  failure and is drained if it keeps failing.
- `SIM`: SIM missing, locked or wrong: the modem stops and an operator is alerted. A
  PIN is tried at most once and a PUK never, since a wrong guess burns an attempt.
- `SIM_BUSY`: the SIM is still starting (CME 14 / CMS 314): ask again shortly.

Codes are spelt `cme:14`, `cms:331`, or `at:error` for a bare `ERROR`; they carry no
number or text from the message.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal


class Kind(enum.StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    MODEM = "modem"
    SIM = "sim"
    SIM_BUSY = "sim_busy"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    kind: Kind
    description: str


P, T, M, S, B = Kind.PERMANENT, Kind.TRANSIENT, Kind.MODEM, Kind.SIM, Kind.SIM_BUSY

# TS 27.007 §9.2.1/9.2.2.
CME: dict[int, tuple[str, Kind]] = {
    0: ("phone failure", M),
    1: ("no connection to phone", M),
    2: ("phone-adaptor link reserved", M),
    3: ("operation not allowed", M),
    4: ("operation not supported", M),
    5: ("PH-SIM PIN required", S),
    6: ("PH-FSIM PIN required", S),
    7: ("PH-FSIM PUK required", S),
    10: ("SIM not inserted", S),
    11: ("SIM PIN required", S),
    12: ("SIM PUK required", S),
    13: ("SIM failure", S),
    14: ("SIM busy", B),
    15: ("SIM wrong", S),
    16: ("incorrect password", S),
    17: ("SIM PIN2 required", S),
    18: ("SIM PUK2 required", S),
    20: ("memory full", T),
    21: ("invalid index", M),
    22: ("not found", M),
    23: ("memory failure", M),
    24: ("text string too long", P),
    25: ("invalid characters in text string", P),
    26: ("dial string too long", P),
    27: ("invalid characters in dial string", P),
    30: ("no network service", T),
    31: ("network timeout", T),
    32: ("network not allowed - emergency calls only", M),
    40: ("network personalization PIN required", S),
    41: ("network personalization PUK required", S),
    42: ("network subset personalization PIN required", S),
    43: ("network subset personalization PUK required", S),
    44: ("service provider personalization PIN required", S),
    45: ("service provider personalization PUK required", S),
    46: ("corporate personalization PIN required", S),
    47: ("corporate personalization PUK required", S),
    48: ("hidden key required", S),
    50: ("incorrect parameters", M),
    100: ("unknown", T),
    103: ("illegal MS", M),
    106: ("illegal ME", M),
    107: ("GPRS services not allowed", M),
    111: ("PLMN not allowed", M),
    112: ("location area not allowed", M),
    113: ("roaming not allowed in this location area", M),
}

# TS 27.005 §3.2.5: RP-cause (TS 24.011 table 8.4), TP-FCS (TS 23.040 §9.2.3.22), ME codes.
CMS: dict[int, tuple[str, Kind]] = {
    1: ("unassigned (unallocated) number", P),
    8: ("operator determined barring", M),
    10: ("call barred", M),
    17: ("network failure", T),
    21: ("short message transfer rejected", P),
    22: ("memory capacity exceeded", T),
    27: ("destination out of order", T),
    28: ("unidentified subscriber", P),
    29: ("facility rejected", P),
    30: ("unknown subscriber", P),
    38: ("network out of order", T),
    41: ("temporary failure", T),
    42: ("congestion", T),
    47: ("resources unavailable, unspecified", T),
    50: ("requested facility not subscribed", M),
    69: ("requested facility not implemented", M),
    81: ("invalid short message transfer reference value", T),
    95: ("semantically incorrect message", P),
    96: ("invalid mandatory information", P),
    97: ("message type non-existent or not implemented", P),
    98: ("message not compatible with short message protocol state", T),
    99: ("information element non-existent or not implemented", P),
    111: ("protocol error, unspecified", T),
    127: ("interworking, unspecified", T),
    128: ("telematic interworking not supported", P),
    129: ("short message type 0 not supported", P),
    130: ("cannot replace short message", P),
    143: ("unspecified TP-PID error", P),
    144: ("data coding scheme (alphabet) not supported", P),
    145: ("message class not supported", P),
    159: ("unspecified TP-DCS error", P),
    160: ("command cannot be actioned", P),
    161: ("command unsupported", P),
    175: ("unspecified TP-Command error", P),
    176: ("TPDU not supported", P),
    192: ("SC busy", T),
    193: ("no SC subscription", M),
    194: ("SC system failure", T),
    195: ("invalid SME address", P),
    196: ("destination SME barred", P),
    197: ("SM rejected-duplicate SM", P),
    198: ("TP-VPF not supported", P),
    199: ("TP-VP not supported", P),
    208: ("(U)SIM SMS storage full", T),
    209: ("no SMS storage capability in (U)SIM", M),
    210: ("error in MS", M),
    211: ("memory capacity exceeded", T),
    212: ("(U)SIM application toolkit busy", B),
    213: ("(U)SIM data download error", M),
    255: ("unspecified error cause", T),
    300: ("ME failure", M),
    301: ("SMS service of ME reserved", M),
    302: ("operation not allowed", M),
    303: ("operation not supported", M),
    304: ("invalid PDU mode parameter", P),
    305: ("invalid text mode parameter", P),
    310: ("(U)SIM not inserted", S),
    311: ("(U)SIM PIN required", S),
    312: ("PH-(U)SIM PIN required", S),
    313: ("(U)SIM failure", S),
    314: ("(U)SIM busy", B),
    315: ("(U)SIM wrong", S),
    316: ("(U)SIM PUK required", S),
    317: ("(U)SIM PIN2 required", S),
    318: ("(U)SIM PUK2 required", S),
    320: ("memory failure", M),
    321: ("invalid memory index", M),
    322: ("memory full", T),
    330: ("SMSC address unknown", M),
    331: ("no network service", T),
    332: ("network timeout", T),
    340: ("no +CNMA acknowledgement expected", M),
    500: ("unknown error", T),
}

BARE_ERROR = ErrorInfo("at:error", Kind.TRANSIENT, "error")

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def _normal(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower().replace("(u)", ""))


def _by_text(table: dict[int, tuple[str, Kind]]) -> dict[str, int]:
    index: dict[str, int] = {}
    for code, (text, _) in sorted(table.items(), reverse=True):
        index[_normal(text)] = code  # the lowest code wins a shared text
    return index


_CME_TEXT = _by_text(CME)
_CMS_TEXT = _by_text(CMS)
# Spellings seen in firmware that differ from the standard's wording.
_CME_TEXT.update({_normal("SIM PIN necessary"): 11, _normal("SIM PUK necessary"): 12})
_CMS_TEXT.update({_normal("SIM not inserted"): 310, _normal("unknown"): 500})


def lookup_cme_text(text: str) -> int | None:
    """The CME number for a verbose `+CME ERROR:` text, or None if unknown."""
    return _CME_TEXT.get(_normal(text))


def lookup_cms_text(text: str) -> int | None:
    """The CMS number for a verbose `+CMS ERROR:` text, or None if unknown."""
    return _CMS_TEXT.get(_normal(text))


def classify(family: Literal["cme", "cms", "error"], number: int | None) -> ErrorInfo:
    """What a final error result means; unknown numbers count as transient."""
    if family == "error":
        return BARE_ERROR
    if number is None:
        return ErrorInfo(f"{family}:unknown", Kind.TRANSIENT, "unknown error")
    table = CME if family == "cme" else CMS
    entry = table.get(number)
    if entry is not None:
        return ErrorInfo(f"{family}:{number}", entry[1], entry[0])
    if family == "cms" and number >= 512:  # manufacturer-specific range
        return ErrorInfo(f"cms:{number}", Kind.TRANSIENT, "manufacturer specific")
    return ErrorInfo(f"{family}:{number}", Kind.TRANSIENT, "unlisted error")
