"""`/api/v1/medications` and `/api/v1/events/results-available`: medication schedules and
results-available events for systems without HL7.

Handlers translate to `gw.medications` / `gw.result_events` (the same commands RDE,
a discontinue and ORU^R01 map to) and back. A patient is named by the MRN an earlier
feed stored (`patient: {source, mrn}`) or by a phone number in the body, never in the
path. Views hold no PHI: a schedule's drug label is never returned.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, cast

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from gateway.api.handlers import AUTH_RECORD, MAX_PAGE, Idempotency
from gateway.clinical import patients
from gateway.clinical.notices import NoticeRow
from gateway.consent.zones import valid_zone
from gateway.errors import ApiError
from gateway.intake import decode_with, normalise_number
from gateway.medication.commands import Put, PutSchedule, Timing
from gateway.medication.schedules import ScheduleRow
from gateway.medication.usecase import ScheduleView
from gateway.results.commands import ResultsAvailable
from gateway.results.events import OrderKey
from gateway.results.recipient import KnownPatient, Number, Target
from gateway.results.settings import TimeOfDay
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

# Loose on purpose: any id reaches the auth gate first, and an unknown one is a 404.
SCHEDULE_ID = "{id:[0-9A-Za-z_]{1,64}}"
CURSOR = re.compile("med_[0-9a-f]{16}")
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Phone = Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "phone"})]
_NUMBER_DOC = "the patient's phone number (E.164, or national in queue.default_region)"
_ONE_OF = "give `patient` or `number`, not both"


class PatientByMrn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    source: Annotated[Short, msgspec.Meta(description="the HL7 interface the patient came from")]
    mrn: Short
    authority: Annotated[
        str, msgspec.Meta(max_length=64, description="the MRN's assigning authority (CX-4)")
    ] = ""


class ResultsAvailableRequest(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    patient: Annotated[PatientByMrn | UnsetType, msgspec.Meta(description=_ONE_OF)] = UNSET
    number: Annotated[Phone | UnsetType, msgspec.Meta(description=_NUMBER_DOC)] = UNSET
    order: Annotated[Short, msgspec.Meta(description="the lab's order (accession) number")]
    order_namespace: Annotated[
        str, msgspec.Meta(max_length=64, description="who numbered the order (EI-2)")
    ] = ""
    status: Annotated[
        Literal["final", "corrected"],
        msgspec.Meta(description="final: notifies once; corrected: once more"),
    ] = "final"


OutcomeName = Literal["notice", "joined", "no_contact", "duplicate"]


class ResultsAvailableAnswer(msgspec.Struct, frozen=True):
    outcome: Annotated[
        OutcomeName,
        msgspec.Meta(
            description="notice: one planned; joined: the patient's pending one covers it;"
            " no_contact: no number to text; duplicate: this order and status were seen"
        ),
    ]
    events: list[str]
    notice_id: str | None
    due_at: str | None


class MedicationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    patient: Annotated[PatientByMrn | UnsetType, msgspec.Meta(description=_ONE_OF)] = UNSET
    number: Annotated[Phone | UnsetType, msgspec.Meta(description=_NUMBER_DOC)] = UNSET
    times: Annotated[
        list[TimeOfDay],
        msgspec.Meta(min_length=1, max_length=12, description="local times of day, HH:MM"),
    ]
    start_date: dt.date
    end_date: Annotated[
        dt.date | None, msgspec.Meta(description="the last day (inclusive); none: until stopped")
    ] = None
    time_zone: Annotated[
        Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "iana-time-zone"})]
        | None,
        msgspec.Meta(
            description="IANA zone; default: the contact's, else its area code's if it has"
            " one zone (422 time_zone_required if neither)"
        ),
    ] = None
    label: Annotated[
        Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None,
        msgspec.Meta(description="the drug's name: refused unless medication.allow_drug_names"),
    ] = None
    language: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2}$")] | None = None
    external_key: Annotated[
        Short | None,
        msgspec.Meta(description="your id for it: a second POST with it changes the schedule"),
    ] = None


class DoseView(msgspec.Struct, frozen=True):
    id: str
    due_at: str | None
    state: str
    reason: str | None


class MedicationSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: Literal["active", "stopped", "ended"]
    source: str
    times: list[str]
    time_zone: str
    start_date: str
    end_date: str | None
    has_label: bool
    language: str | None
    version: int
    planned_until: str | None
    stopped_at: str | None
    stop_reason: str | None
    created_at: str | None
    updated_at: str | None


class MedicationView(MedicationSummary, frozen=True, kw_only=True):
    doses: list[DoseView]


class MedicationPage(msgspec.Struct, frozen=True):
    items: list[MedicationSummary]
    next_cursor: str | None


_RESULTS = msgspec.json.Decoder(ResultsAvailableRequest)
_MEDICATION = msgspec.json.Decoder(MedicationRequest)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])


def describe(document: dict[str, Any]) -> None:
    """Exactly one of `patient` and `number`, which msgspec's schema cannot say."""
    schemas = document["components"]["schemas"]
    for name in ("ResultsAvailableRequest", "MedicationRequest"):
        if name in schemas:
            schemas[name]["oneOf"] = [{"required": ["patient"]}, {"required": ["number"]}]


