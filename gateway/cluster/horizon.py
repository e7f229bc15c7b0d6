"""How far back the database's xmin horizon is held (issue 18, S9), for healthz.

A transaction left open anywhere on the server (a report in REPEATABLE READ, a stuck
session "idle in transaction", a replication slot) holds the xmin horizon: VACUUM keeps
every dead row version newer than it, and a queue that updates each row three or four
times bloats its table and index until claims slow down. The queue keeps working (SKIP
LOCKED needs no vacuum), so the operator learns it only from a number: the age of the
oldest snapshot, in seconds and in transactions, sampled every few seconds by the node
and shown in `/api/v1/healthz` (it never makes the node unhealthy: the cure is on the
database side). Other roles' sessions are visible only to a role with `pg_monitor`
(or `pg_read_all_stats`); without it the figure covers the node's own role.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from drivers.clock import Clock
from gateway.cluster.lease import Pool
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster")

HORIZON_SQL = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)
                        FILTER (WHERE backend_xmin IS NOT NULL)), 0)::float8,
       greatest(coalesce(max(age(backend_xmin)), 0),
                (SELECT coalesce(max(age(xmin)), 0) FROM pg_replication_slots),
                (SELECT coalesce(max(age(transaction)), 0) FROM pg_prepared_xacts))
FROM pg_stat_activity WHERE pid <> pg_backend_pid()
"""


@dataclass(frozen=True, slots=True)
class Horizon:
    seconds: float  # since the oldest transaction holding a snapshot began
    xids: int  # transactions since the oldest xmin anything holds


async def sample(pool: Pool) -> Horizon:
    async with pool.connection() as conn:
        row = await (await conn.execute(HORIZON_SQL)).fetchone()
    assert row is not None
    return Horizon(round(float(row[0]), 1), int(row[1]))


class HorizonWatch:
    """The last sample, refreshed every `interval` seconds until cancelled."""

    def __init__(self, pool: Pool, clock: Clock, interval: float) -> None:
        self._pool, self._clock, self._interval = pool, clock, interval
        self.last: Horizon | None = None

    async def run(self) -> None:
        while True:
            try:
                self.last = await sample(self._pool)
            except (psycopg.Error, PoolTimeout, OSError) as e:  # the database is away
                self.last = None
                log.warning("xmin_sample_failed", error=exception_summary(e))
            await self._clock.sleep(self._interval)

    def describe(self) -> dict[str, object]:
        if self.last is None:
            return {"xmin_age_seconds": None, "xmin_age_xids": None}
        return {"xmin_age_seconds": self.last.seconds, "xmin_age_xids": self.last.xids}
