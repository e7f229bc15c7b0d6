"""One row of the API's endpoint table (`gateway.api.server.ENDPOINTS`): its route, the
scope that guards it, and what the OpenAPI document says of it. Its own module so a
part's endpoints can be declared next to its handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.api.openapi import Answer, Link, Query


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    scope: str | None
    summary: str
    request: type | None = None
    response: type | None = None
    status: int = 200
    query: tuple[Query, ...] = ()
    idempotent: bool = False
    answers: tuple[Answer, ...] = ()
    links: tuple[Link, ...] = ()
    content_type: str = "application/json"
    request_text: str | None = None  # the media type of a text body (no JSON schema)


# The answer every list endpoint gives a bad query parameter.
INVALID_QUERY = Answer(400, "`invalid_query`: a query parameter is invalid; `field` names it")
