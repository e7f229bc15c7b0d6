"""The panel's operational pages: messages, inbound, routes, API tokens.

Every route is declared in `ROUTES` (see `routing.PanelRoute`), so the session, role,
CSRF and header checks come from the panel's one gate. Phone numbers and bodies are
masked for admin and operator and absent for viewer and auditor; one message at a time
can be revealed by a POST that writes a `reveal` audit entry first. Every action
(cancel, retry, reveal, pause, resume, drain, token create and revoke) is audited with
ids only. Messages, inbound messages and API tokens are read and acted on through the
application layer (`gw.usecases`, with the user as a `Caller` or actor), which masks
them for the user's role and writes the audit entries of cancel, retry, reveal and
token create and revoke.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.render import error_response, redirect, render
from gateway.admin.route_cards import route_cards
from gateway.admin.routing import ADMIN, OPERATORS, PHI_READERS, PanelRoute, current_user
from gateway.app import Gateway
from gateway.errors import ApiError
from gateway.models import Priority, State
from gateway.panel_users import Role
from gateway.routes import RouteRuntime
from gateway.tokens import SCOPES, BadScope, parse_scopes
from gateway.usecases import Caller
from gateway.usecases.messages import REFERENCE_SCAN_LIMIT, RETRYABLE, MessageSearch
from gateway.usecases.records import MessageRecord, Revealed
from gateway.web.context import GATEWAY, json_response
from gateway.web.formats import iso

log = structlog.get_logger("smsgw.admin.pages")

PAGE_SIZE = 50
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


def _caller(request: web.Request) -> Caller:
    """The signed-in user as the application layer knows them."""
    role = current_user(request).role
    return Caller.for_panel_user(
        actor(request), reads_phi=role in PHI_READERS, acts=role in OPERATORS
    )


def _failed(request: web.Request, e: ApiError) -> web.Response:
    message = e.message[:1].upper() + e.message[1:]
    return error_response(request, e.status, e.code, message.rstrip(".") + ".")


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

    def search(self, phi: bool) -> tuple[MessageSearch, list[str]]:
        """The use case's filter, and what the form got wrong (in the form's words)."""
        problems: list[str] = []
        state = priority = None
        if self.state:
            try:
                state = State(self.state)
            except ValueError:
                problems.append("Unknown state.")
        if self.priority:
            try:
                priority = Priority.parse(self.priority)
            except KeyError:
                problems.append("Unknown priority class.")
        times: list[float | None] = []
        for text, label in ((self.since, "From"), (self.until, "To")):
            ts = _parse_time(text) if text else None
            if text and ts is None:
                problems.append(f"{label}: not a date and time.")
            times.append(ts)
        search = MessageSearch(
            state=state,
            priority=priority,
            route=self.route or None,
            since=times[0],
            until=times[1],
            number=self.number if self.number and phi else None,
            reference=self.reference if self.reference and phi else None,
            cursor=self.before or None,
        )
        return search, problems


def _parse_time(text: str) -> float | None:
    """An ISO 8601 time; without a zone (an `<input type=datetime-local>` sent
    without script) it is read as UTC. app.js sends the browser's local time as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _message_row(m: MessageRecord) -> dict[str, Any]:
    return {
        "id": m.id,
        "state": m.status.value,
        "priority": m.priority.label,
        "route": m.route or m.route_hint,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "segments": m.segments,
        "attempts": m.attempts,
        "error_code": m.error_code,
        "possible_duplicate": m.possible_duplicate,
        "to_masked": m.to_masked,
        "body_masked": m.body_masked,
        "category": m.category,
        "purpose": m.purpose,
    }


async def messages_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    phi = _sees_phi(request)
    f = MessageFilter.from_query(request.query)
    search, problems = f.search(phi)
    messages: list[MessageRecord] = []
    next_cursor = None
    truncated = False
    if not problems:
        try:
            page = await gw.usecases.messages.search(_caller(request), search, PAGE_SIZE)
        except ApiError as e:
            if e.code != "invalid_number":
                raise
            problems.append("Phone number: not a valid number.")
        else:
            messages, next_cursor, truncated = list(page.messages), page.next_cursor, page.truncated
    return render(
        request,
        "messages.html",
        filter=f,
        phi=phi,
        problems=problems,
        truncated=truncated,
        messages=[_message_row(m) for m in messages],
        next_query=f.query_string(before=next_cursor) if next_cursor else None,
        first_query=f.query_string(before="") if f.before else None,
        states=[s.value for s in State],
        priorities=[p.label for p in Priority],
        routes=sorted(gw.routes),
        reference_scan_limit=REFERENCE_SCAN_LIMIT,
    )


