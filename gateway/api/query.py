"""Query parameters the API's list endpoints share."""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.errors import ApiError
from gateway.intake import AwareTime


def query_time(request: web.Request, name: str) -> float | None:
    """The query parameter `name` as Unix seconds: a number, or an RFC 3339 time with a
    zone; None if absent. Anything else is a 400 `invalid_query` naming the field."""
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
