"""HTTP handlers of `/api/v1`. Each one is listed, with its scope, in `server.ENDPOINTS`."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.views import InboundPage, MessagePage, inbound_view, message_view
from gateway.app import Gateway
from gateway.demo import DemoInbound, DemoPeers, UnknownPeer
from gateway.errors import ApiError
from gateway.intake import (
    Accepted,
    AwareTime,
    Prepared,
    decode_batch,
    decode_item,
    decode_send,
    decode_with,
    normalise_number,
)
from gateway.models import Priority, State
from gateway.store.store import TokenRecord

log = structlog.get_logger("smsgw.api")
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
IDEMPOTENCY_LOCKS: web.AppKey[dict[tuple[str, bytes], asyncio.Lock]] = web.AppKey(
    "idempotency_locks", dict
)
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
AUTH_RECORD: web.RequestKey[TokenRecord] = web.RequestKey("auth", TokenRecord)
MAX_PAGE = 500
IDEMPOTENCY_KEY_MAX = 255
_encode = msgspec.json.encode


JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(data),
        status=status,
        headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
    )


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _token(request: web.Request) -> TokenRecord:
    token: TokenRecord = request[AUTH_RECORD]
    return token


def _owner(token: TokenRecord) -> str | None:
    """The token whose messages this one may see and act on; None for all (admin)."""
    return None if "admin" in token.scopes else token.id


def _not_found() -> ApiError:
    # The same answer for "no such message" and "another token's message": a token
    # cannot learn that someone else's message exists.
    return ApiError(404, "not_found", "no message with this id")


# -- sending ---------------------------------------------------------------------------


class Idempotency:
    """`Idempotency-Key` handling: first response stored with the messages it created.

    Requests with the same key from the same token are serialised, so concurrent
    retries wait for the first one and then get its stored response.
    """

    def __init__(self, request: web.Request, raw: bytes, token_id: str) -> None:
        key = request.headers.get("Idempotency-Key")
        self._token_id = token_id
        self.key_hash: bytes | None = None
        self._locks = request.app[IDEMPOTENCY_LOCKS]
        self._lock: asyncio.Lock | None = None
        if key is not None:
            if not key or len(key) > IDEMPOTENCY_KEY_MAX:
                raise ApiError(
                    400,
                    "invalid_idempotency_key",
                    f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters",
                )
            self.key_hash = hashlib.sha256(key.encode()).digest()
            self.request_hash = hashlib.sha256(request.path.encode() + b"\0" + raw).digest()

    async def __aenter__(self) -> Idempotency:
        if self.key_hash is not None:
            self._slot = (self._token_id, self.key_hash)
            self._lock = self._locks.setdefault(self._slot, asyncio.Lock())
            await self._lock.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            if not self._lock.locked() and self._locks.get(self._slot) is self._lock:
                del self._locks[self._slot]

    async def replay(self, gw: Gateway) -> web.Response | None:
        if self.key_hash is None:
            return None
        row = await gw.store.find_idempotent(self._token_id, self.key_hash)
        if row is None:
            return None
        if row["request_hash"] != self.request_hash:
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request",
            )
        return web.Response(
            body=row["response"],
            status=row["status"],
            headers={**JSON_HEADERS, "Idempotent-Replayed": "true"},
        )


async def _commit(
    gw: Gateway,
    token_id: str,
    prepared: list[Prepared],
    idem: Idempotency,
    status: int,
    build: Callable[[list[Accepted]], object],
) -> web.Response:
    """Commit the messages (and the idempotency record) in one transaction, then answer."""
    started = time.perf_counter()
    statements = gw.intake.statements(prepared)
    body = _encode(build([p.answer() for p in prepared]))
    if idem.key_hash is not None:
        statements.append(
            gw.store.idempotency_statement(
                token_id, idem.key_hash, idem.request_hash, status, body, gw.clock.time()
            )
        )
    try:
        await gw.store.insert(statements)
    except Exception as e:
        raise ApiError(
            503, "store_unavailable", "the message store could not commit; nothing was accepted"
        ) from e
    gw.intake.accepted(prepared)
    gw.metrics.accept_latency.observe(time.perf_counter() - started)
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


def _check_accepting(gw: Gateway) -> None:
    if not gw.accepting:
        raise ApiError(
            503,
            "shutting_down",
            "the gateway is shutting down; retry shortly",
            headers={"Retry-After": "5"},
        )


SendHandler = Callable[[Gateway, TokenRecord, bytes, "Idempotency"], Awaitable[web.Response]]


async def _send(request: web.Request, handle: SendHandler) -> web.Response:
    """The shared path of every send: accepting?, idempotent replay, then `handle`."""
    gw = _gateway(request)
    _check_accepting(gw)
    token = _token(request)
    raw = await request.read()
    async with Idempotency(request, raw, token.id) as idem:
        replayed = await idem.replay(gw)
        if replayed is not None:
            return replayed
        return await handle(gw, token, raw, idem)


async def send_message(request: web.Request) -> web.Response:
    return await _send(request, _send_one)


async def send_batch(request: web.Request) -> web.Response:
    return await _send(request, _send_batch)


async def _send_one(gw: Gateway, token: TokenRecord, raw: bytes, idem: Idempotency) -> web.Response:
    prepared = gw.intake.prepare(decode_send(raw), token.id, gw.clock.time())
    return await _commit(gw, token.id, [prepared], idem, 202, lambda a: a[0])


async def _send_batch(
    gw: Gateway, token: TokenRecord, raw: bytes, idem: Idempotency
) -> web.Response:
    items = decode_batch(raw)
    limit = gw.config.http.max_batch
    if not items:
        raise ApiError(422, "empty_batch", "messages: the batch is empty", field="messages")
    if len(items) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"messages: at most {limit} messages per batch",
            field="messages",
        )
    now = gw.clock.time()
    prepared: list[Prepared] = []
    errors: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(items):
        try:
            request = decode_item(item, i)
            prepared.append(gw.intake.prepare(request, token.id, now, f"messages[{i}]."))
        except ApiError as e:
            errors[i] = e.body()
    if not prepared:
        raise ApiError(422, "batch_rejected", "no message in the batch was valid", field="messages")

    def build(accepted: list[Accepted]) -> dict[str, Any]:
        results: list[Any] = []
        it = iter(accepted)
        for i in range(len(items)):
            results.append(errors[i] if i in errors else next(it))
        return {"accepted": len(accepted), "rejected": len(errors), "results": results}

    return await _commit(gw, token.id, prepared, idem, 202, build)


async def cancel_message(request: web.Request) -> web.Response:
    gw = _gateway(request)
    message_id = request.match_info["id"]
    state = await gw.store.cancel(message_id, gw.clock.time(), owner=_owner(_token(request)))
    if state is None:
        raise _not_found()
    if state is not State.CANCELLED:
        raise ApiError(
            409, "not_cancellable", f"the message is {state.value} and can no longer be cancelled"
        )
    gw.scheduler.forget(message_id)
    return json_response({"id": message_id, "status": state.value})


# -- reading ---------------------------------------------------------------------------


async def get_message(request: web.Request) -> web.Response:
    gw = _gateway(request)
    token = _token(request)
    message_id = request.match_info["id"]
    row = await gw.store.message_row(message_id)
    owner = _owner(token)
    if row is None or (owner is not None and row["token_id"] != owner):
        raise _not_found()
    events = await gw.store.events(message_id)
    return json_response(message_view(gw.store, row, events, viewer=token.id))


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "50")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(
            400, "invalid_query", f"limit: expected an integer from 1 to {MAX_PAGE}", field="limit"
        )
    return int(text)


def _query_float(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return msgspec.json.decode(f'"{text}"'.encode(), type=AwareTime).timestamp()
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ApiError(
            400,
            "invalid_query",
            f"{name}: expected an RFC 3339 time with a zone or Unix seconds",
            field=name,
        ) from None


async def list_messages(request: web.Request) -> web.Response:
    gw = _gateway(request)
    token = _token(request)
    q = request.query
    where: list[tuple[str, Any]] = []
    owner = _owner(token)
    if owner is not None:
        where.append(("token_id = ?", owner))
    if "status" in q:
        try:
            where.append(("state = ?", State(q["status"]).value))
        except ValueError:
            raise ApiError(
                400, "invalid_query", "status: not a message state", field="status"
            ) from None
    if "priority" in q:
        try:
            where.append(("priority = ?", int(Priority.parse(q["priority"]))))
        except KeyError:
            raise ApiError(
                400, "invalid_query", "priority: not a priority class", field="priority"
            ) from None
    if "route" in q:
        where.append(("route = ?", q["route"]))
    if "receipt_overdue" in q:
        if q["receipt_overdue"] not in ("true", "false"):
            raise ApiError(
                400,
                "invalid_query",
                "receipt_overdue: expected true or false",
                field="receipt_overdue",
            )
        where.append(("(receipt_overdue = 1) = ?", q["receipt_overdue"] == "true"))
    for name, clause in (("since", "created_at >= ?"), ("until", "created_at < ?")):
        value = _query_float(request, name)
        if value is not None:
            where.append((clause, value))
    limit = _limit(request)
    if "to" in q:
        if "phi" not in token.scopes:
            raise ApiError(
                403, "forbidden", "to: looking up a number needs the 'phi' scope", field="to"
            )
        e164 = normalise_number(q["to"], gw.config.queue.default_region)
        if e164 is None:
            raise ApiError(400, "invalid_number", "to: not a valid phone number", field="to")
        where.append(("to_index = ?", gw.store.blind_index(e164)))
        await gw.audit.record(f"token:{token.id}", "phi_number_lookup", "messages", None)
    rows = await gw.store.list_messages(where=where, cursor=q.get("cursor"), limit=limit)
    views = [message_view(gw.store, r, viewer=token.id) for r in rows]
    next_cursor = views[-1].id if len(views) == limit else None
    return json_response(MessagePage(views, next_cursor))


async def list_inbound(request: web.Request) -> web.Response:
    gw = _gateway(request)
    limit = _limit(request)
    rows = await gw.store.list_inbound(request.query.get("cursor"), limit)
    views = [inbound_view(gw.store, r) for r in rows]
    return json_response(
        InboundPage(inbound=views, next_cursor=views[-1].id if len(views) == limit else None)
    )


async def undecodable_inbound(request: web.Request) -> web.Response:
    """How many inbound records are held undecoded for an operator (no record shown)."""
    return json_response(await _gateway(request).sink.undecodable_summary())


async def get_queue(request: web.Request) -> web.Response:
    gw = _gateway(request)
    depths = gw.scheduler.depths()
    counts = await gw.store.state_counts()
    sending = {p.label: counts.get(("sending", int(p)), 0) for p in Priority}
    oldest = gw.scheduler.oldest_due()
    now = gw.clock.time()
    return json_response(
        {
            **depths,
            "sending": sending,
            "in_flight": gw.scheduler.in_flight,
            "oldest_age_seconds": None if oldest is None else round(max(0.0, now - oldest), 3),
            "possible_duplicates": await gw.store.possible_duplicates(),
            "accepting": gw.accepting,
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
    return json_response(body, status=200 if reason is None else 503)


async def metrics(request: web.Request) -> web.Response:
    gw = _gateway(request)
    for state, per_class in gw.scheduler.depths().items():
        if state == "queued":
            for label, n in per_class.items():
                gw.metrics.queue_depth.labels(label).set(n)
    for route in gw.routes.values():
        members = route.health().members
        if members:
            gw.metrics.observe_members(route.name, members)
    data = generate_latest(gw.metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


# -- the embedded default's simulated peers (see gateway/demo.py) --------------------------


_DEMO_INBOUND = msgspec.json.Decoder(DemoInbound)


def _demo(request: web.Request) -> DemoPeers:
    demo = _gateway(request).demo
    if demo is None:
        raise ApiError(404, "demo_off", "no simulated peers run with a config file")
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
