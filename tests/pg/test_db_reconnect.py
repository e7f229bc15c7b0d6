"""After a long outage a node is back within `cluster.reconnect_max_delay` of the
database answering again, however long it was away (issue 18, `cluster/reconnect.py`):
its API accepts again, and its lease renewal, waiting on the pool, goes through.

psycopg_pool alone retries each connection at 0, 1, 3, 7, 15 … s (doubling, ±10 %):
healed after the fourth refused attempt of each of its two connections (past 1 + 2 + 4
s of doublings), such a node tried again no earlier than 13.5 s into the outage, 5.8 s
at least after the heal, and answered `503 store_unavailable` until then. The outage is
counted in refused attempts, not in seconds: the node's database link goes through a
proxy that refuses every connection as a stopped PostgreSQL does (each attempt fails at
once), and the node's knob is made small (`reconnect_max_delay`) so the test is short.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.clock import FakeClock
from tests.pg.test_db_away_api import SEND, _node_api
from tests.test_api import Api, _error

MAX_DELAY = 0.5  # `cluster.reconnect_max_delay` of the test
# Two connections, four attempts each on psycopg_pool's own doublings (0, 1, 3, 7 s).
REFUSALS = 8
DOWN_WITHIN = 30.0  # psycopg_pool alone takes 7.7 s at most; the bound, far less
# Far over MAX_DELAY on a busy machine, under the 5.8 s of the unbounded doublings.
BACK_WITHIN = 4.0


async def test_a_send_is_accepted_within_the_bound_after_a_long_outage(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    cluster = {"request_timeout": 1.0, "pool_size": 2, "reconnect_max_delay": MAX_DELAY}
    async with _node_api(tmp_path, clock, pg_dsn, **cluster) as (api, proxy):
        assert api.gw.cluster is not None
        breaker = api.gw.cluster.breaker
        membership = api.gw.cluster.membership
        assert (await api.post("/api/v1/messages", SEND)).status == 202
        renewed = membership.fence.deadline

        proxy.down()
        await _error(await api.post("/api/v1/messages", SEND), 503, "store_unavailable")
        assert breaker.away
        # The next heartbeat: its renewal waits on the pool through the outage.
        clock.advance(api.gw.cluster.settings.heartbeat_seconds)
        await asyncio.wait_for(proxy.refused_at_least(REFUSALS), DOWN_WITHIN)
        await _error(await api.post("/api/v1/messages", SEND), 503, "store_unavailable")
        assert membership.fence.deadline == renewed

        proxy.heal()
        await asyncio.wait_for(_accepted(api), BACK_WITHIN)
        # And the lease is renewed with the same connections.
        await asyncio.wait_for(
            membership.wait_until(lambda: membership.fence.deadline > renewed), BACK_WITHIN
        )


async def _accepted(api: Api) -> None:
    assert api.gw.cluster is not None
    while True:
        await api.gw.cluster.breaker.reachable.wait()  # the pool made a connection again
        r = await api.post("/api/v1/messages", SEND)
        if r.status == 202:
            return
        await _error(r, 503, "store_unavailable")
