"""The staff worklist page (admin, operator): replies to appointment texts that need a
person — reschedule and cancel requests with no write-back to the EHR, replies that
matched no appointment, texts that were no reply at all — with the masked number, the
intent, the appointment, and a resolve button. Through `gateway.replies.usecase`
with the signed-in user as the `Caller`, which audits the resolve."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.render import error_response, redirect, render
from gateway.admin.routing import OPERATORS, PHI_READERS, PanelRoute, current_user
from gateway.errors import ApiError
from gateway.replies.usecase import Replies
from gateway.usecases import Caller
from gateway.web.context import GATEWAY


def _use_case(request: web.Request) -> Replies:
    return request.app[GATEWAY].usecases.replies


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    return Caller.for_panel_user(
        actor(request), reads_phi=role in PHI_READERS, acts=role in OPERATORS
    )


async def worklist_page(request: web.Request) -> web.StreamResponse:
    items = await _use_case(request).listed(_caller(request), "open", 200)
    notice = request.query.get("notice")
    return render(request, "worklist.html", items=items, notice=notice)


async def resolve(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    resolution = str(form.get("resolution", "handled"))
    try:
        await _use_case(request).resolve(_caller(request), request.match_info["id"], resolution)
    except ApiError as e:
        return error_response(request, e.status, e.code, e.message[:1].upper() + e.message[1:])
    return redirect("/worklist?notice=resolved")


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/worklist", worklist_page, OPERATORS, True, "worklist"),
    PanelRoute("POST", "/worklist/{id}", resolve, OPERATORS, False, "worklist_resolve"),
)
