"""Acknowledgments we build (research §A4): original mode AA/AE/AR, enhanced mode an
accept ACK CA/CE/CR per MSH-15 and an application ACK per MSH-16.

MSA-2 echoes MSH-10; sending and receiving application/facility swap; MSH-11/12 are
copied; MSH-9 is `ACK^<event>^ACK` (`ACK^<event>` before v2.3.1). ERR carries the
table-0357 code (ERR-3), the severity (ERR-4) and a text (ERR-8) that never quotes
the message, so an ACK holds no PHI: only the message's MSH ids.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.hl7.header import Header


class Outcome(enum.StrEnum):
    """What happened to a message, as the original-mode code."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


ENHANCED = {Outcome.ACCEPT: "CA", Outcome.ERROR: "CE", Outcome.REJECT: "CR"}


# Table 0155: when an ACK is wanted (ok: the outcome was AA). An empty field in
# enhanced mode asks for one always.
def _wanted(condition: str, ok: bool) -> bool:
    return {"NE": False, "ER": not ok, "SU": ok}.get(condition, True)


@dataclass(frozen=True, slots=True)
class Error:
    code: int  # table 0357
    text: str  # no PHI
    location: str | None = None  # e.g. "PID-3"


class AckMode(enum.StrEnum):
    ORIGINAL = "original"
    ENHANCED = "enhanced"


def timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def _escape(text: str, h: Header) -> str:
    """`text` with the message's separators escaped (ERR texts are ours, but say)."""
    esc = h.encoding[2:3] or "\\"
    out = text.replace(esc, f"{esc}E{esc}").replace(h.field_sep, f"{esc}F{esc}")
    for ch, code in zip(h.encoding[:1] + h.encoding[1:2] + h.encoding[3:4], "SRT", strict=False):
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out


def _location(loc: str | None, h: Header) -> str:
    """`PID-3` or `PID-3.1` as an ERL (segment^sequence^field^repetition^component)."""
    if not loc or "-" not in loc:
        return loc or ""
    seg, _, pos = loc.partition("-")
    fld, _, comp = pos.partition(".")
    cs = h.encoding[:1] or "^"
    parts = [seg, "1", fld] + (["1", comp] if comp else [])
    return cs.join(parts)


def message(h: Header, code: str, control_id: str, now: float, error: Error | None) -> str:
    """One ACK message, segments ended by CR."""
    fs, cs = h.field_sep, h.encoding[:1] or "^"
    event = h.event
    msh = fs.join(
        [
            "MSH",
            h.encoding,
            h.receiving_app,
            h.receiving_facility,
            h.sending_app,
            h.sending_facility,
            timestamp(now),
            "",
            cs.join(["ACK", event, "ACK"] if _has_structure(h.version_id) else ["ACK", event]),
            control_id,
            h.processing_id or "P",
            h.version or "2.5.1",
        ]
    )
    segs = [msh, fs.join(["MSA", code, h.control_id])]
    if error is not None:
        segs.append(_err(h, error))
    return "\r".join(segs) + "\r"


def _err(h: Header, error: Error) -> str:
    fs, cs = h.field_sep, h.encoding[:1] or "^"
    sub = h.encoding[3:4] or "&"
    text = _escape(error.text, h)
    if _before_25(h.version_id):  # ERR-1 ELD: location, then the code as a CE
        loc = _location(error.location, h).split(cs) if error.location else ["", "", ""]
        loc = [*loc, "", "", ""][:3]
        return fs.join(["ERR", cs.join([*loc, sub.join([str(error.code), text, "HL70357"])])])
    err3 = cs.join([str(error.code), text, "HL70357"])
    return fs.join(["ERR", "", _location(error.location, h), err3, "E", "", "", "", text])


def _has_structure(version: str) -> bool:
    """MSH-9.3 (message structure) exists from v2.3.1; a v2.3 ACK with it fails strict
    validation (MSH-9 is a two-component CM there)."""
    try:
        return tuple(int(p) for p in version.split(".")[:3]) >= (2, 3, 1)
    except ValueError:
        return True


def _before_25(version: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")[:2]) < (2, 5)
    except ValueError:
        return False


def acks(
    h: Header,
    outcome: Outcome,
    control_id: str,
    now: float,
    error: Error | None = None,
    override: AckMode | None = None,
) -> list[str]:
    """The ACK messages this outcome is answered with, in the order they are sent:
    original mode one; enhanced mode the accept ACK and/or the application ACK."""
    enhanced = h.enhanced if override is None else override is AckMode.ENHANCED
    if not enhanced:
        return [message(h, outcome.value, control_id, now, error)]
    ok = outcome is Outcome.ACCEPT
    out = []
    committed = outcome is not Outcome.REJECT  # stored (AE: quarantined) or refused
    if _wanted(h.accept_ack, ok):
        out.append(message(h, ENHANCED[outcome], control_id, now, error))
    if committed and h.app_ack and _wanted(h.app_ack, ok):
        out.append(message(h, outcome.value, control_id + "A", now, error))
    return out
