"""The Kannel-compatible `/cgi-bin/sendsms` listener: a front end that only translates.

`KANNEL_ENDPOINTS` is the one table of what this listener serves, like the API's
`ENDPOINTS`: the routes are registered from it and every one names its authentication
(`kannel-user`: Kannel's username and password, mapped to an smsgw API token that must
hold the `send` scope). A request is read by `gateway.integrations.kannel`, accepted by
`accept` (the gateway's one accept path, as the token), and answered with Kannel's
status and text; an answer never quotes what was sent.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import request_scope
from gateway.admin.accounts import Accounts
from gateway.app import Gateway
from gateway.errors import ApiError
from gateway.intake import Accepted, SendRequest, validation_error
from gateway.integrations import kannel, kannel_dlr
from gateway.logs import exception_summary
from gateway.store.writer import Statement
from gateway.tokens import TokenRecord
from gateway.usecases import Caller
from gateway.web import headers
from gateway.web.client import ProxyTrust, client_address
from gateway.web.connections import GuardedAppRunner, limits_for

log = structlog.get_logger("smsgw.kannel")

SENDSMS = "/cgi-bin/sendsms"
SEND_SCOPE = "send"
# Kannel's reply headers (gw/smsbox.c `sendsms_reply_hdrs`), minus its Server name.
REPLY_HEADERS = {"Content-Type": "text/html", "Pragma": "no-cache", "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class KannelUser:
    """A configured sendsms user, its secrets read from their files."""

    username: str
    password: str
    token: str | None  # the token's text, or
    token_name: str | None  # the name of a live API token
    sender: str | None


@dataclass(frozen=True, slots=True)
class Listener:
    gateway: Gateway
    users: dict[str, KannelUser]
    origins: frozenset[str]
    accounts: Accounts  # throttles and locks password guesses like panel sign-ins


LISTENER = web.AppKey("kannel_listener", Listener)


@dataclass(frozen=True, slots=True)
class KannelEndpoint:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    auth: str  # "kannel-user": username and password mapped to a token with `send`
    summary: str


def answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, body=text.encode(), headers=REPLY_HEADERS)


def read_users(gateway: Gateway) -> dict[str, KannelUser]:
    """The configured users with their password and token files read (at start-up)."""
    users: dict[str, KannelUser] = {}
    for i, u in enumerate(gateway.config.kannel.users):
        secrets: list[str | None] = []
        for key, path in (("password_file", u.password_file), ("token_file", u.token_file)):
            if path is None:
                secrets.append(None)
                continue
            try:
                text = gateway.config.resolve(path).read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(f"kannel.users[{i}].{key}: cannot read ({e.strerror})") from None
            if not text:
                raise ValueError(f"kannel.users[{i}].{key}: the file is empty")
            secrets.append(text)
        password = secrets[0]
        assert password is not None
        users[u.username] = KannelUser(u.username, password, secrets[1], u.token, u.sender)
    return users


async def _authorise(
    listener: Listener, req: kannel.KannelRequest, source: str
) -> tuple[KannelUser, TokenRecord]:
    """The user and its token, or Kannel's authorisation failure (also while the user
    or this address is throttled or locked for wrong passwords)."""
    name, password = req.username, req.password
    if name is None or password is None:
        raise kannel.Refused(kannel.AUTH_FAILED)
    user = listener.users.get(name)
    right = user is not None and hmac.compare_digest(password.encode(), user.password.encode())
    if not await listener.accounts.service_login("kannel", name, source, right=right):
        raise kannel.Refused(kannel.AUTH_FAILED)
    assert user is not None  # a right password belongs to a configured user
    token = await _token(listener.gateway, user)
    if token is None or not {SEND_SCOPE, "admin"} & token.scopes:
        log.warning("kannel_user_token_unusable", user=user.username)
        raise kannel.Refused(kannel.AUTH_FAILED)
    return user, token


async def _token(gw: Gateway, user: KannelUser) -> TokenRecord | None:
    """The user's token if it is live: by its text, or by its name when exactly one
    live token has that name."""
    if user.token is not None:
        return await gw.tokens.verify(user.token)
    named = [t for t in await gw.usecases.tokens.list() if t.name == user.token_name]
    live = [t for t in named if t.revoked_at is None]
    return live[0] if len(live) == 1 else None


async def sendsms_get(request: web.Request) -> web.StreamResponse:
    """GET: Kannel's CGI parameters in the query string."""
    return await _sendsms(request, kannel.parse_get(request.rel_url.raw_query_string))


async def sendsms_post(request: web.Request) -> web.StreamResponse:
    """POST: the text as the body with X-Kannel-* headers (text/plain or octet-stream);
    a form body is refused "Invalid content-type", as Kannel 1.4.5 refuses it."""
    body = await request.read()
    return await _sendsms(request, kannel.parse_post(request.headers.items(), body))


