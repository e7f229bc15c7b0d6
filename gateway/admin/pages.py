"""The panel's operational pages: messages, inbound, routes, API tokens.

Every route is declared in `ROUTES` (see `routing.PanelRoute`), so the session, role,
CSRF and header checks come from the panel's one gate. Phone numbers and bodies are
masked for admin and operator and absent for viewer and auditor; one message at a time
can be revealed by a POST that writes a `reveal` audit entry first. Every action
(cancel, retry, reveal, pause, resume, drain, token create and revoke) is audited with
ids only.
"""

from __future__ import annotations

import inspect
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.phi import mask_body, mask_number
from gateway.admin.render import error_response, redirect, render
from gateway.admin.repo import Role
from gateway.admin.route_cards import route_cards
from gateway.admin.routing import ADMIN, OPERATORS, PHI_READERS, PanelRoute, current_user
from gateway.api.handlers import GATEWAY, json_response
from gateway.api.views import iso
from gateway.app import Gateway
from gateway.intake import SendRequest, normalise_number
from gateway.lifecycle import CANCELLABLE
from gateway.models import Priority, State
from gateway.routes import RouteRuntime
from gateway.tokens import SCOPES, BadScope, create_token, parse_scopes

log = structlog.get_logger("smsgw.admin.pages")

PAGE_SIZE = 50
REFERENCE_SCAN_LIMIT = 10_000  # references have no index: search the newest this many
STAFF = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})  # not the auditor
NO_STORE = {"Cache-Control": "no-store"}


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


async def _audit(
    request: web.Request, action: str, kind: str, target: str, **ids: str | int | bool | None
) -> None:
    await _gateway(request).audit.record(actor(request), action, kind, target, **ids)


def _sees_phi(request: web.Request) -> bool:
    return current_user(request).role in PHI_READERS


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """The messages page's query string; every field optional, `before` the cursor."""

    state: str = ""
    priority: str = ""
    route: str = ""
    since: str = ""
    until: str = ""
    number: str = ""
    reference: str = ""
    before: str = ""

    @classmethod
    def from_query(cls, query: Any) -> MessageFilter:
        return cls(**{name: query.get(name, "").strip() for name in cls.__slots__})

    def query_string(self, **change: str) -> str:
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(change)
        return urlencode({k: v for k, v in values.items() if v})


