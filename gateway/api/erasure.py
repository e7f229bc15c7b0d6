"""`POST /api/v1/erasures`: erase one person's data by number (MSG-11, R-DEL-1).

Needs the `admin` scope. Translates to `Gateway.erasures` (`gateway.retention`; on a
cluster node it reaches the shared store too) and back: the answer is the audit
reference and counts, never the number.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from gateway.api.consent import Phone
from gateway.api.endpoint import Endpoint
from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer
from gateway.errors import ApiError
from gateway.intake import decode_with, normalise_number
from gateway.web.context import gateway_of, json_response


class ErasureRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    number: Annotated[
        Phone, msgspec.Meta(description="the person's phone number, E.164 or national")
    ]


class ErasureView(msgspec.Struct, frozen=True):
    reference: Annotated[str, msgspec.Meta(description="the audit entry's target id")]
    counts: Annotated[
        dict[str, int],
        msgspec.Meta(
            description="rows changed, by kind (on a cluster node `shared_...`: in the"
            " store every node shares)"
        ),
    ]
    kept: Annotated[str, msgspec.Meta(description="what remains of the person")]


_DECODER = msgspec.json.Decoder(ErasureRequest)
KEPT = "the suppression entry (keyed hash and opt-out time): the number is never texted again"


async def erase(request: web.Request) -> web.Response:
    body = decode_with(_DECODER, await request.read())
    gw = gateway_of(request)
    e164 = normalise_number(body.number, gw.config.queue.default_region)
    if e164 is None:
        raise ApiError(422, "invalid_number", "number: not a valid phone number", field="number")
    done = await gw.erasures.erase(e164, f"token:{request[AUTH_RECORD].id}")
    return json_response(ErasureView(done.reference, done.counts, KEPT))


ERASURE_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/v1/erasures",
        erase,
        "admin",
        "Erase one person's data by number: waiting messages cancelled, every stored"
        " number, text and link removed, only the suppression entry kept (audited)",
        ErasureRequest,
        ErasureView,
        answers=(Answer(422, "`invalid_number`: not a valid phone number"),),
    ),
)
