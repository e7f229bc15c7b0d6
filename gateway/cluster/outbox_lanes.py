"""Which node delivers each outbox consumer's events: one session advisory lock per
consumer, held on a connection of this node's own (not a pooled one: a pool hands its
connections to others and closes idle ones, and a session lock goes with its session).

A node that dies loses its locks with its connection; one cut off from the database
loses them when the server notices (the session's server-side TCP keepalives, about
15 s) while the node fences itself and stops delivering within its lease. A fenced node
gives up its lanes at once. The lock is the leadership: between two rounds the leader
checks, at most once a second, that its connection still answers; a connection that
failed took the locks with it, so every lane here is given up and taken again when
free. At-least-once holds across a handover: the new leader resumes from the stored
position and attempts, and what the old one delivered but had not recorded goes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from drivers.clock import Clock
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster")

LANE_LOCKS = 0x736D7367  # the advisory locks' first key ("smsg"); the second: hashtext(name)
CHECK_EVERY = 1.0  # seconds between checks that the lock connection still answers
# The server ends the session of a peer that went silent (a partition) after about
# idle + interval * count seconds, and its locks with it.
SERVER_KEEPALIVES = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=3 -c tcp_keepalives_count=3"
)


def lock_conninfo(conninfo: str) -> str:
    """`conninfo` with the server-side keepalives of the lock connection added."""
    theirs = str(conninfo_to_dict(conninfo).get("options") or "")
    return make_conninfo(conninfo, options=f"{theirs} {SERVER_KEEPALIVES}".strip())


class LaneLocks:
    """This node's lane leaderships (`OutboxRepo.lead`)."""

    def __init__(self, conninfo: str, clock: Clock, fenced: Callable[[], bool]) -> None:
        self._conninfo = lock_conninfo(conninfo)
        self._clock = clock
        self._fenced = fenced
        self._conn: AsyncConnection[TupleRow] | None = None
        self._held: set[str] = set()
        self._checked = float("-inf")
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def lead(self, consumer: str) -> bool:
        async with self._lock:
            if self._fenced():
                await self._give_up_all()
                return False
            try:
                conn = await self._connection()
                if consumer in self._held:
                    now = self._clock.monotonic()
                    if now - self._checked >= CHECK_EVERY:
                        await conn.execute("SELECT 1")
                        self._checked = now
                    return True
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LANE_LOCKS, consumer)
                )
                row = await cur.fetchone()
            except (psycopg.Error, OSError) as e:
                if self._held:
                    log.warning("outbox_lanes_lost", error=exception_summary(e))
                await self._drop()
                return False
            if row is not None and row[0]:
                self._held.add(consumer)
                return True
            return False

    async def close(self) -> None:
        async with self._lock:
            await self._give_up_all()

    async def _connection(self) -> AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._held.clear()
            self._conn = await AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=10
            )
            self._checked = self._clock.monotonic()
        return self._conn

    async def _give_up_all(self) -> None:
        if self._conn is not None and not self._conn.closed and self._held:
            # (A failure: the session is gone, and its locks with it.)
            with contextlib.suppress(psycopg.Error, OSError):
                await self._conn.execute("SELECT pg_advisory_unlock_all()")
        await self._drop()

    async def _drop(self) -> None:
        self._held.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
