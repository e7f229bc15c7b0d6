"""The pool's reconnection, bounded: once the shared database answers again, a node
has a connection within `cluster.reconnect_max_delay`, however long it was away.

psycopg_pool retries a connection it could not make with a doubling delay (1, 2, 4 …
s, jittered) until its `reconnect_timeout`, 300 s by default. After an outage of a few
minutes its next attempt could be a minute or more away while the database is back:
the node's breaker (`db_breaker.py`), which waits for the pool's next connection, kept
answering `503 store_unavailable`, and dispatch, the lease and the outbox waited too.

So the node's pool is given `reconnect_timeout = reconnect_max_delay`: a series of
attempts ends within it, the delays before it capped by it, and `restart_attempts`
(its `reconnect_failed`) begins the next series at once through the pool's public
`check()`, which grows the pool by one connection when it may. The pool lets one such
growth run at a time and the other series end for good, so during a long outage a
node tries one connection every `reconnect_max_delay` at most (not `pool_size` of
them: a database coming back is not met by every node's whole pool at once), and the
first that succeeds grows the pool back to its `min_size` and lifts the breaker.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool


async def restart_attempts(pool: AsyncConnectionPool[Any]) -> None:
    """`reconnect_failed`: a series of attempts ended without a connection; start the
    next one now. Not once the pool is closing, nor while it holds idle connections
    (the database answers, but not to one more: e.g. `max_connections` reached), since
    `check()` would take them all out to test them; then the pool grows on demand."""
    if not pool.closed and not pool.get_stats().get("pool_available"):
        await pool.check()
