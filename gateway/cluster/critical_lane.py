"""A pooled connection kept for critical accepts (S6 on a shared carrier account).

The node's pool is first come, first served: under a bulk load its connections go to
the rounds' claims and outcomes, and a critical message's POST waited its turn behind
them (bench/README.md, S6 on a shared account, session 35: at load 10 its wait for a
connection was 118-496 ms at p99 while the round claims no longer held any on the
account's row; 0.1-5 ms on the lane). So the node keeps `LANE_SIZE` connections of
their own for accepts with a critical message (and the claim riding in one): the lane,
a second pool with the node pool's options, seal guard, breaker and `request_timeout`.
When the lane's connection is taken (two criticals at once), the accept takes the node
pool's turn as before, so the lane never makes a critical wait longer than it did.
Count it when sizing PostgreSQL's `max_connections`: `pool_size + LANE_SIZE` a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.cluster.lease import Pool
from gateway.cluster.seal_guard import GuardedPool
from gateway.models import Priority
from gateway.store.store import NewMessage

LANE_SIZE = 1  # connections


def lane_pool(conninfo: str, pool: GuardedPool, node_id: str, **options: Any) -> GuardedPool:
    """The lane: `LANE_SIZE` connections opened as `pool`'s (`options`, its other
    arguments), sharing its breaker, so a database seen away by either refuses both."""
    lane = GuardedPool(
        conninfo,
        min_size=LANE_SIZE,
        max_size=LANE_SIZE,
        node_id=node_id,
        request_timeout=pool.request_timeout,
        **options,
    )
    lane.breaker = pool.breaker
    return lane


def for_accept(pool: Pool, lane: Pool | None, messages: Sequence[NewMessage]) -> Pool:
    """The pool an accept of `messages` takes its connection from: the lane for one
    with a critical message while the lane has a connection free, else `pool`."""
    if (
        lane is not None
        and any(m.priority is Priority.CRITICAL for m in messages)
        and lane.get_stats().get("pool_available", 0) > 0
    ):
        return lane
    return pool
