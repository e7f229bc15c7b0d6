"""The cluster as an operator sees it: every node, its lease, binds and routes.

Each node publishes its routes' health (`node_routes`, one row per route of its current
incarnation) every heartbeat; the bind slots (`route_slots`) say which incarnation
holds which SMPP session. `cluster_status` reads both with the nodes' leases, on the
database's clock, for `/api/v1/cluster` and the panel's Cluster page. Nothing here is
personal data: node ids, route names, states and times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.nodes import Incarnation


@dataclass(frozen=True, slots=True)
class PublishedRoute:
    name: str
    kind: str  # the driver type: smpp, modem, loopback
    state: str
    detail: str


@dataclass(slots=True)
class NodeView:
    node_id: str
    incarnation: int
    lease: str  # live; lapsed (ended or stopped; peers recover its rows); recovered
    started_at: datetime
    last_heartbeat: datetime
    lease_until: datetime
    binds: list[dict[str, object]] = field(default_factory=list)
    routes: list[dict[str, object]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "incarnation": self.incarnation,
            "lease": self.lease,
            "started_at": self.started_at.isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "lease_until": self.lease_until.isoformat(),
            "binds": self.binds,
            "routes": self.routes,
        }


_PUBLISH = """
INSERT INTO node_routes (incarnation, route, node_id, kind, state, detail, updated_at)
SELECT %(inc)s, r.route, %(node)s, r.kind, r.state, r.detail, clock_timestamp()
FROM unnest(%(routes)s::text[], %(kinds)s::text[], %(states)s::text[], %(details)s::text[])
    AS r(route, kind, state, detail)
ON CONFLICT (incarnation, route) DO UPDATE SET kind = excluded.kind, state = excluded.state,
    detail = excluded.detail, updated_at = excluded.updated_at
"""

# Each node id's newest incarnation, with what its lease says now.
_NODES = """
SELECT DISTINCT ON (node_id) node_id, incarnation, started_at, renewed_at, lease_until,
    CASE WHEN recovered_at IS NOT NULL THEN 'recovered'
         WHEN lease_until > clock_timestamp() THEN 'live' ELSE 'lapsed' END
FROM nodes ORDER BY node_id, incarnation DESC
"""

_BINDS = """
SELECT s.route, s.slot, s.node_id, s.incarnation, s.taken_at,
    n.lease_until + make_interval(secs => s.grace) AS frees_at,
    n.lease_until > clock_timestamp() AND n.recovered_at IS NULL AS live
FROM route_slots s JOIN nodes n USING (incarnation)
WHERE s.incarnation IS NOT NULL
    AND n.lease_until + make_interval(secs => s.grace) > clock_timestamp()
ORDER BY s.route, s.slot
"""


async def publish_routes(
    conn: AsyncConnection[TupleRow], me: Incarnation, routes: Sequence[PublishedRoute]
) -> None:
    """This incarnation's routes and their health now."""
    await conn.execute(
        _PUBLISH,
        {
            "inc": me.incarnation,
            "node": me.node_id,
            "routes": [r.name for r in routes],
            "kinds": [r.kind for r in routes],
            "states": [r.state for r in routes],
            "details": [r.detail for r in routes],
        },
    )


async def cluster_status(conn: AsyncConnection[TupleRow]) -> list[NodeView]:
    """Every node id's newest incarnation, with the binds it holds (or a dead one's
    that still count, until their grace ends) and the routes it published."""
    views: dict[int, NodeView] = {}
    for node_id, inc, started, renewed, until, lease in await (
        await conn.execute(_NODES)
    ).fetchall():
        views[int(inc)] = NodeView(node_id, int(inc), lease, started, renewed, until)
    for route, slot, node_id, inc, taken, frees, live in await (
        await conn.execute(_BINDS)
    ).fetchall():
        bind: dict[str, object] = {"route": route, "slot": int(slot), "incarnation": int(inc),
            "taken_at": taken.isoformat() if taken else None,
            "state": "held" if live else "lingering", "frees_at": frees.isoformat()}  # fmt: skip
        view = views.get(int(inc))
        if view is None:  # an older incarnation's session may still be open at the carrier
            older = next((v for v in views.values() if v.node_id == node_id), None)
            if older is None:
                continue
            view = older
        view.binds.append(bind)
    cur = await conn.execute(
        "SELECT incarnation, route, kind, state, detail, updated_at FROM node_routes"
        " WHERE incarnation = ANY(%s) ORDER BY route",
        (list(views),),
    )
    for inc, route, kind, state, detail, updated in await cur.fetchall():
        views[int(inc)].routes.append(
            {
                "name": route,
                "kind": kind,
                "state": state,
                "detail": detail,
                "updated_at": updated.isoformat(),
            }
        )
    return sorted(views.values(), key=lambda v: v.node_id)
