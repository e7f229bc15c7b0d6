"""The "Cluster" page: every node of a `[cluster]` (id, incarnation, lease, last
heartbeat), the bind slots each holds and its routes (modem banks included), read from
the shared database as `/api/v1/cluster` reads them. Ids, states and times only."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.panel import panel
from gateway.admin.render import render
from gateway.admin.routing import PanelRoute
from gateway.panel_users import Role

VIEWERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})


async def cluster_page(request: web.Request) -> web.StreamResponse:
    node = panel(request).gateway.cluster
    nodes, unavailable = [], False
    if node is not None:
        try:
            nodes = [n.as_json() for n in await node.status()]
        except Exception:  # the database is away: the page says so
            unavailable = True
    return render(
        request,
        "cluster.html",
        enabled=node is not None,
        me=None if node is None else node.describe(),
        nodes=nodes,
        unavailable=unavailable,
    )


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/cluster", cluster_page, VIEWERS, False, "cluster"),
)
