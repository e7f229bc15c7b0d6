"""`/api/v1/replies`: patients' replies to appointment texts, and the staff worklist.

Handlers translate to `gateway.replies.usecase.Replies` and back. Reading needs
`read` (numbers masked); resolving needs `send`. No reply's text is served here: it is
the inbound message's (`/api/v1/inbound/{id}?include=phi`, audited).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from gateway.api.handlers import AUTH_RECORD
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.replies.usecase import MAX_LIST, Replies, ReplyItem
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

REPLY_ID = "{id:[A-Za-z0-9_]{1,40}}"  # rpl_ and 16 hex digits; others answer 404


class ReplyView(msgspec.Struct, frozen=True):
    id: str
    inbound_id: Annotated[str, msgspec.Meta(description="the reply as an inbound message")]
    received_at: str | None
    intent: Annotated[
        str, msgspec.Meta(description="confirm, reschedule, cancel, stop, or unclear")
    ]
    outcome: Annotated[
        str,
        msgspec.Meta(
            description="confirmed, reschedule_requested, cancel_requested, cancelled,"
            " opted_out, unmatched (no appointment to match) or unclear (not an intent)"
        ),
    ]
    state: Annotated[str, msgspec.Meta(description="open: on the staff worklist; done; resolved")]
    appointment_id: str | None
    by_code: Annotated[bool, msgspec.Meta(description="the reply named the short code")]
    writeback_id: Annotated[
        str | None, msgspec.Meta(description="the HL7 write-back queued for the EHR")
    ]
    number_masked: str | None
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None


class ReplyPage(msgspec.Struct, frozen=True):
    items: list[ReplyView]


class ResolveRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    resolution: Annotated[
        Literal["handled", "dismissed"],
        msgspec.Meta(description="handled (staff acted) or dismissed (nothing to do)"),
    ] = "handled"


_RESOLVE = msgspec.json.Decoder(ResolveRequest)


def _use_case(request: web.Request) -> Replies:
    return gateway_of(request).usecases.replies


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def view(item: ReplyItem) -> ReplyView:
    return ReplyView(
        item.id,
        item.inbound_id,
        iso(item.received_at),
        item.intent,
        item.outcome,
        item.state,
        item.appointment_id,
        item.by_code,
        item.writeback_id,
        item.number_masked,
        iso(item.resolved_at) if item.resolved_at is not None else None,
        item.resolved_by,
        item.resolution,
    )


async def list_replies(request: web.Request) -> web.Response:
    q = request.query
    unknown = set(q) - {"state", "limit"}
    if unknown:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    limit_text = q.get("limit", "100")
    if not limit_text.isdigit():
        raise ApiError(400, "invalid_query", f"limit: 1 to {MAX_LIST}", field="limit")
    items = await _use_case(request).listed(_caller(request), q.get("state"), int(limit_text))
    return json_response(ReplyPage([view(i) for i in items]))


async def resolve_reply(request: web.Request) -> web.Response:
    raw = await request.read()
    body = decode_with(_RESOLVE, raw) if raw.strip() else ResolveRequest()
    item = await _use_case(request).resolve(
        _caller(request), request.match_info["id"], body.resolution
    )
    return json_response(view(item))
