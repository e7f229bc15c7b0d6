"""ADT^A04 / A08 / A28 / A31: a patient's number and language, kept up to date.

Routed by MSH-9 alone (Microsoft's ADT-A08 sample carries EVN-1 = A01). Each message
upserts the patient (`patients.upsert`: the first textable number becomes the
patient's contact, the language from PID-15). When the number changes, the patient's
live appointments still to come are passed to `ctx.hooks.changed`, so the reminder
planner re-plans their notices to the new number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import hl7

from gateway.appointments.model import LIVE
from gateway.clinical import patients
from gateway.clinical.commands import ApplyContext, Command
from gateway.clinical.mappers import maps
from gateway.clinical.patients import PatientDetails
from gateway.clinical.profile import InterfaceProfile

EVENTS = ("A04", "A08", "A28", "A31")


@dataclass(frozen=True, slots=True)
class UpdatePatient:
    """A `Command`: the patient's row and contact from `details`."""

    details: PatientDetails

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        before = patients.find(conn, ctx, self.details.ref)
        after = patients.upsert(conn, ctx, self.details)
        if before is None or before.contact_idx == after.contact_idx:
            return
        live = tuple(s.value for s in LIVE)
        rows = conn.execute(
            "SELECT id FROM appointments WHERE patient_id = ? AND start_at > ?"  # noqa: S608
            f" AND status IN ({','.join('?' * len(live))}) ORDER BY start_at",
            (after.id, ctx.now, *live),
        ).fetchall()
        for (appt_id,) in rows:
            ctx.hooks.changed(conn, ctx, appt_id)


@maps("ADT", *EVENTS, segments={"PID": (3, 15)})  # what `patients.extract` reads
def map_adt(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    return [UpdatePatient(patients.extract(message, profile))]
