"""A route's bind slots for its driver (`drivers.base.BindSlots`), on the cluster.

The SMPP driver asks for a slot before each bind and gives it back once the session has
ended (`slots.py` holds the rows: the carrier's cap, the grace after a dead holder).
A node that is fenced, or cannot reach the database, gets no slot: its links wait and
ask again, so a node never binds beyond the cap on a guess. A slot is given back under
the incarnation that took it, once its session has ended; a slot whose session this
process never saw end (a restart) frees with its grace, as the carrier may still hold it.

A node that fences itself revokes its slots (`on_revoke`): the driver unbinds every
session at once and closes those whose unbind is not answered within half the lease
margin, so that they have ended at the carrier before a peer could take their slots
(the lease's margin plus the slot's grace later). Their slots go back as usual; a give
back that cannot reach the database is owed, and paid before the next ask (the session
has ended, whichever incarnation took it), or the slot frees with the lease's grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from gateway.cluster import slots
from gateway.cluster.lease import Fenced, Membership, Pool
from gateway.cluster.nodes import Incarnation, LeaseLost
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster")

RETRY_AFTER = 1.0  # seconds between asks while every slot is taken
RELEASE_TIMEOUT = 2.0  # a give back waits no longer for the database: it is owed then


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
        release_timeout: float = RELEASE_TIMEOUT,
    ) -> None:
        self._pool = pool
        self._membership = membership
        self.route = route
        self.max_binds = max_binds
        self.grace = grace
        self.retry_after = retry_after
        self.release_timeout = release_timeout
        self.held: dict[int, Incarnation] = {}  # slot -> the incarnation that took it
        self.refused = 0  # asks that found every slot taken
        self.owed: dict[int, Incarnation] = {}  # ended sessions' slots not given back yet
        self._revoke: list[Callable[[float], None]] = []
        membership.on_fenced(self._revoked)

    def on_revoke(self, drop: Callable[[float], None]) -> None:
        """`drop(within)` when this node fences itself: end every session within
        `within` seconds (`drivers.base.BindSlots`)."""
        self._revoke.append(drop)

    def _revoked(self) -> None:
        within = self._membership.fence.margin / 2
        log.warning("bind_slots_revoked", route=self.route, held=len(self.held), within=within)
        for drop in self._revoke:
            drop(within)

    async def acquire(self, link: int) -> int | None:
        try:
            self._membership.fence.check()
            me = self._membership.me
            await self._pay_owed()
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
        self.owed[slot] = me
        await self._pay_owed()

    async def _pay_owed(self) -> None:
        """Give back the slots of ended sessions; those the database cannot take now stay
        owed (a peer may take them once their lease and grace have passed meanwhile)."""
        for slot, me in list(self.owed.items()):
            try:
                async with asyncio.timeout(self.release_timeout):
                    async with self._pool.connection(timeout=self.release_timeout) as conn:
                        await slots.release(conn, me, self.route, slot)
            except (psycopg.Error, PoolTimeout, TimeoutError, OSError) as e:
                log.warning(
                    "bind_slot_release_failed", route=self.route, error=exception_summary(e)
                )
                return
            if self.owed.get(slot) is me:
                del self.owed[slot]
            log.info("bind_slot_released", route=self.route, slot=slot)