def _parse_time(text: str) -> float | None:
    """An ISO 8601 time; without a zone (an `<input type=datetime-local>` sent
    without script) it is read as UTC. app.js sends the browser's local time as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _message_where(
    gw: Gateway, f: MessageFilter, phi: bool
) -> tuple[list[tuple[str, Any]], list[str]]:
    where: list[tuple[str, Any]] = []
    problems: list[str] = []
    if f.state:
        try:
            where.append(("state = ?", State(f.state).value))
        except ValueError:
            problems.append("Unknown state.")
    if f.priority:
        try:
            where.append(("priority = ?", int(Priority.parse(f.priority))))
        except KeyError:
            problems.append("Unknown priority class.")
    if f.route:
        where.append(("route = ?", f.route))
    for text, clause, label in (
        (f.since, "created_at >= ?", "From"),
        (f.until, "created_at < ?", "To"),
    ):
        if text:
            ts = _parse_time(text)
            if ts is None:
                problems.append(f"{label}: not a date and time.")
            else:
                where.append((clause, ts))
    if f.number and phi:
        e164 = normalise_number(f.number, gw.config.queue.default_region)
        if e164 is None:
            problems.append("Phone number: not a valid number.")
        else:
            where.append(("to_index = ?", gw.store.blind_index(e164)))
    return where, problems


def _message_row(gw: Gateway, row: sqlite3.Row, phi: bool) -> dict[str, Any]:
    mid = row["id"]
    return {
        "id": mid,
        "state": row["state"],
        "priority": Priority(row["priority"]).label,
        "route": row["route"] or row["route_hint"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "segments": row["segments"],
        "attempts": row["attempts"],
        "error_code": row["error_code"],
        "possible_duplicate": bool(row["possible_duplicate"]),
        "to_masked": mask_number(gw.store.decrypt(row["to_ct"], mid, "to")) if phi else None,
        "body_masked": mask_body(gw.store.decrypt(row["body_ct"], mid, "body")) if phi else None,
        "category": row["category"],
    }


async def _rows_by_reference(
    gw: Gateway, where: list[tuple[str, Any]], reference: str, cursor: str | None
) -> tuple[list[sqlite3.Row], bool]:
    """Rows whose (encrypted) reference equals `reference`, newest first, scanning at
    most REFERENCE_SCAN_LIMIT rows; True if the scan stopped at that limit."""
    found: list[sqlite3.Row] = []
    scanned = 0
    while scanned < REFERENCE_SCAN_LIMIT and len(found) <= PAGE_SIZE:
        rows = await gw.store.list_messages(where=where, cursor=cursor, limit=500)
        if not rows:
            return found, False
        for row in rows:
            scanned += 1
            blob = row["reference_ct"]
            if blob is not None and gw.store.decrypt(blob, row["id"], "reference") == reference:
                found.append(row)
        cursor = rows[-1]["id"]
    return found, scanned >= REFERENCE_SCAN_LIMIT


async def messages_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    phi = _sees_phi(request)
    f = MessageFilter.from_query(request.query)
    where, problems = _message_where(gw, f, phi)
    truncated = False
    if problems:
        rows: list[sqlite3.Row] = []
    elif f.reference and phi:
        rows, truncated = await _rows_by_reference(gw, where, f.reference, f.before or None)
    else:
        rows = await gw.store.list_messages(
            where=where, cursor=f.before or None, limit=PAGE_SIZE + 1
        )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(
        request,
        "messages.html",
        filter=f,
        phi=phi,
        problems=problems,
        truncated=truncated,
        messages=[_message_row(gw, r, phi) for r in rows],
        next_query=f.query_string(before=rows[-1]["id"]) if more and rows else None,
        first_query=f.query_string(before="") if f.before else None,
        states=[s.value for s in State],
        priorities=[p.label for p in Priority],
        routes=sorted(gw.routes),
        reference_scan_limit=REFERENCE_SCAN_LIMIT,
    )


async def message_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    mid = request.match_info["id"]
    row = await gw.store.message_row(mid)
    if row is None:
        return error_response(request, 404, "not_found", "No message with this id.")
    phi = _sees_phi(request)
    events = [
        {
            "at": iso(e["at"]),
            "state": e["state"],
            "route": e["route"],
            "carrier_id": e["carrier_id"],
            "error_code": e["error_code"],
            "attempt": e["attempt"],
        }
        for e in await gw.store.events(mid)
    ]
    state = State(row["state"])
    return render(
        request,
        "message.html",
        m=_message_row(gw, row, phi),
        phi=phi,
        events=events,
        expires_at=iso(row["expires_at"]),
        send_at=iso(row["send_at"]),
        can_act=current_user(request).role in OPERATORS,
        cancellable=state in (State.QUEUED, State.SCHEDULED),
        retryable=state in (State.FAILED, State.EXPIRED),
        notice=request.query.get("done", ""),
    )


async def reveal_message(request: web.Request) -> web.StreamResponse:
    """The plain number and body of one message; audited before it is answered."""
    gw = _gateway(request)
    mid = request.match_info["id"]
    row = await gw.store.message_row(mid)
    if row is None:
        return error_response(request, 404, "not_found", "No message with this id.")
    await _audit(request, "reveal", "message", mid)
    log.info("phi_revealed", message_id=mid, user_id=current_user(request).id)
    values = {
        "id": mid,
        "to": gw.store.decrypt(row["to_ct"], mid, "to"),
        "body": gw.store.decrypt(row["body_ct"], mid, "body"),
        "reference": None
        if row["reference_ct"] is None
        else gw.store.decrypt(row["reference_ct"], mid, "reference"),
    }
    return _reveal_answer(request, values, "message")


async def reveal_inbound(request: web.Request) -> web.StreamResponse:
    gw = _gateway(request)
    iid = request.match_info["id"]
    row = await gw.store.inbound_row(iid)
    if row is None:
        return error_response(request, 404, "not_found", "No inbound message with this id.")
    await _audit(request, "reveal", "inbound", iid)
    log.info("phi_revealed", inbound_id=iid, user_id=current_user(request).id)
    values = {
        "id": iid,
        "to": gw.store.decrypt(row["sender_ct"], iid, "sender"),
        "body": gw.store.decrypt(row["body_ct"], iid, "body"),
        "reference": None,
    }
    return _reveal_answer(request, values, "inbound")


def _reveal_answer(request: web.Request, values: dict[str, Any], kind: str) -> web.Response:
    if request.headers.get("HX-Request") == "true":
        response = render(request, "_reveal.html", v=values, kind=kind)
    else:
        response = json_response(values)
    response.headers.update(NO_STORE)
    return response


async def cancel_message(request: web.Request) -> web.Response:
    gw = _gateway(request)
    mid = request.match_info["id"]
    row = await gw.store.message_row(mid)
    if row is None:
        return error_response(request, 404, "not_found", "No message with this id.")
    state = State(row["state"])
    if state in CANCELLABLE:
        state = await gw.store.cancel(mid, gw.clock.time()) or state
    if state is not State.CANCELLED or State(row["state"]) is State.CANCELLED:
        return error_response(
            request,
            409,
            "not_cancellable",
            f"The message is {state.value}; it can no longer be cancelled.",
        )
    gw.scheduler.forget(mid)
    await _audit(request, "message_cancelled", "message", mid)
    return redirect(f"/messages/{mid}?done=cancelled")


async def retry_message(request: web.Request) -> web.Response:
    """A failed or expired message is final; retry sends a copy as a new message."""
    gw = _gateway(request)
    mid = request.match_info["id"]
    row = await gw.store.message_row(mid)
    if row is None:
        return error_response(request, 404, "not_found", "No message with this id.")
    if State(row["state"]) not in (State.FAILED, State.EXPIRED):
        return error_response(
            request, 409, "not_retryable", "Only failed or expired messages can be retried."
        )
    if not gw.accepting:
        return error_response(request, 503, "shutting_down", "The gateway is shutting down.")
    reference = row["reference_ct"]
    copy = SendRequest(
        to=gw.store.decrypt(row["to_ct"], mid, "to"),
        body=gw.store.decrypt(row["body_ct"], mid, "body"),
        priority=Priority(row["priority"]).label,  # type: ignore[arg-type]  # a valid label
        route=row["route_hint"],
        category=row["category"],
        reference=None if reference is None else gw.store.decrypt(reference, mid, "reference"),
    )
    # The copy belongs to the token that sent the original, so that client sees it.
    prepared = gw.intake.prepare(copy, row["token_id"], gw.clock.time())
    await gw.store.insert(gw.intake.statements([prepared]))
    gw.intake.accepted([prepared])
    new_id = prepared.message.id
    await _audit(request, "message_retried", "message", mid, new_message_id=new_id)
    return redirect(f"/messages/{new_id}?done=retried")


# -- inbound -------------------------------------------------------------------------------


async def inbound_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    phi = _sees_phi(request)
    before = request.query.get("before") or None
    rows = await gw.store.list_inbound(before, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    items = [
        {
            "id": r["id"],
            "route": r["route"],
            "received_at": iso(r["received_at"]),
            "sender_masked": mask_number(gw.store.decrypt(r["sender_ct"], r["id"], "sender"))
            if phi
            else None,
        }
        for r in rows
    ]
    return render(
        request,
        "inbound.html",
        items=items,
        phi=phi,
        next_before=rows[-1]["id"] if more and rows else None,
        paged=before is not None,
    )


# -- routes --------------------------------------------------------------------------------


async def routes_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    cards = route_cards(gw, await gw.store.sending_by_route())
    return render(
        request,
        "routes.html",
        routes=cards,
        can_act=current_user(request).role in OPERATORS,
        notice=request.query.get("done", ""),
    )


def _route(request: web.Request) -> RouteRuntime | None:
    return _gateway(request).routes.get(request.match_info["route"])


async def _set_paused(request: web.Request, *, paused: bool) -> web.Response:
    route = await _gateway(request).set_route_paused(
        request.match_info["route"], paused=paused, actor=actor(request)
    )
    if route is None:
        return error_response(request, 404, "not_found", "No route with this name.")
    return redirect(f"/routes?done={'paused' if paused else 'resumed'}")


async def pause_route(request: web.Request) -> web.Response:
    return await _set_paused(request, paused=True)


async def resume_route(request: web.Request) -> web.Response:
    return await _set_paused(request, paused=False)


async def drain_unit(request: web.Request) -> web.Response:
    """Drain one unit (a modem) of a route whose driver offers `drain(unit)`."""
    return await _unit_action(request, "drain", "modem_drained", "drained")


async def restore_unit(request: web.Request) -> web.Response:
    """Put a drained unit back, on a route whose driver offers `restore(unit)`."""
    return await _unit_action(request, "restore", "modem_restored", "restored")


async def _unit_action(request: web.Request, method: str, action: str, done: str) -> web.Response:
    route = _route(request)
    if route is None:
        return error_response(request, 404, "not_found", "No route with this name.")
    act = getattr(route.driver, method, None)
    if not callable(act):
        return error_response(request, 409, "not_drainable", "This route has nothing to drain.")
    form = await request.post()
    unit = form.get("unit")
    members = getattr(route.health(), "members", None) or {}
    if not isinstance(unit, str) or unit not in members:
        return error_response(request, 404, "not_found", "No such unit on this route.")
    result = act(unit)
    if inspect.isawaitable(result):
        await result
    await _audit(request, action, "route", route.name, unit=unit)
    return redirect(f"/routes?done={done}")


# -- API tokens ----------------------------------------------------------------------------


async def _token_list(gw: Gateway) -> list[dict[str, Any]]:
    return [
        {
            "id": t.id,
            "name": t.name,
            "scopes": sorted(t.scopes),
            "created_at": iso(t.created_at),
            "revoked_at": iso(t.revoked_at),
        }
        for t in reversed(await gw.store.tokens())
    ]


async def tokens_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    return render(
        request,
        "tokens.html",
        tokens=await _token_list(gw),
        scopes=SCOPES,
        new_token=None,
        problem=None,
        notice=request.query.get("done", ""),
    )


async def create_token_action(request: web.Request) -> web.Response:
    gw = _gateway(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:64] or "panel"
    problem = None
    new_token = None
    try:
        scopes = parse_scopes(",".join(str(s) for s in form.getall("scope", [])))
    except BadScope:
        problem = "Choose at least one scope."
    else:
        token = await create_token(gw.store, name, scopes, gw.clock)
        await _audit(request, "token_created", "token", token.id, scopes=",".join(sorted(scopes)))
        new_token = {"id": token.id, "text": token.text, "name": name}
    response = render(
        request,
        "tokens.html",
        status=201 if new_token else 422,
        tokens=await _token_list(gw),
        scopes=SCOPES,
        new_token=new_token,
        problem=problem,
        notice="",
    )
    response.headers.update(NO_STORE)
    return response


async def revoke_token_action(request: web.Request) -> web.Response:
    gw = _gateway(request)
    token_id = request.match_info["id"]
    if not await gw.store.revoke_token(token_id, gw.clock.time()):
        return error_response(request, 404, "not_found", "No active token with this id.")
    gw.tokens.forget()
    await _audit(request, "token_revoked", "token", token_id)
    return redirect("/tokens?done=revoked")


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/messages", messages_page, STAFF, False, "messages"),
    PanelRoute("GET", "/messages/{id}", message_page, STAFF, False, "message"),
    PanelRoute("POST", "/messages/{id}/reveal", reveal_message, OPERATORS, True, "message_reveal"),
    PanelRoute("POST", "/messages/{id}/cancel", cancel_message, OPERATORS, False, "message_cancel"),
    PanelRoute("POST", "/messages/{id}/retry", retry_message, OPERATORS, False, "message_retry"),
    PanelRoute("GET", "/inbound", inbound_page, STAFF, False, "inbound"),
    PanelRoute("POST", "/inbound/{id}/reveal", reveal_inbound, OPERATORS, True, "inbound_reveal"),
    PanelRoute("GET", "/routes", routes_page, STAFF, False, "routes"),
    PanelRoute("POST", "/routes/{route}/pause", pause_route, OPERATORS, False, "route_pause"),
    PanelRoute("POST", "/routes/{route}/resume", resume_route, OPERATORS, False, "route_resume"),
    PanelRoute("POST", "/routes/{route}/drain", drain_unit, OPERATORS, False, "route_drain"),
    PanelRoute("POST", "/routes/{route}/restore", restore_unit, OPERATORS, False, "route_restore"),
    PanelRoute("GET", "/tokens", tokens_page, ADMIN, False, "tokens"),
    PanelRoute("POST", "/tokens", create_token_action, ADMIN, False, "token_create"),
    PanelRoute("POST", "/tokens/{id}/revoke", revoke_token_action, ADMIN, False, "token_revoke"),
)
