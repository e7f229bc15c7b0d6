"""`/api/v1/consents/reviews`: the free-text revocations waiting for staff (MSG-4).

Handlers translate to `gw.usecases.consent` (`reviews`, `resolve`, as the panel's review
page does) and back. Both need the `consent` scope; the messages' texts are served only
with `texts=true` and the `phi` scope (audited). Numbers are masked.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from gateway.api.endpoint import INVALID_QUERY, Endpoint
from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer, Query
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.usecases import Caller
from gateway.usecases.consent import ReviewItem
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

REVIEW_ID = "{id:[A-Za-z0-9_]{1,40}}"  # rev_ and a message id; others answer 404
MAX_LIST = 500


class ReviewView(msgspec.Struct, frozen=True):
    id: str
    inbound_id: Annotated[str, msgspec.Meta(description="the text, as an inbound message")]
    program: str
    reason: Annotated[
        str,
        msgspec.Meta(
            description="phrase (a revocation: the number was opted out) or ambiguous"
            " (looks like one: nothing was decided)"
        ),
    ]
    created_at: str | None
    number_masked: str | None
    text: Annotated[str | None, msgspec.Meta(description="with texts=true and phi only")]


class ReviewPage(msgspec.Struct, frozen=True):
    items: list[ReviewView]


class ResolveRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    action: Annotated[
        Literal["confirm", "correct"],
        msgspec.Meta(
            description="confirm: the revocation stands; correct: it was none, and every"
            " opt-out the text caused is lifted by an opt-in in your name"
        ),
    ]


class ResolvedView(msgspec.Struct, frozen=True):
    id: str
    resolution: str
    opt_ins: Annotated[list[str], msgspec.Meta(description="ledger ids of the lifting opt-ins")]


_RESOLVE = msgspec.json.Decoder(ResolveRequest)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def _view(item: ReviewItem) -> ReviewView:
    return ReviewView(
        item.id,
        item.inbound_id,
        item.program,
        item.reason,
        iso(item.created_at),
        item.number_masked,
        item.text,
    )


async def list_reviews(request: web.Request) -> web.Response:
    q = request.query
    if set(q) - {"limit", "texts"}:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    limit_text = q.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIST:
        raise ApiError(400, "invalid_query", f"limit: 1 to {MAX_LIST}", field="limit")
    texts = q.get("texts", "false")
    if texts not in ("true", "false"):
        raise ApiError(400, "invalid_query", "texts: true or false", field="texts")
    items = await gateway_of(request).usecases.consent.reviews(
        _caller(request), int(limit_text), texts=texts == "true"
    )
    return json_response(ReviewPage([_view(i) for i in items]))


async def resolve_review(request: web.Request) -> web.Response:
    body = decode_with(_RESOLVE, await request.read())
    done = await gateway_of(request).usecases.consent.resolve(
        _caller(request), request.match_info["id"], body.action
    )
    return json_response(ResolvedView(done.id, done.resolution, list(done.recorded)))


REVIEW_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/v1/consents/reviews",
        list_reviews,
        "consent",
        "Free-text revocations and look-alikes waiting for staff, oldest first; numbers"
        " masked, texts with texts=true and the 'phi' scope (audited)",
        None,
        ReviewPage,
        query=(
            Query("limit", "at most this many", {"type": "integer", "minimum": 1, "maximum": 500}),
            Query(
                "texts",
                "true: with the messages' texts (needs phi)",
                {"type": "string", "enum": ["true", "false"]},
            ),
        ),
        answers=(INVALID_QUERY, Answer(403, "`forbidden`: texts=true without the 'phi' scope")),
    ),
    Endpoint(
        "POST",
        f"/api/v1/consents/reviews/{REVIEW_ID}/resolve",
        resolve_review,
        "consent",
        "Resolve a review once: confirm the revocation, or correct it (audited)",
        ResolveRequest,
        ResolvedView,
        answers=(Answer(404, "`not_found`: no open review with this id"),),
    ),
)
