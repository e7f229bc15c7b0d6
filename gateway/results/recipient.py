"""Who a results or medication notice goes to: a patient from the message (upserted as
the feed describes them), a patient already known by MRN (the JSON API), or a bare
phone number (the JSON API, for a lab or pharmacy with no MRN to give), whose zone,
when no one recorded the contact's, is its area code's if that has only one.

Resolved inside the writer's transaction, so the number the notice is planned for is
the one stored with it."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass

from gateway.clinical import patients
from gateway.clinical.commands import ERR_UNKNOWN_KEY, ApplyContext, MappingError
from gateway.consent import ledger, zones


@dataclass(frozen=True, slots=True)
class KnownPatient:
    """A patient an earlier feed (`source`, an interface name) stored with this MRN."""

    source: str
    ref: patients.PatientRef


@dataclass(frozen=True, slots=True)
class Number:
    e164: str


Target = patients.PatientDetails | KnownPatient | Number


@dataclass(frozen=True, slots=True)
class Recipient:
    patient_id: str | None
    contact_idx: bytes | None  # None: the patient has no number to text
    language: str | None
    time_zone: str | None


def resolve(conn: sqlite3.Connection, ctx: ApplyContext, target: Target) -> Recipient:
    """The recipient of `target`; `MappingError` (204, unknown key) for a `KnownPatient`
    that no feed has stored."""
    if isinstance(target, patients.PatientDetails):
        row = patients.upsert(conn, ctx, target)
        return Recipient(row.id, row.contact_idx, row.language, row.time_zone)
    if isinstance(target, KnownPatient):
        found = patients.find(conn, dataclasses.replace(ctx, source=target.source), target.ref)
        if found is None:
            raise MappingError(ERR_UNKNOWN_KEY, "no patient with this MRN from this source", "mrn")
        return Recipient(found.id, found.contact_idx, found.language, found.time_zone)
    idx = ctx.store.blind_index(target.e164)
    ledger.ensure_contact(conn, ctx.cipher, idx, target.e164, ctx.now)
    r = conn.execute(
        "SELECT c.language, c.time_zone, (SELECT p.id FROM patients p WHERE p.contact_idx = c.idx"
        " ORDER BY p.updated_at DESC LIMIT 1) FROM contacts c WHERE c.idx = ?",
        (idx,),
    ).fetchone()
    return Recipient(r[2], idx, r[0], r[1] or _only_zone(target.e164))


def _only_zone(e164: str) -> str | None:
    """The number's zone when its area code has exactly one (+1 202: New York's)."""
    found = zones.zones_for_number(e164)
    return found[0] if len(found) == 1 and found[0] != "UTC" else None
