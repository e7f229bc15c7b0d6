"""`/api/v1/appointments`: appointments posted by systems that speak JSON, not HL7.

Handlers translate to `gw.usecases.appointments` and back. `POST /appointments` is an
upsert by external key (the source is `api`), with `Idempotency-Key` as
`POST /messages` has it; it needs the `send` scope (an appointment makes the gateway
send reminders), as does `POST /appointments/{id}/cancel`. Reading needs `read`; the
patient's number is only ever shown masked, and the MRN, external key and provider
never.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from gateway.api.endpoint import Endpoint
from gateway.api.handlers import AUTH_RECORD, MAX_PAGE, Idempotency
from gateway.api.openapi import Answer, Query
from gateway.api.query import query_time
from gateway.appointments.queries import Search
from gateway.appointments.usecase import (
    API_STATUSES,
    AppointmentDetail,
    AppointmentRequest,
    AppointmentView,
    Saved,
)
from gateway.errors import ApiError
from gateway.intake import AwareTime, decode_with
from gateway.usecases import Caller
from gateway.usecases.consent import Language
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

Short = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Status = Literal["booked", "pending", "waitlist", "checked_in", "fulfilled", "cancelled", "noshow"]
ALL_STATUSES = (*API_STATUSES, "discontinued", "deleted")
APPOINTMENT_ID = "{id:[A-Za-z0-9_]{1,64}}"
CURSOR = r"(-?[0-9]+(?:\.[0-9]+)?)\|(apt_[0-9a-f]{16})"
_CURSOR = re.compile(CURSOR)


class PatientBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    mrn: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=64, description="the patient's id in your system (stored"
            " encrypted; a patient is found again by it)",
        ),
    ]  # fmt: skip
    number: Annotated[
        Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "phone"})] | None,
        msgspec.Meta(description="the mobile number to text; left out: the one known is kept"),
    ] = None
    language: Language | None = None


class AppointmentBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    external_key: Annotated[
        Short, msgspec.Meta(description="your id of the appointment: a second POST updates it")
    ]
    patient: PatientBody
    start: AwareTime
    end: AwareTime | None = None
    status: Annotated[
        Status, msgspec.Meta(description="cancelled cancels it (a notice after the debounce)")
    ] = "booked"
    service: Annotated[Short | None, msgspec.Meta(description="a service code")] = None
    location_code: Annotated[Short | None, msgspec.Meta(description="a location code")] = None
    clinic: Short | None = None
    location: Annotated[Short | None, msgspec.Meta(description="room or place, as texted")] = None
    provider: Short | None = None
    type: Annotated[
        Short | None,
        msgspec.Meta(
            description="the appointment type code (what reminder rules filter on as"
            " appointment_types); left out: the one stored is kept"
        ),
    ] = None
    changed_at: Annotated[
        AwareTime | None,
        msgspec.Meta(
            description="when your system made this change (default: now); an update older"
            " than one applied is refused as stale_update"
        ),
    ] = None


class NoticeOut(msgspec.Struct, frozen=True):
    id: str
    kind: str
    state: str
    due_at: str | None
    reason: str | None
    template: str
    language: str | None
    message_id: str | None


class EventOut(msgspec.Struct, frozen=True):
    at: str | None
    event: str
    old_status: str | None
    new_status: str | None
    old_start: str | None
    new_start: str | None
    version: int
    source_ref: str | None


class AppointmentOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: str
    status: str
    start: str | None
    end: str | None
    time_zone: str
    service: str | None
    type: str | None
    location_code: str | None
    clinic: str | None
    location: str | None
    short_code: str
    version: int
    last_event: str | None
    created_from_update: bool
    confirmed_at: str | None
    number_masked: str | None
    language: str | None
    created_at: str | None
    updated_at: str | None


class AppointmentDetailOut(AppointmentOut, frozen=True, kw_only=True):
    notices: list[NoticeOut]
    events: list[EventOut]


class AppointmentPage(msgspec.Struct, frozen=True):
    items: list[AppointmentOut]
    next_cursor: str | None


_BODY = msgspec.json.Decoder(AppointmentBody)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def _fields(v: AppointmentView) -> dict[str, object]:
    r = v.record
    return {
        "id": r.id,
        "source": r.source,
        "status": r.status,
        "start": iso(r.start),
        "end": iso(r.end),
        "time_zone": r.time_zone,
        "service": r.service,
        "type": r.appt_type,
        "location_code": r.location_code,
        "clinic": r.clinic,
        "location": r.place,
        "short_code": r.short_code,
        "version": r.version,
        "last_event": r.last_event,
        "created_from_update": r.created_from_update,
        "confirmed_at": iso(r.confirmed_at),
        "number_masked": v.number_masked,
        "language": r.language,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


def appointment_out(v: AppointmentView) -> AppointmentOut:
    return AppointmentOut(**_fields(v))  # type: ignore[arg-type]  # the fields, typed above


def detail_out(d: AppointmentDetail) -> AppointmentDetailOut:
    notices = [
        NoticeOut(
            n.id, n.notice.kind.value, n.state.value, iso(n.notice.due_at), n.reason,
            n.notice.template, n.notice.language, n.message_id,
        )
        for n in d.notices
    ]  # fmt: skip
    events = [
        EventOut(
            iso(e.at), e.event, e.old_status, e.new_status, iso(e.old_start), iso(e.new_start),
            e.version, e.source_ref,
        )
        for e in d.events
    ]  # fmt: skip
    return AppointmentDetailOut(**_fields(d.view), notices=notices, events=events)  # type: ignore[arg-type]  # as above


def _request(body: AppointmentBody) -> AppointmentRequest:
    return AppointmentRequest(
        body.external_key,
        body.patient.mrn,
        body.start,
        body.end,
        body.status,
        body.patient.number,
        body.patient.language,
        body.service,
        body.location_code,
        body.clinic,
        body.location,
        body.provider,
        body.changed_at,
        body.type,
    )


async def post_appointment(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    caller = _caller(request)
    raw = await request.read()
    async with Idempotency(request, raw, request[AUTH_RECORD].id, 200) as idem:
        replayed = await idem.replay(gw, caller)
        if replayed is not None:
            return replayed
        body = decode_with(_BODY, raw)
        saved = await gw.usecases.appointments.upsert(caller, _request(body), idem.key)
        return json_response(saved, status=201 if saved.created else 200)


async def cancel_appointment(request: web.Request) -> web.Response:
    saved = await gateway_of(request).usecases.appointments.cancel(
        _caller(request), request.match_info["id"]
    )
    return json_response(saved)


def _search(request: web.Request) -> Search:
    q = request.query
    unknown = set(q) - {"from", "to", "status", "limit", "cursor"}
    if unknown:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    status = q.get("status")
    if status is not None and status not in ALL_STATUSES:
        raise ApiError(400, "invalid_query", "status: not an appointment status", field="status")
    text = q.get("limit", "50")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(
            400, "invalid_query", f"limit: expected an integer from 1 to {MAX_PAGE}", field="limit"
        )
    after = None
    if "cursor" in q:
        m = _CURSOR.fullmatch(q["cursor"])
        if m is None:
            raise ApiError(
                400, "invalid_query", "cursor: not a cursor of this list", field="cursor"
            )
        after = (float(m.group(1)), m.group(2))
    return Search(query_time(request, "from"), query_time(request, "to"), status, int(text), after)


async def list_appointments(request: web.Request) -> web.Response:
    search = _search(request)
    found = await gateway_of(request).usecases.appointments.search(_caller(request), search)
    cursor = None
    if len(found) == search.limit:
        last = found[-1].record
        cursor = f"{last.start or 0}|{last.id}"
    return json_response(AppointmentPage([appointment_out(v) for v in found], cursor))


async def get_appointment(request: web.Request) -> web.Response:
    detail = await gateway_of(request).usecases.appointments.get(
        _caller(request), request.match_info["id"]
    )
    return json_response(detail_out(detail))


_TIME = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
_NOT_FOUND = Answer(404, "`not_found`: no appointment with this id")
_WRITE = Answer(403, "`forbidden`: needs the 'send' scope")
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/v1/appointments",
        post_appointment,
        "send",
        "Create or update an appointment by its external key (source `api`): the same"
        " state machine as SIU feeds (a changed start is a move; status cancelled holds"
        " a cancelled notice for the debounce, turned into one moved notice by a rebooking)."
        " 201 when created, 200 when updated; audited",
        AppointmentBody,
        Saved,
        200,
        idempotent=True,
        answers=(
            Answer(201, "created", {"$ref": "#/components/schemas/Saved"}),
            Answer(
                409,
                "`stale_update`: a change newer than changed_at was applied;"
                " `idempotency_conflict`: the key was used with another request",
            ),
            Answer(
                422,
                "`invalid_number`, `invalid_end` (before start), `invalid_status`,"
                " `invalid_body`/`invalid_field`: `field` names it (never its value)",
            ),
            _WRITE,
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/appointments",
        list_appointments,
        "read",
        "Appointments by start time (numbers masked)",
        None,
        AppointmentPage,
        query=(
            Query("from", "start at or after (RFC 3339 or Unix seconds)", _TIME),
            Query("to", "start before (RFC 3339 or Unix seconds)", _TIME),
            Query("status", "appointment status", {"type": "string", "enum": list(ALL_STATUSES)}),
            Query(
                "limit",
                f"page size, 1 to {MAX_PAGE}",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
            ),
            Query(
                "cursor",
                "next_cursor of the previous page",
                {"type": "string", "pattern": f"^{CURSOR}$"},
            ),
        ),
        answers=(Answer(400, "`invalid_query`: a query parameter is invalid; `field` names it"),),
    ),
    Endpoint(
        "GET",
        f"/api/v1/appointments/{APPOINTMENT_ID}",
        get_appointment,
        "read",
        "One appointment with its notices (state, due, reason) and change trail",
        None,
        AppointmentDetailOut,
        answers=(_NOT_FOUND,),
    ),
    Endpoint(
        "POST",
        f"/api/v1/appointments/{APPOINTMENT_ID}/cancel",
        cancel_appointment,
        "send",
        "Cancel an appointment posted through this API (audited); pending notices close,"
        " a cancelled notice waits for the debounce",
        None,
        Saved,
        answers=(
            _NOT_FOUND,
            Answer(
                409,
                "`managed_by_interface`: it comes from an HL7 feed; cancel it in the EHR;"
                " `erased`: its details were erased (`POST /erasures`)",
            ),
            _WRITE,
        ),
    ),
)