def _target(
    request: web.Request, patient: PatientByMrn | UnsetType, number: str | UnsetType
) -> Target:
    if isinstance(patient, PatientByMrn):
        if not isinstance(number, UnsetType):
            raise ApiError(422, "invalid_patient", _ONE_OF, field="patient")
        return KnownPatient(patient.source, patients.PatientRef(patient.authority, patient.mrn))
    if isinstance(number, UnsetType):
        raise ApiError(422, "invalid_patient", _ONE_OF, field="patient")
    e164 = normalise_number(number, gateway_of(request).config.queue.default_region)
    if e164 is None:
        raise ApiError(422, "invalid_number", "not a valid phone number", field="number")
    return Number(e164)


def summary(row: ScheduleRow) -> MedicationSummary:
    d = row.dose
    return MedicationSummary(
        id=row.id,
        state=row.state,  # type: ignore[arg-type]  # the table's CHECK keeps it to the three
        source=row.source,
        times=list(d.times),
        time_zone=d.time_zone,
        start_date=d.start.isoformat(),
        end_date=None if d.end is None else d.end.isoformat(),
        has_label=row.has_label,
        language=row.language,
        version=row.version,
        planned_until=iso(row.planned_until),
        stopped_at=iso(row.stopped_at),
        stop_reason=row.stop_reason,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
    )


def view(row: ScheduleRow, doses: list[NoticeRow]) -> MedicationView:
    return MedicationView(
        **msgspec.structs.asdict(summary(row)),
        doses=[DoseView(n.id, iso(n.notice.due_at), n.state.value, n.reason) for n in doses],
    )


async def post_results_available(request: web.Request) -> web.Response:
    body = decode_with(_RESULTS, await request.read())
    target = _target(request, body.patient, body.number)
    status = "F" if body.status == "final" else "C"
    command = ResultsAvailable(
        target, ((OrderKey(body.order, body.order_namespace, "filler"), status),)
    )
    done = await gateway_of(request).result_events.results_available(_caller(request), command)
    outcome = cast(OutcomeName, done.outcome)  # one of the four, by construction
    answer = ResultsAvailableAnswer(outcome, list(done.events), done.notice_id, iso(done.due_at))
    return json_response(answer, status=200 if done.outcome == "duplicate" else 201)


async def post_medication(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    raw = await request.read()
    caller = _caller(request)
    async with Idempotency(request, raw, request[AUTH_RECORD].id, 201) as idem:
        replayed = await idem.replay(gw, caller)
        if replayed is not None:
            return replayed
        body = decode_with(_MEDICATION, raw)
        target = _target(request, body.patient, body.number)
        if body.time_zone is not None and not valid_zone(body.time_zone):
            raise ApiError(422, "invalid_time_zone", "not an IANA time zone", field="time_zone")
        if body.end_date is not None and body.end_date < body.start_date:
            raise ApiError(422, "invalid_dates", "end_date is before start_date", field="end_date")
        command = PutSchedule(
            target,
            Timing(tuple(body.times), None, body.start_date, body.end_date, "times"),
            None if body.external_key is None else OrderKey(body.external_key, "", "api"),
            body.label,
            body.language,
            body.time_zone,
            zone_fallback=False,
        )

        def render(put: Put) -> bytes:
            return msgspec.json.encode(view(put.row, []))

        answer = await gw.medications.put(caller, command, render, idem.key)
    return web.Response(body=answer.body, status=answer.status, content_type="application/json")


async def get_medication(request: web.Request) -> web.Response:
    found: ScheduleView = await gateway_of(request).medications.get(
        _caller(request), request.match_info["id"]
    )
    return json_response(view(found.row, found.doses))


async def delete_medication(request: web.Request) -> web.Response:
    found = await gateway_of(request).medications.stop(_caller(request), request.match_info["id"])
    return json_response(view(found.row, found.doses))


async def list_medications(request: web.Request) -> web.Response:
    q = request.query
    if set(q) - {"state", "limit", "cursor"}:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    state = q.get("state")
    if state not in (None, "active", "stopped", "ended"):
        raise ApiError(400, "invalid_query", "state: active, stopped or ended", field="state")
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "invalid_query", f"limit: 1 to {MAX_PAGE}", field="limit")
    cursor = q.get("cursor")
    if cursor is not None and CURSOR.fullmatch(cursor) is None:
        raise ApiError(400, "invalid_query", "cursor: next_cursor of the last page", field="cursor")
    rows = await gateway_of(request).medications.page(
        _caller(request), state=state, before=cursor, limit=limit
    )
    next_cursor = rows[-1].id if len(rows) == limit else None
    return json_response(MedicationPage([summary(r) for r in rows], next_cursor))
