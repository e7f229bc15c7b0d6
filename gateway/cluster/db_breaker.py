"""Requests fail fast while the shared database is away (a failover, S8).

Theory of operation. One state per node, `away`, shared by every request. It turns on
when the node learns the database is unreachable: a connection of its pool lost under a
statement (or a COMMIT that never ran), a wait for a connection that timed out, the
lease's renewal failing. It turns off when the database answers again: the pool makes a
new connection (its own reconnection attempts are the probe, never more than
`cluster.reconnect_max_delay` apart: `reconnect.py`), or any block of work on a
connection ends cleanly (a heartbeat's renewal, a claim).

While `away`, a request (`request_scope.answering`) that asks the pool for a connection
is refused at once with `DatabaseAway`, a `PoolTimeout`: the API answers `503
store_unavailable` with `Retry-After`, and no request adds to the load of a database
that is coming back (no thundering retries). Otherwise a request waits for a
connection at most `cluster.request_timeout`, not the pool's 30 s. Background work
(dispatch, the lease, the outbox) is never refused here and keeps its own waits.

A 503 from here means nothing was accepted: it is raised before the request's first
statement. A request already holding a connection is never cut short here, since its
COMMIT may be on its way; if the link dies under it, it fails as before (within the
session's `tcp_user_timeout`), and a send's retry with its `Idempotency-Key` is answered
from what was committed (`docs/ops/cluster.md`).
"""

from __future__ import annotations

import asyncio

import structlog
from psycopg_pool import PoolTimeout

log = structlog.get_logger("smsgw.cluster")


class DatabaseAway(PoolTimeout):
    """Refused at once: this node knows the shared database is unreachable now."""


class Breaker:
    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self.away = False
        self.reachable = asyncio.Event()  # set while not away (a test waits on it)
        self.reachable.set()

    def admit(self) -> None:
        """For a request about to wait for a connection: raises `DatabaseAway` while
        the database is known to be away."""
        if self.away:
            raise DatabaseAway("the shared database is unreachable; try again shortly")

    def failed(self, why: str) -> None:
        """The database did not answer (`why`: the kind of failure, for the log)."""
        if not self.away:
            self.away = True
            self.reachable.clear()
            log.warning("database_unreachable", node=self._node_id, reason=why)

    def answered(self) -> None:
        """The database answered: requests wait for connections again."""
        if self.away:
            self.away = False
            self.reachable.set()
            log.info("database_reachable", node=self._node_id)
