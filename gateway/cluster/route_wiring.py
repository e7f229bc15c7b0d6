"""Routes on a cluster node: which it may send by, with whose bind slots and rate.

- A route whose `eligible_nodes` does not name this node (an SMPP account bound only
  from some sites, a modem bank plugged into another node) gets a driver that never
  connects (`NotEligible`): its health says so, the scheduler never claims for it, and
  the messages that may leave only by it wait for a node that holds it, or fail over
  to another route of theirs as the route rules allow.
- A route with `max_binds` binds only holding one of that many slots across the
  nodes (`bindslots.py`), so the carrier never sees more sessions than its cap, nor a
  rebind before a dead node's session could have ended there (`bind_grace_seconds`);
  a node that fences itself unbinds those sessions before a peer may take their slots.
- A route with `account` claims against that account's shared bucket (`buckets.py`,
  in the claim's transaction) and adapts the shared rate on throttles (`shared_rate.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.base import (
    DriverNotReady,
    OutboundSms,
    RouteHealth,
    RouteState,
    SlotBound,
    SubmitResult,
)
from gateway.cluster.bindslots import ClusterBindSlots
from gateway.cluster.shared_rate import SharedRate
from gateway.cluster.status import PublishedRoute
from gateway.config import ConfigError
from gateway.routes import RouteRuntime

if TYPE_CHECKING:
    from gateway.cluster.node import ClusterNode

NOT_ELIGIBLE = "route:not_eligible"


class NotEligible:
    """The driver of a route this node may not use: never connects, never sends."""

    def __init__(self, name: str, node_id: str) -> None:
        self.name = name
        self._detail = f"not eligible on node {node_id} (routes.eligible_nodes)"

    async def start(self) -> None:
        return None

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        raise DriverNotReady(f"route {self.name}: {self._detail}", code=NOT_ELIGIBLE)

    def health(self) -> RouteHealth:
        return RouteHealth(RouteState.DOWN, self._detail)

    async def aclose(self) -> None:
        return None


def wire_routes(node: ClusterNode, routes: dict[str, RouteRuntime]) -> None:
    """Before the drivers start: eligibility, bind slots and shared rates per route."""
    me = node.settings.node_id

    def health() -> list[PublishedRoute]:
        described = [(r, r.describe()) for r in routes.values() if r.here]
        return [
            PublishedRoute(r.name, r.config.type, str(d["state"]), str(d["detail"] or ""))
            for r, d in described
        ]

    node.route_health = health
    for name, route in routes.items():
        rc = route.config
        if rc.eligible_nodes and me not in rc.eligible_nodes:
            route.driver = NotEligible(name, me)
            route.here = False
            continue
        if rc.max_binds is not None:
            if not isinstance(route.driver, SlotBound):
                raise ConfigError(f"routes: {name!r}: max_binds needs a driver that binds")
            slots = ClusterBindSlots(
                node.pool, node.membership, name, rc.max_binds, rc.bind_grace_seconds
            )
            node.bind_slots[name] = slots
            route.driver.use_bind_slots(slots)
        if rc.account is not None:
            node.queue.accounts[name] = rc.account
            route.shared_rate = rate = SharedRate(node.pool, node.queue, rc.account)
            node.shared_rates.append(rate)
