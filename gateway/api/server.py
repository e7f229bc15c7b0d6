"""The aiohttp application: one endpoint table, one auth gate, one error shape.

`ENDPOINTS` is the single list of what the API serves. Registration, authentication
and the OpenAPI document are all derived from it, so a route cannot be added without a
scope decision and a description.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import request_scope
from gateway.api import analytics as an
from gateway.api import appointments as ap
from gateway.api import campaigns as cmp  # i15-campaigns
from gateway.api import consent as c
from gateway.api import contacts as contacts_api
from gateway.api import contacts_endpoints as contacts_table
from gateway.api import handlers as h
from gateway.api import reminder_rules, surveys
from gateway.api import templates as t
from gateway.api.cluster import CLUSTER_ENDPOINTS
from gateway.api.consent_reviews import REVIEW_ENDPOINTS
from gateway.api.endpoint import INVALID_QUERY, Endpoint
from gateway.api.erasure import ERASURE_ENDPOINTS
from gateway.api.hl7_endpoints import HL7_ENDPOINTS
from gateway.api.links import LINK_ENDPOINTS
from gateway.api.medication import describe as describe_medication
from gateway.api.medication_endpoints import MEDICATION_ENDPOINTS
from gateway.api.openapi import PROMETHEUS_TEXT, Answer, Link, Query, build_openapi
from gateway.api.reply_endpoints import REPLY_ENDPOINTS
from gateway.api.shaping import error_answer, shaped
from gateway.api.views import InboundPage, InboundView, MessagePage, MessageView
from gateway.app import Gateway
from gateway.cluster.local_only import LocalFeature, feature_of_path, refusal
from gateway.demo import DemoAdvance, DemoInbound
from gateway.errors import ApiError
from gateway.intake import Accepted, BatchRequest, SendRequest
from gateway.models import Priority, State
from gateway.usecases.undecodable import HeldUndecodable
from gateway.web.context import GATEWAY
from gateway.web.guard import RequestCheck

log = structlog.get_logger("smsgw.api")


# A message id (`gateway.models.IdGenerator`): 26 Crockford base-32 characters. The
# pattern also keeps `/messages/batch` from being read as a message id.
MESSAGE_ID = "{id:[0-9A-HJKMNP-TV-Z]{26}}"
_LIMIT = Query(
    "limit",
    f"page size, 1 to {h.MAX_PAGE}",
    {"type": "integer", "minimum": 1, "maximum": h.MAX_PAGE, "default": 50},
)
_CURSOR = Query("cursor", "next_cursor of the previous page")
_TIME = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
_LIST_QUERY = (
    Query("status", "message state", {"type": "string", "enum": [s.value for s in State]}),
    Query("priority", "priority class", {"type": "string", "enum": [p.label for p in Priority]}),
    Query("route", "route name"),
    Query(
        "receipt_overdue",
        "true: only messages whose receipt is overdue; false: the others",
        {"type": "string", "enum": ["true", "false"]},
    ),
    Query("since", "created at or after (RFC 3339 or Unix seconds)", _TIME),
    Query("until", "created before (RFC 3339 or Unix seconds)", _TIME),
    Query(
        "to",
        "exact recipient number (matched through the blind index); needs the 'phi' scope,"
        " and every lookup is audited",
        {"type": "string", "format": "phone"},
    ),
    _LIMIT,
    _CURSOR,
)
_INCLUDE = Query(
    "include",
    "phi: also the whole number and body (sender and text for inbound); needs the"
    " 'phi' scope, and every message so read is written to the audit trail by id",
    {"type": "string", "enum": ["phi"]},
)
_NO_PHI = Answer(403, "`forbidden`: `include=phi` needs the 'phi' scope")
_INBOUND_QUERY = (
    _LIMIT,
    Query(
        "order",
        "newest (default): newest first, `cursor` goes to older ones; oldest: in commit"
        " order from the first, or after `cursor`, with next_cursor always set, so a"
        " client polling with it never misses or re-reads a message",
        {"type": "string", "enum": ["newest", "oldest"], "default": "newest"},
    ),
    Query(
        "cursor", "next_cursor of the previous page", {"type": "string", "pattern": "^[0-9]{1,18}$"}
    ),
    _INCLUDE,
)
_ON_MESSAGE = (
    Link("GetMessage", "getMessagesId", {"id": "$response.body#/id"}),
    Link("CancelMessage", "deleteMessagesId", {"id": "$response.body#/id"}),
)
_NO_MESSAGE = Answer(404, "`not_found`: no message with this id that this token may see")
_DEMO_OFF = Answer(
    404, "`demo_off`: only the embedded default or a config with demo.peers = true runs these"
)
_HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "directory": {  # only with [directory] enabled; never changes readiness
            "type": "object",
            "properties": {
                "state": {"type": "string", "enum": ["unknown", "up", "down"]},
                "tls_error": {"type": "boolean"},
                "since": {"type": "number"},
            },
        },
    },
}

# -- consent (issue 12): numbers in the query or the body, never in the path ----------
_NUMBER = Query(
    "number",
    "the phone number (matched through the blind index)",
    {"type": "string", "format": "phone"},
    required=True,
)
_SCOPE = Query("scope", "all (default), kind:<kind> or purpose:<purpose>", c.SCOPE_SCHEMA)
_PROGRAM = Query(
    "program", "a configured program, default, or * (every program; default)", c.PROGRAM_SCHEMA
)
_NUMBER_FIELDS = (
    Answer(400, "`invalid_query`: `number` missing, or an unknown query parameter"),
    Answer(422, "`invalid_number`: not a valid phone number (the number is never echoed)"),
)
_DECIDING = (
    Answer(
        422,
        "`invalid_scope`, `unknown_program`, `invalid_number`; `disclosure_required`:"
        " a marketing opt-in without the consent text shown (MSG-2)",
    ),
)
_LOOKUP = Answer(403, "`forbidden`: a lookup by number needs the 'phi' scope as well")
_CONSENT_VIEW = "Standing per program and scope, and every decision (needs phi; audited)"


def _consent_lookup(path: str) -> Endpoint:
    """A number's standing and decisions: the same answer under both names."""
    return Endpoint(
        "GET",
        path,
        c.get_consent,
        "read",
        _CONSENT_VIEW,
        None,
        c.ConsentLookup,
        query=(_NUMBER,),
        answers=(*_NUMBER_FIELDS, _LOOKUP),
    )


