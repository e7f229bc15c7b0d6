"""The "HL7 interfaces" page: counters per feed, the quarantine with its reasons and a
reprocess button, and the parked write-backs with a re-send button.

Shows ids, types, states and reason codes only, never a message's content (the raw
reveal is the API's, with the phi scope). Reprocess and re-send go through
`gw.hl7` (`gateway.hl7.service`) with the signed-in user as the `Caller`, audited.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin.panel import actor, panel
from gateway.admin.render import redirect, render
from gateway.admin.routing import OPERATORS, PanelRoute, current_user
from gateway.panel_users import Role
from gateway.usecases import Caller

VIEWERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})
LIST = 100
_DONE = {"reprocessed", "resent", "not_quarantined", "not_parked"}


def _caller(request: web.Request) -> Caller:
    return Caller.for_panel_user(actor(request), reads_phi=False, acts=True)


async def hl7_page(request: web.Request) -> web.StreamResponse:
    hl7 = panel(request).gateway.hl7
    done = request.query.get("done")
    return render(
        request,
        "hl7.html",
        interfaces=await hl7.interfaces() if hl7 else [],
        quarantined=await hl7.messages("quarantined", None, LIST) if hl7 else [],
        parked=await hl7.outbound("parked", LIST) if hl7 else [],
        may_act=current_user(request).role in OPERATORS,
        done=done if done in _DONE else None,
        state=request.query.get("state", "") if done == "reprocessed" else "",
    )


async def reprocess(request: web.Request) -> web.StreamResponse:
    hl7 = panel(request).gateway.hl7
    form = await request.post()
    row_id = str(form.get("id", ""))
    state = await hl7.reprocess(row_id, _caller(request)) if hl7 else None
    if state is None:
        return redirect("/hl7?done=not_quarantined")
    return redirect(f"/hl7?done=reprocessed&state={state}")


async def resend(request: web.Request) -> web.StreamResponse:
    hl7 = panel(request).gateway.hl7
    form = await request.post()
    done = hl7 is not None and await hl7.resend(str(form.get("id", "")), _caller(request))
    return redirect("/hl7?done=" + ("resent" if done else "not_parked"))


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/hl7", hl7_page, VIEWERS, False, "hl7"),
    PanelRoute("POST", "/hl7/reprocess", reprocess, OPERATORS, False, "hl7_reprocess"),
    PanelRoute("POST", "/hl7/resend", resend, OPERATORS, False, "hl7_resend"),
)
