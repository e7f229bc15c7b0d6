"""Appointments for the reminder tests, written as the appointments part writes them
(patients through the contract's `patients.upsert`, the appointment row with its
provider and label sealed as that part seals them, then `hooks.changed` in the same
transaction), and a
minimal real `Renderer` for the notice runner's tests."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.clinical import patients
from gateway.clinical.commands import ApplyContext, ClinicalHooks
from gateway.clinical.profile import InterfaceProfile
from gateway.clinical.rendering import Rendered, TemplateMissing
from gateway.store.store import Store

NUMBER = "+12025550123"


@dataclass
class Booking:
    start: float
    status: str = "booked"
    zone: str = "America/New_York"
    service: str | None = "CARDIO"
    location: str | None = "NORTH"
    label: str | None = "North Clinic"  # the location's clinic
    place: str | None = "Room 4"
    provider: str | None = "Dr Rivera"
    appt_type: str | None = "FOLLOWUP"
    number: str | None = NUMBER
    language: str | None = "es"
    mrn: str = "MRN42"


def context(store: Store, now: float, hooks: ClinicalHooks) -> ApplyContext:
    return ApplyContext(
        now, "ehr", "hl7:ehr", InterfaceProfile("ehr", time_zone="UTC"), store, hooks
    )


def book(conn: sqlite3.Connection, ctx: ApplyContext, b: Booking) -> str:
    """A new appointment (version 1), announced to the hooks; its id."""
    phones = ()
    if b.number is not None:
        phones = (patients.Phone(b.number, "PID-13", "PRN", "CP", 0),)
    patient = patients.upsert(
        conn, ctx, patients.PatientDetails(patients.PatientRef("HOSP", b.mrn), phones, b.language)
    )
    appt_id = "apt_" + secrets.token_hex(8)
    c = ctx.cipher
    label = json.dumps({"clinic": b.label, "place": b.place}, sort_keys=True)
    conn.execute(
        "INSERT INTO appointments (id, source, ext_index, ext_key_ct, patient_id, status,"
        " start_at, end_at, time_zone, service, location_code, location_label_ct, provider_ct,"
        " short_code, version, appt_type, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,1,?,?,?)",
        (
            appt_id,
            ctx.source,
            secrets.token_bytes(16),
            c.encrypt("EXT-" + appt_id, appt_id, "ext_key"),
            patient.id,
            b.status,
            b.start,
            b.start + 1800,
            b.zone,
            b.service,
            b.location,
            None if b.label is None else c.encrypt(label, appt_id, "location"),
            None if b.provider is None else c.encrypt(b.provider, appt_id, "provider"),
            "1234",
            b.appt_type,
            ctx.now,
            ctx.now,
        ),
    )
    ctx.hooks.changed(conn, ctx, appt_id)
    return appt_id


def change(conn: sqlite3.Connection, ctx: ApplyContext, appt_id: str, **columns: Any) -> None:
    """Change columns (start_at, status, ...), bump the version, announce it."""
    sets = ", ".join(f"{k} = ?" for k in columns)
    conn.execute(
        f"UPDATE appointments SET {sets}, version = version + 1, updated_at = ? WHERE id = ?",  # noqa: S608
        (*columns.values(), ctx.now, appt_id),
    )
    ctx.hooks.changed(conn, ctx, appt_id)


@dataclass
class DictRenderer:
    """Templates by (name, language) as `str.format` texts; English is the fallback.
    Records what it rendered."""

    texts: dict[tuple[str, str], str] = field(
        default_factory=lambda: {
            ("reminder", "en"): "Reminder: {clinic} at {start}. Reply C {short_code}",
            ("reminder", "es"): "Recordatorio: {clinic} el {start}. Responda C {short_code}",
        }
    )
    calls: list[tuple[str, str | None, dict[str, str], str | None]] = field(default_factory=list)

    def render(
        self,
        conn: sqlite3.Connection,
        name: str,
        language: str | None,
        variables: Mapping[str, str],
        *,
        variant: str | None = None,
    ) -> Rendered:
        self.calls.append((name, language, dict(variables), variant))
        for lang in (language, "en"):
            text = self.texts.get((name, lang or "en"))
            if text is not None:
                return Rendered(text.format(**variables), name, 1, lang or "en", variant)
        raise TemplateMissing(name)