CONSENT_ENDPOINTS: tuple[Endpoint, ...] = (
    _consent_lookup("/api/v1/optouts"),
    Endpoint(
        "POST",
        "/api/v1/optouts",
        c.post_optout,
        "consent",
        "Record an opt-out given by API, phone or email (appended to the ledger; audited)",
        c.OptOutRequest,
        c.RecordedView,
        201,
        answers=_DECIDING,
    ),
    Endpoint(
        "DELETE",
        "/api/v1/optouts",
        c.delete_optout,
        "consent",
        "Re-subscribe: an opt-in lifting an opt-out (no ledger row is ever deleted)",
        None,
        c.RecordedView,
        201,
        query=(_NUMBER, _SCOPE, _PROGRAM),
        answers=(
            *_NUMBER_FIELDS,
            *_DECIDING,
            Answer(404, "`not_opted_out`: no opt-out of this scope to lift"),
        ),
    ),
    _consent_lookup("/api/v1/consents"),
    Endpoint(
        "POST",
        "/api/v1/consents",
        c.post_consent,
        "consent",
        "Record an opt-in (for marketing with the exact disclosure text; audited)",
        c.ConsentRequest,
        c.RecordedView,
        201,
        answers=_DECIDING,
    ),
    Endpoint(
        "DELETE",
        "/api/v1/consents",
        c.delete_consent,
        "consent",
        "Withdraw consent: an opt-out of the scope (appended; audited)",
        None,
        c.RecordedView,
        201,
        query=(_NUMBER, _SCOPE, _PROGRAM),
        answers=(*_NUMBER_FIELDS, *_DECIDING),
    ),
    Endpoint(
        "POST",
        "/api/v1/consents/import",
        c.import_consents,
        "consent",
        "Import a CSV list of opt-outs and consents (streamed; idempotent; audited)",
        None,
        c.ImportResult,
        query=(
            Query(
                "map",
                "FIELD=Header,...: which column holds number, decision, scope,"
                " purpose, program, date, source, disclosure, note",
            ),
            Query(
                "decision",
                "the decision of a list without a decision column",
                {"type": "string", "enum": ["opt_in", "opt_out"]},
            ),
            Query("program", "the program of rows naming none (default *: every program)"),
        ),
        answers=(
            Answer(400, "`invalid_query`: a bad `map`, `decision` or parameter"),
            Answer(415, "`unsupported_media_type`: not text/csv"),
            Answer(422, "`missing_column`, `empty_file`, `unreadable_header`, `unknown_program`"),
        ),
        request_text="text/csv",
    ),
    Endpoint(
        "GET",
        "/api/v1/consents/export",
        c.export_consents,
        "consent",
        "The whole consent ledger as CSV, numbers included (needs phi as well; audited)",
        answers=(Answer(403, "`forbidden`: the export needs the 'phi' scope as well"),),
        content_type="text/csv",
    ),
    Endpoint(
        "GET",
        "/api/v1/contacts",
        c.get_contact,
        "read",
        "A contact's patient reference, language and time zone (needs phi; audited)",
        None,
        c.ContactView,
        query=(_NUMBER,),
        answers=(*_NUMBER_FIELDS, _LOOKUP, Answer(404, "`not_found`: no such contact")),
    ),
    Endpoint(
        "PUT",
        "/api/v1/contacts",
        c.put_contact,
        "consent",
        "Set a contact's patient reference, language or time zone (audited)",
        c.ContactRequest,
        c.ContactView,
        answers=(
            Answer(422, "`invalid_number`, `invalid_time_zone` (not IANA), `invalid_language`"),
        ),
    ),
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/v1/messages",
        h.send_message,
        "send",
        "Queue one message; 202 once it is durably stored. The send policy's verdict is"
        " in the answer: `status` `queued`; `scheduled` (its send_at, or held: `reason`"
        " `quiet_hours` or `frequency_cap`); or `blocked` with `reason` (`opted_out`,"
        " `no_consent`, `frequency_cap`, `quiet_hours`): stored, never sent",
        SendRequest,
        Accepted,
        202,
        idempotent=True,
        links=_ON_MESSAGE,
        answers=(
            Answer(
                422,
                "`missing_purpose`: no purpose named and no default for the token or the"
                " gateway; `priority_not_allowed`: a priority above the purpose's highest",
            ),
            Answer(403, "`forbidden`: quiet_hours_override without the 'urgent' scope"),
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/messages/batch",
        h.send_batch,
        "send",
        "Queue many messages in one durable commit; per-item results (each an error, or"
        " an answer as for one message: a blocked item is `status: blocked` with `reason`)",
        BatchRequest,
        None,
        202,
        idempotent=True,
        answers=(
            Answer(413, "`batch_too_large`: more than http.max_batch messages"),
            Answer(422, "`empty_batch`: no messages; `batch_rejected`: no item was valid"),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/messages",
        h.list_messages,
        "read",
        "List messages, newest first, with cursor paging (with `since` or `until`, by"
        " creation time unless `status` is given: the index of a time range)",
        None,
        MessagePage,
        query=(*_LIST_QUERY, _INCLUDE),
        answers=(
            INVALID_QUERY,
            Answer(400, "`invalid_number`: `to` is not a valid phone number"),
            Answer(403, "`forbidden`: `to` or `include=phi` needs the 'phi' scope"),
        ),
    ),
    Endpoint(
        "GET",
        f"/api/v1/messages/{MESSAGE_ID}",
        h.get_message,
        "read",
        "One message with its state history",
        None,
        MessageView,
        query=(_INCLUDE,),
        answers=(_NO_MESSAGE, INVALID_QUERY, _NO_PHI),
    ),
    Endpoint(
        "DELETE",
        f"/api/v1/messages/{MESSAGE_ID}",
        h.cancel_message,
        "send",
        "Cancel a message that is not yet sending",
        answers=(
            _NO_MESSAGE,
            Answer(409, "`not_cancellable`: the message is sending or done"),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/inbound",
        h.list_inbound,
        "read",
        "Inbound messages: newest first, or polled oldest first in commit order",
        None,
        InboundPage,
        query=_INBOUND_QUERY,
        answers=(INVALID_QUERY, _NO_PHI),
    ),
    Endpoint(
        "GET",
        f"/api/v1/inbound/{MESSAGE_ID}",
        h.get_inbound,
        "read",
        "One inbound message (sender masked; whole with include=phi)",
        None,
        InboundView,
        query=(_INCLUDE,),
        answers=(
            Answer(404, "`not_found`: no inbound message with this id"),
            INVALID_QUERY,
            _NO_PHI,
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/inbound/undecodable",
        h.undecodable_inbound,
        "read",
        "Inbound records no codec could read, held encrypted for an operator: count only",
        None,
        HeldUndecodable,
    ),
    Endpoint(
        "GET",
        "/api/v1/queue",
        h.get_queue,
        "read",
        "Queue depths per class, in-flight submits, oldest age",
    ),
    Endpoint(
        "GET",
        "/api/v1/routes",
        h.get_routes,
        "read",
        "Routes with health, rate, window and counters",
    ),
    Endpoint(
        "POST",
        "/api/v1/routes/{name}/pause",
        h.pause_route,
        "admin",
        "Stop dispatching to a route; its messages fail over or wait",
        answers=(Answer(404, "`not_found`: no route with this name"),),
    ),
    Endpoint(
        "POST",
        "/api/v1/routes/{name}/resume",
        h.resume_route,
        "admin",
        "Dispatch to a paused (or auth-parked) route again",
        answers=(Answer(404, "`not_found`: no route with this name"),),
    ),
    Endpoint(
        "GET",
        "/api/v1/healthz",
        h.healthz,
        None,
        "Liveness and readiness; no authentication, no PHI",
        answers=(Answer(503, "not ready: shutting down, or no route can send", _HEALTH),),
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/inbound",
        h.demo_inbound,
        "admin",
        "Embedded default only: a simulated handset sends a message (via SMSC or modem)",
        DemoInbound,
        None,
        202,
        answers=(_DEMO_OFF,),
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/clock/advance",
        h.demo_advance_clock,
        "admin",
        "Embedded default only: move the gateway's clock forward (to see tomorrow's"
        " reminders now); it never goes back",
        DemoAdvance,
        None,
        answers=(_DEMO_OFF,),
    ),
    Endpoint(
        "GET",
        "/api/v1/demo/peers",
        h.demo_peers,
        "admin",
        "Embedded default only: what the simulated SMSC and modems received (submits per"
        " part, receipts sent back), to hold the gateway's figures against; counts only",
        answers=(_DEMO_OFF,),
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/smsc/drop",
        h.demo_drop_smsc,
        "admin",
        "Embedded default only: cut the simulated carrier's SMPP links mid-window",
        answers=(_DEMO_OFF,),
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/modems/{index:[0-9]{1,3}}/unplug",
        h.demo_unplug_modem,
        "admin",
        "Embedded default only: pull an emulated modem's USB plug",
        answers=(_DEMO_OFF, Answer(404, "`not_found`: no emulated modem with this index")),
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/modems/{index:[0-9]{1,3}}/replug",
        h.demo_replug_modem,
        "admin",
        "Embedded default only: plug an emulated modem back in",
        answers=(_DEMO_OFF, Answer(404, "`not_found`: no emulated modem with this index")),
    ),
    Endpoint(
        "GET",
        "/api/v1/metrics",
        h.metrics,
        "read",
        "Prometheus metrics (text exposition format)",
        content_type=PROMETHEUS_TEXT,
    ),
    Endpoint("GET", "/api/v1/openapi.json", h.openapi_document, None, "This document"),
    *CONSENT_ENDPOINTS,
    *REVIEW_ENDPOINTS,
    *ap.ENDPOINTS,
    *HL7_ENDPOINTS,
    *t.endpoints(Endpoint),
    *reminder_rules.endpoints(Endpoint),  # /reminder-rules
    *contacts_table.endpoints(Endpoint),  # /contacts/..., /groups, /audiences
    *MEDICATION_ENDPOINTS,
    *REPLY_ENDPOINTS,
    *ERASURE_ENDPOINTS,  # /erasures (i14-retention)
    *surveys.endpoints(Endpoint),  # /surveys (i15-surveys)
    *cmp.endpoints(Endpoint),  # /campaigns (i15-campaigns)
    *LINK_ENDPOINTS,  # /links (i15-links)
    *CLUSTER_ENDPOINTS,  # /cluster
    *an.endpoints(Endpoint),  # /analytics (i15-analytics)
)


def _guard(endpoint: Endpoint, gateway: Gateway, check: RequestCheck | None) -> Handler:
    """Wrap a handler with the request checks, the bearer-token check for its scope and
    the error shape (`shaping`), in one coroutine: each layer is resumed per request."""
    if endpoint.scope is None:
        return shaped(endpoint.handler, check)
    scope = endpoint.scope
    handler = endpoint.handler
    # The app's gateway, known here: `request.app[GATEWAY]` is four Python calls a request.
    tokens = gateway.tokens

    async def guarded(request: web.Request) -> web.StreamResponse:
        mark = request_scope.begin()  # the cluster's pool answers it without long waits
        try:
            if check is not None:
                request = check(request)
            header = request.headers.get("Authorization", "")
            scheme, _, text = header.partition(" ")
            if scheme.lower() != "bearer" or not text:
                raise ApiError(
                    401,
                    "unauthenticated",
                    "missing bearer token",
                    headers={"WWW-Authenticate": 'Bearer realm="smsgw"'},
                )
            text = text.strip()
            hit = tokens.cached(text)  # most requests: no coroutine for a token seen lately
            token = hit[0] if hit is not None else await tokens.verify(text)
            if token is None:
                raise ApiError(
                    401,
                    "unauthenticated",
                    "invalid or revoked token",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            if scope not in token.scopes and "admin" not in token.scopes:
                raise ApiError(403, "forbidden", f"this token lacks the {scope!r} scope")
            request[h.AUTH_RECORD] = token
            return await handler(request)
        except Exception as e:  # every error gets the shape (cancellation is not one)
            return error_answer(request, e)
        finally:
            request_scope.end(mark)

    return guarded


_NOT_ON_CLUSTER = Answer(
    501, "`not_on_cluster`: on a cluster node this feature's data is not shared yet"
)


def _refusing(feature: LocalFeature) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise refusal(feature)

    return refuse


def install(app: web.Application, gateway: Gateway, check: RequestCheck | None = None) -> None:
    """Serve the API from `app`: every endpoint behind `check` and its scope, and its
    document. On a cluster node a feature whose data would stay in the node's own store
    answers 501 `not_on_cluster` (`gateway/cluster/local_only.py`)."""
    app[GATEWAY] = gateway
    app[h.IDEMPOTENCY_LOCKS] = {}
    served: list[Endpoint] = []
    for endpoint in ENDPOINTS:
        local = None if gateway.cluster is None else feature_of_path(endpoint.path)
        if local is not None:
            endpoint = dataclasses.replace(
                endpoint,
                handler=_refusing(local),
                answers=(*endpoint.answers, _NOT_ON_CLUSTER),
            )
        served.append(endpoint)
        app.router.add_route(endpoint.method, endpoint.path, _guard(endpoint, gateway, check))
    app[h.OPENAPI] = h.LazyDocument(lambda: _document(tuple(served), gateway))


def _document(served: tuple[Endpoint, ...], gateway: Gateway) -> dict[str, Any]:
    document = build_openapi(
        served, max_batch=gateway.config.http.max_batch, routes=sorted(gateway.routes)
    )
    consent = gateway.usecases.consent
    c.describe_consent(document, sorted(consent.programs), list(consent.languages))
    describe_medication(document)
    contacts_api.describe(document, list(consent.languages))
    return document
