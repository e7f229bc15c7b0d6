"""Reading appointments for the API and the panel: typed records, decrypted here only.

The number is the consent contact's (decrypted for the use case to mask it); the
location's clinic and place are decrypted; the external key, the MRN and the provider
are never read back out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.clinical import notices
from gateway.clinical.db import ClinicalDb
from gateway.clinical.notices import NoticeRow
from gateway.consent.ledger import contact_row_id
from gateway.store.crypto import FieldCipher

_COLUMNS = (
    "a.id, a.source, a.status, a.start_at, a.end_at, a.time_zone, a.service,"
    " a.location_code, a.location_label_ct, a.short_code, a.version, a.last_event,"
    " a.created_from_update, a.confirmed_at, a.confirmed_via, a.created_at, a.updated_at,"
    " a.patient_id, c.idx, c.number_ct, c.language, a.appt_type"
)
_FROM = (
    " FROM appointments a JOIN patients p ON p.id = a.patient_id"
    " LEFT JOIN contacts c ON c.idx = p.contact_idx"
)


@dataclass(frozen=True, slots=True)
class AppointmentRecord:
    id: str
    source: str
    status: str
    start: float | None
    end: float | None
    time_zone: str
    service: str | None
    location_code: str | None
    clinic: str | None
    place: str | None
    short_code: str
    version: int
    last_event: str | None
    created_from_update: bool
    confirmed_at: float | None
    confirmed_via: str | None
    created_at: float
    updated_at: float
    patient_id: str
    number: str | None  # the patient's number in clear: the use case masks it
    language: str | None
    appt_type: str | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    at: float
    event: str
    source_ref: str | None
    old_status: str | None
    new_status: str | None
    old_start: float | None
    new_start: float | None
    version: int


@dataclass(frozen=True, slots=True)
class Search:
    """`start_from` ≤ start < `start_to`; `after`: the (start, id) the page goes on from."""

    start_from: float | None = None
    start_to: float | None = None
    status: str | None = None
    limit: int = 50
    after: tuple[float, str] | None = None


def _record(cipher: FieldCipher, r: Any) -> AppointmentRecord:
    label = json.loads(cipher.decrypt(r[8], r[0], "location")) if r[8] else {}
    number = cipher.decrypt(r[19], contact_row_id(r[18]), "number") if r[19] else None
    return AppointmentRecord(
        r[0], r[1], r[2], r[3], r[4], r[5] or "UTC", r[6], r[7], label.get("clinic"),
        label.get("place"), r[9], r[10], r[11], bool(r[12]), r[13], r[14], r[15], r[16],
        r[17], number, r[20], r[21],
    )  # fmt: skip


async def search(db: ClinicalDb, s: Search) -> list[AppointmentRecord]:
    where: list[str] = ["1 = 1"]
    args: list[float | str] = []
    if s.start_from is not None:
        where.append("a.start_at >= ?")
        args.append(s.start_from)
    if s.start_to is not None:
        where.append("a.start_at < ?")
        args.append(s.start_to)
    if s.status is not None:
        where.append("a.status = ?")
        args.append(s.status)
    if s.after is not None:
        where.append("(coalesce(a.start_at, 0), a.id) > (?, ?)")
        args.extend(s.after)
    rows = await db.all(
        f"SELECT {_COLUMNS}{_FROM} WHERE {' AND '.join(where)}"
        " ORDER BY coalesce(a.start_at, 0), a.id LIMIT ?",
        (*args, s.limit),
    )
    cipher = db.cipher
    return [_record(cipher, r) for r in rows]


async def one(db: ClinicalDb, appointment_id: str) -> AppointmentRecord | None:
    r = await db.one(
        f"SELECT {_COLUMNS}{_FROM} WHERE a.id = ?",
        (appointment_id,),
    )
    return None if r is None else _record(db.cipher, r)


async def events(db: ClinicalDb, appointment_id: str) -> list[EventRecord]:
    rows = await db.all(
        "SELECT at, event, source_ref, old_status, new_status, old_start, new_start, version"
        " FROM appointment_events WHERE appointment_id = ? ORDER BY seq",
        (appointment_id,),
    )
    return [EventRecord(*r) for r in rows]


async def notices_of(db: ClinicalDb, appointment_id: str) -> list[NoticeRow]:
    cipher = db.cipher
    rows = await db.all(
        "SELECT id, kind, contact_idx, template, purpose, due_at, variables_ct, language,"
        " expires_at, patient_id, appointment_id, appt_version, rule_id, rule_version,"
        " variant, ref, priority, state, reason, message_id FROM clinical_notices"
        " WHERE appointment_id = ? ORDER BY due_at, id",
        (appointment_id,),
    )
    return [notices.row_of(cipher, tuple(r)) for r in rows]


async def counts(db: ClinicalDb) -> dict[str, int]:
    """Appointments per status (no-shows among them)."""
    rows = await db.all("SELECT status, count(*) FROM appointments GROUP BY status")
    return {str(r[0]): int(r[1]) for r in rows}
