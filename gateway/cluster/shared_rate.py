"""Throttle adaptation of a carrier account's shared rate (`rate_accounts.rate`).

Theory of operation. On one node, a route's `RateEstimator` (gateway/throttle_adapt.py)
cuts its own bucket when the carrier throttles. On a cluster an account's tokens come
from one shared row (`buckets.py`), so a throttle seen by any node cuts that row's
`rate` and every node slows together. The cut follows the estimator: a little under
what the carrier accepted over the last second (this node's accepts scaled by the
account's rate over this node's share of it; half the rate if nothing went
through), once per overload for the whole cluster (`cut_at`: throttles within a
window of a cut are the same overload, whichever node sees them). While no throttle
came for two windows and this node's claims were short of tokens (the rate, not the
queue, limits it), the rate is probed upward by a share of the contract once a window
(`probed_at`), never above the contract (`contract`, the configured rate) nor below a
tenth of it. The statements run on their own task, one at a time per account and
node: the carrier's answers are handled at once, and a busy database delays only this.
"""

from __future__ import annotations

import asyncio
from collections import deque

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.logs import exception_summary
from gateway.routes import MIN_RATE_SHARE
from gateway.throttle_adapt import MARGIN

log = structlog.get_logger("smsgw.cluster")

WINDOW = 1.0  # seconds: one cut per overload, one probe per window
PROBE_SHARE = 0.05  # a probe raises the rate by this share of the contract

_CUT = """
UPDATE rate_accounts SET cut_at = clock_timestamp(), rate = greatest(contract * %(floor)s,
    CASE WHEN %(measured)s::float8 > 0 THEN least(rate, %(measured)s) * %(margin)s
    ELSE rate / 2 END)
WHERE account = %(a)s
    AND (cut_at IS NULL OR cut_at <= clock_timestamp() - make_interval(secs => %(window)s))
RETURNING rate
"""

_PROBE = """
UPDATE rate_accounts SET probed_at = clock_timestamp(),
    rate = least(contract, rate + contract * %(share)s)
WHERE account = %(a)s AND rate < contract
    AND (cut_at IS NULL OR cut_at <= clock_timestamp() - make_interval(secs => 2 * %(window)s))
    AND (probed_at IS NULL
        OR probed_at <= clock_timestamp() - make_interval(secs => %(window)s))
RETURNING rate
"""


class SharedRate:
    """`gateway.routes.SharedRate` for one route on one account; `now` is monotonic."""

    def __init__(self, pool: Pool, queue: ClusterQueue, account: str) -> None:
        self._pool = pool
        self._queue = queue
        self.account = account
        self._accepts: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None
        self._last_probe = -WINDOW
        self._starved_seen = 0
        self.rate: float | None = None  # the shared rate after this node's last change

    def throttled(self, now: float) -> None:
        self._forget(now)
        grant = self._queue.grants.get(self.account)
        # This node's part of the account's rate is its share's: scaled up to the whole.
        scale = 1.0 if grant is None else grant.rate / grant.share_rate
        measured = len(self._accepts) / WINDOW * scale
        self._run(_CUT, {"measured": measured, "floor": MIN_RATE_SHARE, "margin": MARGIN})

    def accepted(self, now: float) -> None:
        self._accepts.append(now)
        self._forget(now)
        if now - self._last_probe < WINDOW:
            return
        self._last_probe = now
        starved = self._queue.starved.get(self.account, 0)
        busy, self._starved_seen = starved > self._starved_seen, starved
        if busy:
            self._run(_PROBE, {"share": PROBE_SHARE})

    def _forget(self, now: float) -> None:
        while self._accepts and self._accepts[0] <= now - WINDOW:
            self._accepts.popleft()

    def _run(self, sql: str, params: dict[str, object]) -> None:
        if self._task is not None and not self._task.done():
            return  # one statement at a time; the next answer tries again
        self._task = asyncio.create_task(self._apply(sql, params), name="shared-rate")

    async def _apply(self, sql: str, params: dict[str, object]) -> None:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, {**params, "a": self.account, "window": WINDOW})
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout, OSError) as e:
            log.warning("shared_rate_failed", account=self.account, error=exception_summary(e))
            return
        if row is not None:
            self.rate = float(row[0])
            event = "shared_rate_cut" if sql is _CUT else "shared_rate_probed"
            log.info(event, account=self.account, rate=round(self.rate, 2))

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
