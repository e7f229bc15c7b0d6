"""`GET /api/v1/cluster`: every node of a cluster, its lease, binds and routes.

What the panel's Cluster page shows, as JSON, for monitoring (`read` scope, as the
other operational reads). On a gateway without `[cluster]` the answer says so
(`enabled: false`, no nodes). No personal data: node ids, routes, states and times.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.endpoint import Endpoint
from gateway.api.openapi import Answer
from gateway.errors import ApiError
from gateway.web.context import gateway_of, json_response


async def get_cluster(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    if gw.cluster is None:
        return json_response({"enabled": False, "nodes": []})
    try:
        nodes = await gw.cluster.status()
    except Exception:  # the database is away: say so, not a 500 with its text
        raise ApiError(
            503, "cluster_unavailable", "The cluster database cannot be read now."
        ) from None
    return json_response(
        {
            "enabled": True,
            "node": gw.cluster.describe(),  # the node that answered
            "nodes": [n.as_json() for n in nodes],
        }
    )


CLUSTER_ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/v1/cluster",
        get_cluster,
        "read",
        "Every node of the cluster: incarnation, lease, last heartbeat, the bind slots"
        " it holds and its routes' health (modem banks included)",
        answers=(Answer(503, "`cluster_unavailable`: the cluster database cannot be read"),),
    ),
)
