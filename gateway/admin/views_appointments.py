"""The appointments pages (admin, operator, viewer): appointments by start time with
the patient's number masked (operators and admins only; a viewer sees none), the
clinic and place, the start in the clinic's time zone, status and version; and one
appointment with its notices (state, due, reason) and its change trail.

Read through `gw.usecases.appointments` with the signed-in user as the `Caller`.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.render import error_response, render
from gateway.admin.routing import OPERATORS, PHI_READERS, PanelRoute, current_user
from gateway.appointments.queries import EventRecord, Search
from gateway.appointments.usecase import AppointmentView
from gateway.errors import ApiError
from gateway.panel_users import Role
from gateway.usecases import Caller
from gateway.web.context import GATEWAY

READERS = frozenset({*OPERATORS, Role.VIEWER})
PAGE = 200
STATUSES = (
    "booked", "pending", "waitlist", "checked_in", "fulfilled", "cancelled",
    "discontinued", "deleted", "noshow",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    start: str
    status: str
    version: int
    clinic: str
    number: str | None
    source: str
    short_code: str


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    return Caller.for_panel_user(
        actor(request), reads_phi=role in PHI_READERS, acts=role in OPERATORS
    )


def local(seconds: float | None, zone: str) -> str:
    """A time as the clinic reads it: `2027-01-25 08:00 EST`."""
    if seconds is None:
        return "not given"
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo("UTC")
    return datetime.fromtimestamp(seconds, tz).strftime("%Y-%m-%d %H:%M %Z")


def _row(v: AppointmentView) -> Row:
    r = v.record
    clinic = " · ".join(p for p in (r.clinic, r.place or r.location_code) if p)
    return Row(
        r.id, local(r.start, r.time_zone), r.status, r.version, clinic, v.number_masked,
        r.source, r.short_code,
    )  # fmt: skip


async def appointments_page(request: web.Request) -> web.StreamResponse:
    usecase = request.app[GATEWAY].usecases.appointments
    status = request.query.get("status") or None
    if status not in (None, *STATUSES):
        status = None
    upcoming = request.query.get("upcoming", "1") == "1"
    now = request.app[GATEWAY].clock.time()
    found = await usecase.search(
        _caller(request),
        Search(start_from=now if upcoming else None, status=status, limit=PAGE),
    )
    return render(
        request,
        "appointments.html",
        rows=[_row(v) for v in found],
        counts=await usecase.counts(),
        statuses=STATUSES,
        selected=status,
        upcoming=upcoming,
        page=PAGE,
    )


async def appointment_page(request: web.Request) -> web.StreamResponse:
    usecases = request.app[GATEWAY].usecases
    caller = _caller(request)
    try:
        detail = await usecases.appointments.get(caller, request.match_info["id"])
    except ApiError as e:
        return error_response(request, e.status, e.code, e.message)
    replies = await usecases.replies.of_appointment(caller, detail.view.record.id)
    zone = detail.view.record.time_zone
    return render(
        request,
        "appointment.html",
        row=_row(detail.view),
        record=detail.view.record,
        notices=[
            (n.notice.kind.value, n.state.value, local(n.notice.due_at, zone), n.reason or "")
            for n in detail.notices
        ],
        events=[_event(e, zone) for e in detail.events],
        replies=[
            (local(r.received_at, zone), r.intent, r.outcome.replace("_", " "), r.state, r.id)
            for r in replies
        ],
    )


def _event(e: EventRecord, zone: str) -> tuple[str, str, str, str, str, int]:
    moved = local(e.new_start, zone) if e.new_start != e.old_start else ""
    return (local(e.at, zone), e.event, e.old_status or "", e.new_status or "", moved, e.version)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/appointments", appointments_page, READERS, False, "appointments"),
    PanelRoute(
        "GET",
        "/appointments/{id:[A-Za-z0-9_]{1,64}}",
        appointment_page,
        READERS,
        False,
        "appointment",
    ),
)