async def _sendsms(request: web.Request, req: kannel.KannelRequest) -> web.StreamResponse:
    listener = request.app[LISTENER]
    user, token = await _authorise(listener, req, client_address(request))
    sender = user.sender
    plan = kannel.check(req, sender=sender, origins=listener.origins)
    accepted = await accept(listener.gateway, token, user, plan)
    blocked = [a for a in accepted if a.status == "blocked"]
    if blocked and len(blocked) == len(accepted):
        # Stored `blocked` (the calling system can read why); Kannel has no such answer,
        # so a refusal a Kannel client will not retry, with smsgw's reason code.
        raise kannel.Refused((403, f"Refused by consent policy ({blocked[0].reason}), rejected"))
    held = any(a.status == "scheduled" and a.reason is not None for a in accepted)
    if held or listener.gateway.not_ready() is not None:
        return answer(*kannel.QUEUED)  # stored; goes later (held by the policy, or no route up)
    return answer(*kannel.ACCEPTED)


async def accept(
    gw: Gateway, token: TokenRecord, user: KannelUser, plan: kannel.SendPlan
) -> list[Accepted]:
    """Accept one message per receiver in one commit, with their dlr-url rows.

    The one place this front end reaches the gateway: the accept use case validates,
    commits and hands to the scheduler; its refusals become Kannel answers."""
    now = gw.clock.time()
    try:
        requests = [
            msgspec.convert(plan.send_request(to, now), SendRequest, strict=True)
            for to in plan.receivers
        ]
    except msgspec.ValidationError as e:
        raise _refusal(validation_error(str(e))) from None

    def dlr_rows(ids: list[str]) -> list[Statement]:
        if plan.dlr_url is None:
            return []
        return [  # where the messages go: the node's store or the cluster's (`dlr_wishes`)
            gw.dlr_wishes.statement(message_id, kannel_dlr.wish_of(plan, to, user.username), now)
            for message_id, to in zip(ids, plan.receivers, strict=True)
        ]

    try:
        accepted = await gw.usecases.messages.accept_together(
            Caller.for_token(token), requests, attached=dlr_rows
        )
    except ApiError as e:
        if e.code in ("shutting_down", "store_unavailable", "key_retired"):  # send again
            log.error("kannel_not_accepted", code=e.code)
            raise kannel.Refused(kannel.TEMPORARY) from None
        raise _refusal(e) from None
    log.info("kannel_accepted", user=user.username, ids=[a.id for a in accepted])
    return accepted


def _refusal(e: ApiError) -> kannel.Refused:
    """smsgw's refusal in Kannel's terms: no route is Kannel's "Not routable", the
    rest a field error naming the field (ApiError messages never quote a value)."""
    if e.code in ("no_route", "unknown_route"):
        return kannel.Refused(kannel.NOT_ROUTABLE)
    field = {"to": "Receiver", "body": "Text", "route": "SMSC", "category": "Account"}
    name = field.get((e.field or "").split(".")[-1], "Request")
    if e.field == "send_at":
        name = "Deferred"
    elif e.field == "expires_at":
        name = "Validity"
    return kannel.Refused((400, f"{name} field refused ({e.code}), rejected"))


KANNEL_ENDPOINTS: tuple[KannelEndpoint, ...] = (
    KannelEndpoint("GET", SENDSMS, sendsms_get, "kannel-user", "Send one SMS (CGI parameters)"),
    KannelEndpoint(
        "POST", SENDSMS, sendsms_post, "kannel-user", "Send one SMS (body and X-Kannel headers)"
    ),
)


@web.middleware
async def kannel_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every outcome as Kannel answers it: its refusals, 404 "Unknown request.", and an
    empty 400 for a method it does not serve."""
    started = time.perf_counter()
    mark = request_scope.begin()  # the cluster's pool answers it without long waits
    try:
        response = await handler(request)
    except kannel.Refused as e:
        response = answer(e.status, e.text)
    except web.HTTPNotFound:
        response = answer(*kannel.UNKNOWN_REQUEST)
    except web.HTTPMethodNotAllowed:
        response = web.Response(status=400, headers={"Connection": "close"})
    except web.HTTPException as e:
        response = answer(e.status, e.reason)
    except Exception as e:
        log.error("kannel_unhandled_error", error=exception_summary(e))
        response = answer(*kannel.TEMPORARY)
    finally:
        request_scope.end(mark)
    log.debug(
        "kannel_http",
        method=request.method,
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


def build_app(gateway: Gateway, users: dict[str, KannelUser] | None = None) -> web.Application:
    c = gateway.config
    app = web.Application(middlewares=[kannel_middleware], client_max_size=64 * 1024)
    app[LISTENER] = Listener(
        gateway,
        read_users(gateway) if users is None else users,
        frozenset(c.kannel.dlr_url_origins),
        Accounts(gateway.admin_repo, gateway.audit, gateway.clock, c.admin),
    )
    for endpoint in KANNEL_ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    headers.install(app)
    return app


def build_runner(gateway: Gateway, app: web.Application | None = None) -> GuardedAppRunner:
    """The listener's runner, with the API's slow-client and connection guards."""
    c = gateway.config.http
    limits = limits_for(c)
    return GuardedAppRunner(
        app or build_app(gateway),
        limits,
        ProxyTrust(c.trusted_proxies, c.proxy_headers),
        handle_signals=False,
        access_log=None,  # a GET's query string holds the number and the text
    )