async def message_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    try:
        m = await gw.usecases.messages.get(_caller(request), request.match_info["id"])
    except ApiError as e:
        return _failed(request, e)
    events = [
        {
            "at": iso(e.at),
            "state": e.state,
            "route": e.route,
            "carrier_id": e.carrier_id,
            "error_code": e.error_code,
            "attempt": e.attempt,
        }
        for e in m.events or ()
    ]
    return render(
        request,
        "message.html",
        m=_message_row(m),
        phi=_sees_phi(request),
        events=events,
        expires_at=iso(m.expires_at),
        send_at=iso(m.send_at),
        can_act=current_user(request).role in OPERATORS,
        cancellable=m.status in (State.QUEUED, State.SCHEDULED),
        retryable=m.status in RETRYABLE,
        notice=request.query.get("done", ""),
    )


async def reveal_message(request: web.Request) -> web.StreamResponse:
    """The plain number and body of one message; audited before it is answered."""
    gw = _gateway(request)
    try:
        revealed = await gw.usecases.messages.reveal(_caller(request), request.match_info["id"])
    except ApiError as e:
        return _failed(request, e)
    log.info("phi_revealed", message_id=revealed.id, user_id=current_user(request).id)
    return _reveal_answer(request, revealed, "message")


async def reveal_inbound(request: web.Request) -> web.StreamResponse:
    gw = _gateway(request)
    try:
        revealed = await gw.usecases.inbound.reveal(_caller(request), request.match_info["id"])
    except ApiError as e:
        return _failed(request, e)
    log.info("phi_revealed", inbound_id=revealed.id, user_id=current_user(request).id)
    return _reveal_answer(request, revealed, "inbound")


def _reveal_answer(request: web.Request, revealed: Revealed, kind: str) -> web.Response:
    values = {
        "id": revealed.id,
        "to": revealed.to,
        "body": revealed.body,
        "reference": revealed.reference,
    }
    if request.headers.get("HX-Request") == "true":
        response = render(request, "_reveal.html", v=values, kind=kind)
    else:
        response = json_response(values)
    response.headers.update(NO_STORE)
    return response


async def cancel_message(request: web.Request) -> web.Response:
    gw = _gateway(request)
    mid = request.match_info["id"]
    try:
        done = await gw.usecases.messages.cancel(_caller(request), mid)
    except ApiError as e:
        return _failed(request, e)
    if not done.changed:  # someone else cancelled it first
        return error_response(request, 409, "not_cancellable", "The message is cancelled already.")
    return redirect(f"/messages/{mid}?done=cancelled")


async def retry_message(request: web.Request) -> web.Response:
    """A failed or expired message is final; retry sends a copy as a new message."""
    gw = _gateway(request)
    try:
        copy = await gw.usecases.messages.retry(_caller(request), request.match_info["id"])
    except ApiError as e:
        return _failed(request, e)
    return redirect(f"/messages/{copy.id}?done=retried")


# -- inbound -------------------------------------------------------------------------------


async def inbound_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    phi = _sees_phi(request)
    before = request.query.get("before") or None
    try:
        page = await gw.usecases.inbound.newest(_caller(request), before, PAGE_SIZE)
    except ApiError as e:
        return _failed(request, e)
    items = [
        {
            "id": r.id,
            "route": r.route,
            "received_at": iso(r.received_at),
            "sender_masked": r.sender_masked,
        }
        for r in page.inbound
    ]
    return render(
        request,
        "inbound.html",
        items=items,
        phi=phi,
        next_before=page.next_cursor,
        paged=before is not None,
    )


# -- routes --------------------------------------------------------------------------------


async def routes_page(request: web.Request) -> web.Response:
    gw = _gateway(request)
    cards = route_cards(gw, await gw.usecases.status.sending_by_route())
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
        for t in reversed(await gw.usecases.tokens.list())
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
        token = await gw.usecases.tokens.create(actor(request), name, scopes)
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
    if not await gw.usecases.tokens.revoke(actor(request), token_id):
        return error_response(request, 404, "not_found", "No active token with this id.")
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
