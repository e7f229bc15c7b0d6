"""A route's bind slots for its driver (`drivers.base.BindSlots`), on the cluster.

The SMPP driver asks for a slot before each bind and gives it back once the session has
ended (`slots.py` holds the rows: the carrier's cap, the grace after a dead holder).
A node that is fenced, or cannot reach the database, gets no slot: its links wait and
ask again, so a node never binds beyond the cap on a guess. A slot is given back under
the incarnation that took it: after a rejoin the old incarnation's slot frees with its
grace, as the carrier may still hold that session.
"""

from __future__ import annotations

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from gateway.cluster import slots
from gateway.cluster.lease import Fenced, Membership, Pool
from gateway.cluster.nodes import Incarnation, LeaseLost
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster")

RETRY_AFTER = 1.0  # seconds between asks while every slot is taken


class ClusterBindSlots:
    def __init__(
        self,
        pool: Pool,
        membership: Membership,
        route: str,
        max_binds: int,
        grace: float,
        *,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self._pool = pool
        self._membership = membership
        self.route = route
        self.max_binds = max_binds
        self.grace = grace
        self.retry_after = retry_after
        self.held: dict[int, Incarnation] = {}  # slot -> the incarnation that took it
        self.refused = 0  # asks that found every slot taken

    async def acquire(self, link: int) -> int | None:
        try:
            self._membership.fence.check()
            me = self._membership.me
            async with self._pool.connection() as conn:
                slot = await slots.acquire(conn, me, self.route, self.max_binds, self.grace)
        except (Fenced, LeaseLost) as e:
            log.warning("bind_slot_fenced", route=self.route, link=link, error=str(e))
            return None
        except (psycopg.Error, PoolTimeout, OSError) as e:
            log.warning("bind_slot_failed", route=self.route, error=exception_summary(e))
            return None
        if slot is None:
            self.refused += 1
            log.info("bind_slot_busy", route=self.route, link=link, max_binds=self.max_binds)
            return None
        self.held[slot] = me
        log.info("bind_slot_taken", route=self.route, link=link, slot=slot)
        return slot

    async def release(self, slot: int) -> None:
        me = self.held.pop(slot, None)
        if me is None:
            return
        try:
            async with self._pool.connection() as conn:
                await slots.release(conn, me, self.route, slot)
        except (psycopg.Error, PoolTimeout, OSError) as e:  # it frees with the lease's grace
            log.warning("bind_slot_release_failed", route=self.route, error=exception_summary(e))
            return
        log.info("bind_slot_released", route=self.route, slot=slot)
