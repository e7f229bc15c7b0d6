"""Appointments as the appointments part stores them, and a reminder sent for one:
rows written through the contract's own functions (`patients.upsert`,
`notices.schedule` / `finish`) and the store's message insert, for the replies tests."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from drivers.text import split
from gateway.app import Gateway
from gateway.clinical import notices, patients
from gateway.clinical.commands import ApplyContext
from gateway.clinical.notices import Notice, NoticeKind, NoticeState
from gateway.clinical.profile import InterfaceProfile
from gateway.models import Priority, new_message_id
from gateway.replies.writeback import EXT_KEY_COLUMN
from gateway.store.store import NewMessage

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Booked:
    id: str
    patient_id: str
    code: str
    reminder_message: str | None


def context(gw: Gateway, source: str = "ehr") -> ApplyContext:
    profile = gw.clinical_profiles.get(source) or InterfaceProfile(source)
    return ApplyContext(gw.clock.time(), source, "test", profile, gw.store, gw.clinical_hooks)


async def book(
    gw: Gateway,
    number: str,
    *,
    code: str = "1234",
    start_in: float = 2 * DAY,
    source: str = "ehr",
    ext_key: str = "A1001",
    mrn: str = "MRN42",
    language: str | None = None,
    reminded: bool = True,
    reminded_at: float | None = None,
    status: str = "booked",
) -> Booked:
    """A booked appointment for the patient texted at `number`, and (if `reminded`) a
    reminder notice queued as a message to that number."""
    ctx = context(gw, source)
    now = gw.clock.time()
    appt_id = "apt_" + secrets.token_hex(8)
    body = f"Reminder: appointment. Reply C to confirm, R to reschedule. Code {code}"
    plan = split(body)
    message = NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to=number,
        body=body,
        encoding=plan.encoding.value,
        segments=plan.segments,
        created_at=now,
        expires_at=now + DAY,
        purpose="appointment",
    )
    statements = gw.store.insert_statements(message)

    def job(conn: sqlite3.Connection) -> Booked:
        phone = patients.Phone(number, "PID-13", "PRN", "CP", 0)
        details = patients.PatientDetails(patients.PatientRef("HOSP", mrn), (phone,), language)
        patient = patients.upsert(conn, ctx, details)
        cipher = ctx.cipher
        conn.execute(
            "INSERT INTO appointments (id, source, ext_index, ext_key_ct, patient_id, status,"
            " start_at, time_zone, short_code, version, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,1,?,?)",
            (
                appt_id,
                source,
                cipher.keyed_digest("appointment", source, ext_key),
                cipher.encrypt(ext_key, appt_id, EXT_KEY_COLUMN),
                patient.id,
                status,
                now + start_in,
                "America/New_York",
                code,
                now,
                now,
            ),
        )
        if not reminded:
            return Booked(appt_id, patient.id, code, None)
        assert patient.contact_idx is not None
        notice_id = notices.schedule(
            conn,
            cipher,
            Notice(
                NoticeKind.REMINDER,
                patient.contact_idx,
                "reminder",
                "appointment",
                now,
                appointment_id=appt_id,
                appt_version=1,
                rule_id="rule-24h",
                rule_version=1,
                patient_id=patient.id,
            ),
            now,
        )
        for sql, params in statements:
            conn.execute(sql, params)
        assert notices.finish(
            conn, notice_id, NoticeState.QUEUED, reminded_at or now, message_id=message.id
        )
        return Booked(appt_id, patient.id, code, message.id)

    return await gw.store.writer.run(job)


async def appointment(gw: Gateway, appt_id: str) -> dict[str, Any]:
    row = await gw.store.reader.one(
        "SELECT status, version, confirmed_at, confirmed_via FROM appointments WHERE id = ?",
        (appt_id,),
    )
    assert row is not None
    return dict(zip(("status", "version", "confirmed_at", "confirmed_via"), row, strict=True))


async def reply_rows(gw: Gateway) -> list[dict[str, Any]]:
    rows = await gw.store.reader.all(
        "SELECT id, inbound_id, appointment_id, intent, by_code, outcome, writeback_id, state"
        " FROM appointment_replies ORDER BY created_at, rowid"
    )
    keys = ("id", "inbound_id", "appointment_id", "intent", "by_code", "outcome")
    return [dict(zip((*keys, "writeback_id", "state"), r, strict=True)) for r in rows]


async def outbound_messages(gw: Gateway) -> list[tuple[str, str, str, str]]:
    """(interface, kind, ref, decrypted HL7) of every queued write-back."""
    rows = await gw.store.reader.all(
        "SELECT id, interface, kind, ref, message_ct FROM hl7_outbound ORDER BY created_at"
    )
    return [(r[1], r[2], r[3], gw.store.decrypt(r[4], r[0], "message")) for r in rows]
