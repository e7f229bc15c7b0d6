"""Write-back of a reply to the EHR: an HL7 v2.5.1 message queued for the outbound
interface the appointment's profile names (`profile.writeback`), sent by the wire
part's MLLP client (`gateway.clinical.outbound`).

`writeback_message = "siu_s14"`: SIU^S14 (modification) with the reply as SCH-6
event reason and an NTE ("Confirmed by SMS", "Patient asks to reschedule"), SCH-25
`Cancelled` when the reply cancelled it. `srm_s03` / `srm_s04` (fillers that take
requests): SRM^S04 (cancel request) for a cancel, SRM^S03 (modification request)
with the NTE for the others. No PID: the appointment is named by its id (SCH-2 /
ARQ-2, the filler's, and SCH-1 / ARQ-1 the same key: we are not its placer) and PID-5
(the name, required) is never stored here. Only the appointment key leaves; never a
number or the text the patient wrote.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from gateway.clinical import outbound
from gateway.clinical.profile import InterfaceProfile
from gateway.replies.intents import Intent
from gateway.store.crypto import FieldCipher

SENDING_APP = "SMSGW"
WHO = "SMSGW^SMS Gateway"  # SCH-16 / SCH-20, ARQ-15 / ARQ-19 (required; no person)
MESSAGES = ("siu_s14", "srm_s03", "srm_s04")
# The column `appointments.ext_key_ct` is encrypted under (appointment id, this).
EXT_KEY_COLUMN = "ext_key"

# intent (and whether the reply cancelled it) -> (SCH-6 / ARQ-7 code, NTE text)
_NOTES = {
    Intent.CONFIRM: ("CONFIRMED", "Confirmed by SMS"),
    Intent.RESCHEDULE: ("RESCHEDULE", "Patient asks to reschedule"),
    Intent.CANCEL: ("CANCEL", "Patient asks to cancel"),
    Intent.STOP: ("NOSMS", "Patient asked for no more texts about this appointment"),
}
_CANCELLED_NOTE = ("CANCELLED", "Cancelled by the patient by SMS")


@dataclass(frozen=True, slots=True)
class WriteBack:
    """One reply to write back: `cancelled` if this gateway cancelled it."""

    reply_id: str
    appointment_id: str
    intent: Intent
    cancelled: bool
    at: float


def _escape(text: str) -> str:
    """HL7 escapes for the separators of `|^~\\&`."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("~", "\\R\\").replace("&", "\\T\\")


def _segment(name: str, fields: dict[int, str]) -> str:
    last = max(fields)
    return "|".join([name, *(fields.get(i, "") for i in range(1, last + 1))])


def _stamp(at: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(at)) + "+0000"


def build(
    w: WriteBack, key: str, profile: InterfaceProfile, control_id: str, processing_id: str = "P"
) -> str:
    """The HL7 message for `w` (segments separated by CR), per `profile`."""
    code, note = _CANCELLED_NOTE if w.cancelled else _NOTES[w.intent]
    reason = f"{code}^{_escape(note)}^L"
    ident = f"{_escape(key)}^{_escape(profile.name)}"
    srm = profile.writeback_message.startswith("srm")
    if srm:
        event = "S04" if w.intent is Intent.CANCEL else "S03"
        kind = f"SRM^{event}^SRM_S01"
        body = _segment("ARQ", {1: ident, 2: ident, 7: reason, 15: WHO, 19: WHO})
    else:
        kind = "SIU^S14^SIU_S12"
        fields = {1: ident, 2: ident, 6: reason, 16: WHO, 20: WHO}
        if w.cancelled:
            fields[25] = "Cancelled"
        body = _segment("SCH", fields)
    msh = (
        f"MSH|^~\\&|{SENDING_APP}||{_escape(profile.writeback or '')}||{_stamp(w.at)}||{kind}"
        f"|{control_id}|{processing_id}|2.5.1"
    )
    return "\r".join((msh, body, f"NTE|1|P|{_escape(note)}", "RGS|1|U")) + "\r"


def external_key(conn: sqlite3.Connection, cipher: FieldCipher, appointment_id: str) -> str:
    (ct,) = conn.execute(
        "SELECT ext_key_ct FROM appointments WHERE id = ?", (appointment_id,)
    ).fetchone()
    return cipher.decrypt(ct, appointment_id, EXT_KEY_COLUMN)


def queue(
    conn: sqlite3.Connection, cipher: FieldCipher, w: WriteBack, profile: InterfaceProfile
) -> str | None:
    """Queue the write-back for `profile.writeback`; its `hl7_outbound` id, or None
    when the profile names no write-back (the worklist takes the reply then)."""
    if profile.writeback is None:
        return None
    control_id = "R" + w.reply_id.removeprefix("rpl_")[:19]  # MSH-10 is at most 20 long
    message = build(w, external_key(conn, cipher, w.appointment_id), profile, control_id)
    return outbound.enqueue(
        conn,
        cipher,
        profile.writeback,
        message,
        control_id,
        w.at,
        kind="appointment_reply",
        ref=w.reply_id,
    )
