"""The audit trail page (admin, auditor) and its "verify chain" action."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.panel import actor, panel
from gateway.admin.render import render
from gateway.admin.routing import AUDIT_READERS, PanelRoute

PAGE = 100


async def _page(request: web.Request, verification: object = None) -> web.Response:
    before = request.query.get("before")
    entries = await panel(request).gateway.audit.entries(
        before=int(before) if before and before.isdigit() else None, limit=PAGE
    )
    return render(
        request,
        "audit.html",
        entries=entries,
        verification=verification,
        older=entries[-1].seq if len(entries) == PAGE else None,
    )


async def audit_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def verify_chain(request: web.Request) -> web.StreamResponse:
    audit = panel(request).gateway.audit
    result = await audit.verify()
    await audit.record(
        actor(request),
        "audit_verified",
        "audit_log",
        None,
        ok=result.ok,
        entries=result.entries,
        first_bad_seq=result.first_bad_seq,
    )
    return await _page(request, result)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/audit", audit_page, AUDIT_READERS, False, "audit"),
    PanelRoute("POST", "/audit/verify", verify_chain, AUDIT_READERS, False, "audit_verify"),
)
