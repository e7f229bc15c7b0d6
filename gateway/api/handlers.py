"""HTTP handlers of `/api/v1`. Each one is listed, with its scope, in `server.ENDPOINTS`.

Handlers translate: a request into a call to the application layer
(`gateway/usecases/`, reached as `gw.usecases`) with the token's `Caller`, and its
typed records into JSON. They do not read or write the store for messages or inbound.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import metrics_state
from gateway.api.query import query_time
from gateway.api.views import InboundPage, MessagePage, inbound_view, message_view
from gateway.app import Gateway
from gateway.demo import DemoAdvance, DemoInbound, DemoPeers, UnknownPeer
from gateway.errors import ApiError
from gateway.intake import (
    SendRequest,
    decode_batch,
    decode_item,
    decode_send,
    decode_valid_batch,
    decode_with,
)
from gateway.models import Priority, State
from gateway.tokens import TokenRecord
from gateway.usecases import Caller
from gateway.usecases.messages import IDEMPOTENCY_KEY_MAX, IdempotencyKey, MessageSearch
from gateway.web.context import JSON_HEADERS, gateway_of, json_response
from gateway.web.rendered import Rendered

log = structlog.get_logger("smsgw.api")
IDEMPOTENCY_LOCKS: web.AppKey[dict[tuple[str, bytes], asyncio.Lock]] = web.AppKey(
    "idempotency_locks", dict
)


class LazyDocument:
    """The OpenAPI document, built at the first request for it and kept: building it
    walks every endpoint's types (about 0.1 s of CPU), which no start need wait for
    (issue 16, start-up)."""

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build
        self._document: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        if self._document is None:
            self._document = self._build()
        return self._document


OPENAPI: web.AppKey[LazyDocument] = web.AppKey("openapi", LazyDocument)
AUTH_RECORD: web.RequestKey[TokenRecord] = web.RequestKey("auth", TokenRecord)
MAX_PAGE = 500
INCLUDE_PHI = "phi"
_encode = msgspec.json.encode


_gateway = gateway_of  # the app's gateway (one call fewer than a function calling it)


def _token(request: web.Request) -> TokenRecord:
    token: TokenRecord = request[AUTH_RECORD]
    return token


# A token's Caller, built once (5 us each time): a record is frozen, so is a Caller,
# and a changed or revoked token is a new record. Kept by the record's identity (the
# token cache hands out the same object): hashing the record's fields took 3 us.
_CALLERS: dict[int, tuple[TokenRecord, Caller]] = {}
_CALLERS_MAX = 1024


def _caller(request: web.Request) -> Caller:
    token = _token(request)
    kept = _CALLERS.get(id(token))
    if kept is not None and kept[0] is token:
        return kept[1]
    if len(_CALLERS) >= _CALLERS_MAX:
        _CALLERS.clear()
    caller = Caller.for_token(token)
    _CALLERS[id(token)] = (token, caller)  # the record is kept: its id is not reused
    return caller


# -- sending ---------------------------------------------------------------------------


class Idempotency:
    """`Idempotency-Key` handling: first response stored with the messages it created.

    Requests with the same key from the same token are serialised, so concurrent
    retries wait for the first one and then get its stored response.
    """

    def __init__(self, request: web.Request, raw: bytes, token_id: str, status: int) -> None:
        key = request.headers.get("Idempotency-Key")
        self._token_id = token_id
        self.key: IdempotencyKey | None = None
        self._locks = request.app[IDEMPOTENCY_LOCKS]
        self._lock: asyncio.Lock | None = None
        if key is not None:
            if not key or len(key) > IDEMPOTENCY_KEY_MAX:
                raise ApiError(
                    400,
                    "invalid_idempotency_key",
                    f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters",
                )
            self.key = IdempotencyKey(
                hashlib.sha256(key.encode()).digest(),
                hashlib.sha256(request.path.encode() + b"\0" + raw).digest(),
                status,
            )

    async def __aenter__(self) -> Idempotency:
        if self.key is not None:
            self._slot = (self._token_id, self.key.key_hash)
            self._lock = self._locks.setdefault(self._slot, asyncio.Lock())
            await self._lock.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            if not self._lock.locked() and self._locks.get(self._slot) is self._lock:
                del self._locks[self._slot]

    async def replay(self, gw: Gateway, caller: Caller) -> web.Response | None:
        if self.key is None:
            return None
        stored = await gw.usecases.messages.replay(caller, self.key)
        if stored is None:
            return None
        return web.Response(
            body=stored.body,
            status=stored.status,
            headers={**JSON_HEADERS, "Idempotent-Replayed": "true"},
        )


SendHandler = Callable[[Gateway, Caller, bytes, IdempotencyKey | None], Awaitable[object]]


async def _send(request: web.Request, handle: SendHandler) -> web.Response:
    """The shared path of every send: accepting?, idempotent replay, then `handle`."""
    gw = _gateway(request)
    gw.usecases.messages.check_accepting()
    caller = _caller(request)
    raw = await request.read()
    if "Idempotency-Key" not in request.headers:  # most sends: no lock, nothing to replay
        return json_response(await handle(gw, caller, raw, None), status=202)
    async with Idempotency(request, raw, _token(request).id, 202) as idem:
        replayed = await idem.replay(gw, caller)
        if replayed is not None:
            return replayed
        return json_response(await handle(gw, caller, raw, idem.key), status=202)


async def send_message(request: web.Request) -> web.StreamResponse:
    if "Idempotency-Key" in request.headers:
        return await _send(request, _send_one)
    # Most sends, `_send` without its layers (each awaited layer is resumed per request).
    messages = _gateway(request).usecases.messages
    messages.check_accepting()
    caller = _caller(request)
    accepted = await messages.accept(caller, decode_send(await request.read()))
    return Rendered(_encode(accepted), status=202)  # aiohttp's answer, in one write


async def send_batch(request: web.Request) -> web.Response:
    return await _send(request, _send_batch)


async def _send_one(gw: Gateway, caller: Caller, raw: bytes, key: IdempotencyKey | None) -> object:
    return await gw.usecases.messages.accept(caller, decode_send(raw), idempotency=key)


async def _send_batch(
    gw: Gateway, caller: Caller, raw: bytes, key: IdempotencyKey | None
) -> object:
    messages = gw.usecases.messages
    valid = decode_valid_batch(raw)
    if valid is not None:
        messages.check_batch_size(len(valid))
        return await messages.accept_batch(caller, valid, idempotency=key)
    raw_items = decode_batch(raw)
    messages.check_batch_size(len(raw_items))
    items: list[SendRequest | ApiError] = []
    for i, item in enumerate(raw_items):
        try:
            items.append(decode_item(item, i))
        except ApiError as e:
            items.append(e)
    return await messages.accept_batch(caller, items, idempotency=key)


async def cancel_message(request: web.Request) -> web.Response:
    gw = _gateway(request)
    done = await gw.usecases.messages.cancel(_caller(request), request.match_info["id"])
    return json_response({"id": done.id, "status": done.status.value})


# -- reading ---------------------------------------------------------------------------


def _include_phi(request: web.Request) -> bool:
    """`include=phi`: the whole number and body (needs the 'phi' scope; audited)."""
    text = request.query.get("include")
    if text is None:
        return False
    if text != INCLUDE_PHI:
        raise ApiError(400, "invalid_query", "include: expected phi", field="include")
    return True


async def get_message(request: web.Request) -> web.Response:
    gw = _gateway(request)
    record = await gw.usecases.messages.get(
        _caller(request), request.match_info["id"], phi=_include_phi(request)
    )
    return json_response(message_view(record))


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "50")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(
            400, "invalid_query", f"limit: expected an integer from 1 to {MAX_PAGE}", field="limit"
        )
    return int(text)


def _search(request: web.Request) -> MessageSearch:
    q = request.query
    state = priority = overdue = None
    if "status" in q:
        try:
            state = State(q["status"])
        except ValueError:
            raise ApiError(
                400, "invalid_query", "status: not a message state", field="status"
            ) from None
    if "priority" in q:
        try:
            priority = Priority.parse(q["priority"])
        except KeyError:
            raise ApiError(
                400, "invalid_query", "priority: not a priority class", field="priority"
            ) from None
    if "receipt_overdue" in q:
        if q["receipt_overdue"] not in ("true", "false"):
            raise ApiError(
                400,
                "invalid_query",
                "receipt_overdue: expected true or false",
                field="receipt_overdue",
            )
        overdue = q["receipt_overdue"] == "true"
    return MessageSearch(
        state=state,
        priority=priority,
        route=q.get("route"),
        receipt_overdue=overdue,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        number=q.get("to"),
        cursor=q.get("cursor"),
    )


async def list_messages(request: web.Request) -> web.Response:
    gw = _gateway(request)
    search = _search(request)
    limit = _limit(request)
    phi = _include_phi(request)
    page = await gw.usecases.messages.search(_caller(request), search, limit, phi=phi)
    return json_response(MessagePage([message_view(m) for m in page.messages], page.next_cursor))


async def list_inbound(request: web.Request) -> web.Response:
    gw = _gateway(request)
    limit = _limit(request)
    phi = _include_phi(request)
    order = request.query.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise ApiError(400, "invalid_query", "order: expected newest or oldest", field="order")
    inbound = gw.usecases.inbound
    cursor = request.query.get("cursor")
    if order == "oldest":
        page = await inbound.after(_caller(request), cursor, limit, phi=phi)
    else:
        page = await inbound.newest(_caller(request), cursor, limit, phi=phi)
    return json_response(InboundPage([inbound_view(r) for r in page.inbound], page.next_cursor))


async def get_inbound(request: web.Request) -> web.Response:
    gw = _gateway(request)
    record = await gw.usecases.inbound.get(
        _caller(request), request.match_info["id"], phi=_include_phi(request)
    )
    return json_response(inbound_view(record))


async def undecodable_inbound(request: web.Request) -> web.Response:
    """How many inbound records are held undecoded for an operator (no record shown)."""
    return json_response(await _gateway(request).usecases.undecodable.summary())


async def get_queue(request: web.Request) -> web.Response:
    q = await _gateway(request).usecases.status.queue()
    return json_response(
        {
            "queued": {c.name: c.queued for c in q.classes},
            "scheduled": {c.name: c.scheduled for c in q.classes},
            "sending": {c.name: c.sending for c in q.classes},
            "in_flight": q.in_flight,
            "oldest_age_seconds": None if q.oldest_age is None else round(q.oldest_age, 3),
            "possible_duplicates": q.possible_duplicates,
            "accepting": q.accepting,
        }
    )


async def get_routes(request: web.Request) -> web.Response:
    gw = _gateway(request)
    return json_response({"routes": [r.describe() for r in gw.routes.values()]})


async def pause_route(request: web.Request) -> web.Response:
    return await _set_paused(request, paused=True)


async def resume_route(request: web.Request) -> web.Response:
    return await _set_paused(request, paused=False)


async def _set_paused(request: web.Request, *, paused: bool) -> web.Response:
    route = await _gateway(request).set_route_paused(
        request.match_info["name"], paused=paused, actor=f"token:{_token(request).id}"
    )
    if route is None:
        raise ApiError(404, "not_found", "no route with this name")
    return json_response(route.describe())


async def healthz(request: web.Request) -> web.Response:
    gw = _gateway(request)
    up = [r.name for r in gw.routes.values() if not r.paused and r.health().can_send]
    reason = gw.not_ready()
    body: dict[str, object] = {
        "status": "ok" if reason is None else "degraded",
        "ready": reason is None,
        "accepting": gw.accepting,
        "routes_up": len(up),
        "routes": len(gw.routes),
    }
    if reason is not None:
        body["reason"] = reason
    if gw.cluster is not None:  # which node answered, and its lease
        body["node"] = gw.cluster.describe()
    if gw.directory is not None:  # sign-in only, so readiness does not change
        body["directory"] = gw.directory.status.describe(public=True)
    return json_response(body, status=200 if reason is None else 503)


async def metrics(request: web.Request) -> web.Response:
    gw = _gateway(request)
    await metrics_state.refresh(gw)
    data = generate_latest(gw.metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI].get())


# -- the embedded default's simulated peers (see gateway/demo.py) --------------------------


_DEMO_INBOUND = msgspec.json.Decoder(DemoInbound)
_DEMO_ADVANCE = msgspec.json.Decoder(DemoAdvance)


def _demo(request: web.Request) -> DemoPeers:
    demo = _gateway(request).demo
    if demo is None:
        raise ApiError(404, "demo_off", "no simulated peers here (demo.peers = true runs them)")
    return demo


async def demo_inbound(request: web.Request) -> web.Response:
    demo = _demo(request)
    body = decode_with(_DEMO_INBOUND, await request.read())
    try:
        demo.inject_inbound(body)
    except UnknownPeer as e:
        raise ApiError(404, "demo_off", str(e)) from None
    log.info("demo_inbound_injected", via=body.via, parts=body.parts, token_id=_token(request).id)
    return json_response({"injected": True, "via": body.via}, status=202)


async def demo_advance_clock(request: web.Request) -> web.Response:
    demo = _demo(request)
    body = decode_with(_DEMO_ADVANCE, await request.read())
    try:
        offset = demo.advance_clock(body.seconds)
    except UnknownPeer as e:
        raise ApiError(404, "demo_off", str(e)) from None
    gateway = _gateway(request)
    gateway.scheduler.wake()
    log.info("demo_clock_advanced", seconds=body.seconds, token_id=_token(request).id)
    now = datetime.fromtimestamp(gateway.clock.time(), UTC).isoformat(timespec="seconds")
    return json_response({"advanced": body.seconds, "offset": offset, "now": now})


async def demo_peers(request: web.Request) -> web.Response:
    return json_response(_demo(request).counts())


async def demo_drop_smsc(request: web.Request) -> web.Response:
    demo = _demo(request)
    try:
        demo.drop_smsc_links()
    except UnknownPeer as e:
        raise ApiError(404, "demo_off", str(e)) from None
    log.info("demo_smsc_links_dropped", token_id=_token(request).id)
    return json_response({"dropped": True})


async def demo_unplug_modem(request: web.Request) -> web.Response:
    return await _plug(request, plugged=False)


async def demo_replug_modem(request: web.Request) -> web.Response:
    return await _plug(request, plugged=True)


async def _plug(request: web.Request, *, plugged: bool) -> web.Response:
    demo = _demo(request)
    try:
        modem = demo.modem(int(request.match_info["index"]))
    except (UnknownPeer, ValueError):
        raise ApiError(404, "not_found", "no emulated modem with this index") from None
    if modem.plugged != plugged:
        await (modem.replug() if plugged else modem.unplug())
    log.info("demo_modem_plug", plugged=plugged, token_id=_token(request).id)
    return json_response({"plugged": modem.plugged})
