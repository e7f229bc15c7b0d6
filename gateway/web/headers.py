"""Security headers on every response the app sends (ASVS 3.4; WEB-4).

Set in `on_response_prepare`, which runs for every response just before its headers
go out, including errors, static files and streamed (SSE) answers, so no handler can
forget them. `Cache-Control: no-store` is the default; a handler may choose caching
explicitly (vendored static files do). Answers written below the application (a
request aiohttp could not parse, a refused connection) take `SECURITY_HEADERS` from
here too (`connections.py`).
"""

from __future__ import annotations

from aiohttp import web

from gateway.web.client import is_secure

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=31536000; includeSubDomains"

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # In place of aiohttp's "Python/3.11 aiohttp/3.x.y" (ASVS 14.3.3: no versions).
    "Server": "smsgw",
}


async def add_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    if is_secure(request):
        response.headers["Strict-Transport-Security"] = HSTS


def install(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
