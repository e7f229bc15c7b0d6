"""Wake-ups for claimers: debounced NOTIFY on new due work, polling behind it.

`Notifier.due(group)` is called after a commit that made work due in a route group (an
accept, a retry, a recovery). It sends nothing at once: the first call starts a short
timer and every group named until it fires goes out in one statement, one NOTIFY per
group (River's debounce: a burst of accepts costs one notification, not one per row,
and NOTIFY's commit-time lock is taken once).

`Waker` listens on a connection of its own (a pooled one would be handed to others;
psycopg's notifies generator also blocks other queries on its connection), with TCP
keepalives so a dead peer is noticed, and reconnects after any error. On every
(re)connect it wakes every waiter, since anything may have been missed meanwhile.
NOTIFY is only a hint: `wait` always returns by its timeout, and the claimer polls then.
"""

from __future__ import annotations

import asyncio

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from drivers.clock import Clock, wait_event
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster")

CHANNEL = "smsgw_queue"
DEBOUNCE = 0.01
RECONNECT_DELAY = 0.5
# libpq keepalives on the listening connection: a silent peer is given up within ~20 s.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20000,
}


class Notifier:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]],
        clock: Clock,
        *,
        delay: float = DEBOUNCE,
        channel: str = CHANNEL,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._delay = delay
        self._channel = channel
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._now: set[asyncio.Task[None]] = set()  # urgent flushes under way
        self.sent = 0  # NOTIFY statements sent (one per group per flush)
        self.flushed = asyncio.Event()  # set after each flush that sent something

    def due(self, group: str, *, urgent: bool = False) -> None:
        """Work is due in `group` (after its commit): notify within `delay`, or with
        `urgent` (a critical message waits on it: S6) at once, with whatever else is
        pending; the debounce is for bursts, and a critical is not a burst."""
        self._pending.add(group)
        if urgent:
            task = asyncio.create_task(self.flush(), name="cluster-notify-now")
            self._now.add(task)
            task.add_done_callback(self._now.discard)
        elif self._task is None:
            self._task = asyncio.create_task(self._flush_later(), name="cluster-notify")

    async def _flush_later(self) -> None:
        try:
            await self._clock.sleep(self._delay)
        finally:
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        groups, self._pending = sorted(self._pending), set()
        if not groups:
            return
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "SELECT pg_notify(%s, g) FROM unnest(%s::text[]) g", (self._channel, groups)
                )
            self.sent += len(groups)
            self.flushed.set()
        except (psycopg.Error, PoolTimeout, OSError) as e:  # polling finds the work anyway
            log.warning("notify_failed", groups=len(groups), error=exception_summary(e))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await asyncio.gather(*self._now, return_exceptions=True)
        await self.flush()


class Waker:
    def __init__(
        self,
        conninfo: str,
        clock: Clock,
        *,
        channel: str = CHANNEL,
        reconnect_delay: float = RECONNECT_DELAY,
    ) -> None:
        self._conninfo = conninfo
        self._clock = clock
        self._channel = channel
        self._reconnect_delay = reconnect_delay
        self._events: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while LISTEN is in place
        self.backend_pid: int | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="cluster-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait(self, group: str, limit: float) -> bool:
        """Until `group` is notified (True) or `limit` seconds pass (False)."""
        event = self._events.setdefault(group, asyncio.Event())
        woken = await wait_event(self._clock, event, limit)
        event.clear()
        return woken

    def _wake_all(self) -> None:
        for event in self._events.values():
            event.set()

    async def _listen(self) -> None:
        while True:
            try:
                conninfo = make_conninfo(self._conninfo, **KEEPALIVES)
                conn = await AsyncConnection.connect(conninfo, autocommit=True)
                async with conn:
                    await conn.execute(
                        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel))
                    )
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    self._wake_all()
                    async for note in conn.notifies():
                        event = self._events.get(note.payload)
                        if event is not None:
                            event.set()
            except (psycopg.Error, OSError) as e:
                log.warning("listen_lost", error=exception_summary(e))
            self.listening.clear()
            self._wake_all()
            await self._clock.sleep(self._reconnect_delay)
