"""CSRF defence for state-changing requests (ASVS 3.5; WEB-3).

Two independent checks, both required: the request comes from this origin (`Origin`,
or `Referer` when a browser sent no `Origin`; `Sec-Fetch-Site: cross-site` is refused
outright), and it carries the synchronizer token (form field `csrf` or header
`X-CSRF-Token`). The token is the session's; before login (the login form itself) it
is an HMAC, under a per-process key (on a cluster one derived from the shared keyring,
so a form served by one node posts to another), of a random pre-session cookie. `SameSite=Strict`
on the cookies is a third layer.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from aiohttp import web

FORM_FIELD = "csrf"
HEADER = "X-CSRF-Token"


def request_origin(request: web.BaseRequest) -> str:
    return f"{request.scheme}://{request.host}".lower()


def same_origin(request: web.BaseRequest) -> bool:
    site = request.headers.get("Sec-Fetch-Site", "").lower()
    if site in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("Origin")
    if origin == "null" and site:
        # `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on every
        # POST (Fetch standard, "append a request Origin header"), same-origin ones
        # included. Fetch metadata, which no page script can set, still says where
        # the request came from.
        return site == "same-origin"
    if origin is None:
        referer = request.headers.get("Referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == request_origin(request)


async def submitted_token(request: web.Request) -> str | None:
    header = request.headers.get(HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(FORM_FIELD)
        return value if isinstance(value, str) else None
    return None


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def pre_session_token(key: bytes, nonce: str) -> str:
    return hmac.new(key, b"smsgw pre-session csrf\n" + nonce.encode(), hashlib.sha256).hexdigest()
