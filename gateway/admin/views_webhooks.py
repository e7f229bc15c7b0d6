"""The webhooks page (admin): endpoints, recent deliveries, dead letters, redeliver.

Shows ids, event types, states and reason codes only; endpoint URLs as their origin
(a path may carry a receiver's routing key). Redelivering a dead letter is audited
and queued once however often the button is pressed (`gw.usecases.deliveries`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.admin.panel import actor, panel
from gateway.admin.render import redirect, render
from gateway.admin.routing import ADMIN, PanelRoute
from gateway.integrations.addresses import origin

RECENT = 50
DEAD = 100


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    origin: str
    events: str
    phi: bool


def _origin(url: str) -> str:
    parts = origin(url)
    return "?" if parts is None else f"{parts[0]}://{parts[1]}:{parts[2]}"


async def webhooks_page(request: web.Request) -> web.StreamResponse:
    p = panel(request)
    deliveries = p.gateway.usecases.deliveries
    endpoints = [
        Endpoint(h.name, _origin(h.url), ", ".join(h.events), h.phi)
        for h in p.gateway.config.webhooks
    ]
    redelivered = request.query.get("redelivered")
    return render(
        request,
        "webhooks.html",
        endpoints=endpoints,
        consumers=deliveries.consumers(),
        recent=await deliveries.recent(RECENT),
        dead=await deliveries.dead(DEAD),
        redelivered=redelivered if redelivered in ("1", "0") else None,
    )


async def redeliver(request: web.Request) -> web.StreamResponse:
    p = panel(request)
    form = await request.post()
    consumer, seq = str(form.get("consumer", "")), str(form.get("seq", ""))
    done = seq.isdigit() and await p.gateway.usecases.deliveries.redeliver(
        actor(request), consumer, int(seq)
    )
    return redirect(f"/webhooks?redelivered={int(done)}")


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/webhooks", webhooks_page, ADMIN, False, "webhooks"),
    PanelRoute("POST", "/webhooks/redeliver", redeliver, ADMIN, False, "webhooks_redeliver"),
)
