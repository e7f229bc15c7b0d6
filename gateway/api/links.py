"""`/api/v1/links`: tracked links over HTTP.

Handlers translate to `gw.links` (`gateway/links/usecase.py`) and back. Creating
needs `admin` (audited); listing and reading need `read`. A body or template writes
`{link:NAME}` to use a link: each message gets its own short URL at accept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from gateway.api.endpoint import Endpoint
from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.links.usecase import LinkRecord
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

_NAME_DOC = "1 to 48 lower case letters, digits and -; bodies use it as {link:NAME}"
_DEST_DOC = "an absolute https URL on the destination allowlist (links.allow)"


class LinkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(pattern="^[a-z0-9][a-z0-9-]{0,47}$", description=_NAME_DOC)]
    destination: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=2048, description=_DEST_DOC),
    ]
    expires_at: Annotated[
        Annotated[datetime, msgspec.Meta(tz=True)] | None,
        msgspec.Meta(description="when the link stops working (default: never; each"
                     " message's URL also expires after links.expiry_days)"),
    ] = None  # fmt: skip


class ClicksView(msgspec.Struct, frozen=True):
    human: Annotated[int, msgspec.Meta(description="clicks by people")]
    bots: Annotated[int, msgspec.Meta(description="previews, scanners, prefetches, HEADs...")]
    people: Annotated[int, msgspec.Meta(description="messages whose link a person followed")]


class LinkView(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    name: str
    placeholder: str
    destination: str
    expires_at: str | None
    expired: bool
    created_at: str | None
    created_by: str
    clicks: ClicksView
    by_class: Annotated[
        dict[str, int] | None,
        msgspec.Meta(description="one link's clicks per agent class (GET /links/{id})"),
    ] = None


class LinkList(msgspec.Struct, frozen=True):
    links: list[LinkView]


_DECODER = msgspec.json.Decoder(LinkRequest)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])


def link_view(r: LinkRecord) -> LinkView:
    link, c = r.link, r.counts
    return LinkView(
        link.id,
        link.name,
        r.placeholder,
        link.destination,
        iso(link.expires_at) if link.expires_at is not None else None,
        r.expired,
        iso(link.created_at),
        link.created_by,
        ClicksView(c.human, c.bots, c.people),
        None if r.by_class is None else dict(r.by_class),
    )


async def create_link(request: web.Request) -> web.Response:
    body = decode_with(_DECODER, await request.read())
    expires_at = None
    if body.expires_at is not None:
        try:
            expires_at = body.expires_at.timestamp()
        except (OverflowError, ValueError):
            raise ApiError(
                422, "invalid_field", "expires_at: not a time", field="expires_at"
            ) from None
    made = await gateway_of(request).links.create(
        _caller(request), body.name, body.destination, expires_at
    )
    return json_response(link_view(made), status=201)


async def list_links(request: web.Request) -> web.Response:
    found = await gateway_of(request).links.list(_caller(request))
    return json_response(LinkList([link_view(r) for r in found]))


async def get_link(request: web.Request) -> web.Response:
    found = await gateway_of(request).links.get(_caller(request), request.match_info["link_id"])
    return json_response(link_view(found))


LINK_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/v1/links",
        create_link,
        "admin",
        "Create a named tracked link (audited); bodies and templates use it as"
        " {link:NAME}, and each message gets its own short URL on the site's host",
        LinkRequest,
        LinkView,
        201,
        answers=(
            Answer(409, "`links_off`: tracked links are off; `name_taken`: the name is used"),
            Answer(
                422,
                "`link_not_allowed`: the destination is not on links.allow (or not a"
                " strict https URL); `invalid_name`, `invalid_field`",
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/links",
        list_links,
        "read",
        "Every named link with its clicks: people apart from bots",
        None,
        LinkList,
    ),
    Endpoint(
        "GET",
        "/api/v1/links/{link_id:lnk_[0-9a-f]{16}}",
        get_link,
        "read",
        "One link with its clicks per agent class",
        None,
        LinkView,
        answers=(Answer(404, "`not_found`: no link with this id"),),
    ),
)
