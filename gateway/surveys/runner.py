"""Time-outs: a session whose question went unanswered past its time-out closes as
`timed_out` (one UPDATE ... RETURNING on the writer, so a late answer and the close
cannot both win: the answer path also treats a passed deadline as closed).

One background task sleeps, through the gateway's clock, until the earliest open
deadline (at most `MAX_SLEEP`), or until a send or an answer wakes it. On a cluster
every node runs it on the shared sessions: the UPDATE closes each session once, for
the one node whose statement got there first (and the jobs take the clinical lock)."""

from __future__ import annotations

import asyncio

import structlog

from drivers.clock import Clock, wait_event
from gateway.clinical.db import ClinicalDb
from gateway.logs import exception_summary
from gateway.surveys import sql

log = structlog.get_logger("smsgw.surveys")

MAX_SLEEP = 60.0
RETRY = 30.0


class TimeoutRunner:
    def __init__(self, db: ClinicalDb, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> list[str]:
        """Close the sessions past their deadline now; their ids."""
        now = self._clock.time()
        closed: list[str] = await self._db.run(lambda conn: sql.expire(conn, now))
        for session_id in closed:
            log.info("survey_timed_out", session_id=session_id)
        return closed

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
                due = await self._db.run(sql.next_deadline, serial=False)
                delay = MAX_SLEEP if due is None else due - self._clock.time()
            except Exception as e:  # the store is struggling: try again, not never
                log.error("survey_timeouts_failed", error=exception_summary(e))
                delay = RETRY
            await wait_event(self._clock, self._wake, min(max(delay, 0.0), MAX_SLEEP))
