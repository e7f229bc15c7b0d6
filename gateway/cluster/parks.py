"""Routes parked for refused credentials, on the shared queue (cluster migration 2).

Shared, not per node: a carrier locks the account, not the node, so no node retries
credentials another node saw refused. The MAC key derives from the master key as in
`gateway/store/route_parks.py`, so a parked route's record means the same on either.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.cluster import outbox_store
from gateway.cluster.lease import Pool
from gateway.store.route_parks import Park

_KEY_LABEL = b"smsgw route credentials mac v1"  # as `route_parks.py`


class ClusterParks:
    """Routes parked for refused credentials, shared: a carrier locks the account, not
    the node, so no node retries credentials another node saw refused."""

    def __init__(self, pool: Pool, master_key: bytes) -> None:
        self._pool = pool
        self._master = master_key

    @property
    def key(self) -> bytes:
        return hmac.new(self._master, _KEY_LABEL, hashlib.sha256).digest()

    async def all(self) -> dict[str, Park]:
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute("SELECT route, code, credentials_mac FROM route_parks")
            ).fetchall()
        return {r[0]: Park(r[1], bytes(r[2])) for r in rows}

    async def remember(self, route: str, code: str, credentials_mac: bytes, now: float) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO route_parks VALUES (%s, %s, %s, %s) ON CONFLICT (route) DO UPDATE"
                " SET code = excluded.code, credentials_mac = excluded.credentials_mac,"
                " at = excluded.at",
                (route, code, credentials_mac, now),
            )

    async def report_health(self, changes: list[tuple[str, str]], now: float) -> None:
        """`route.health` outbox rows for this node's (route, state) changes."""
        async with self._pool.connection() as conn:
            await outbox_store.health_rows(conn, changes, now)

    async def forget(self, route: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM route_parks WHERE route = %s", (route,))
