"""Routes parked for refused credentials, remembered across restarts.

A carrier locks an account after a few refused binds, so a restart must not try the
same credentials again. What is kept is the refusal's code and an HMAC of the
credentials (under a key derived from the master key; never the secret itself): at
start, a route whose credentials still match starts parked; changed ones are tried.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from gateway.store import outbox_sql
from gateway.store.store import Store

_KEY_LABEL = b"smsgw route credentials mac v1"


@dataclass(frozen=True, slots=True)
class Park:
    code: str
    credentials_mac: bytes


class RouteParks:
    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def key(self) -> bytes:
        """The HMAC key drivers digest their credentials under."""
        return hmac.new(self._store.master_key, _KEY_LABEL, hashlib.sha256).digest()

    async def all(self) -> dict[str, Park]:
        rows = await self._store.reader.all("SELECT route, code, credentials_mac FROM route_parks")
        return {r[0]: Park(r[1], bytes(r[2])) for r in rows}

    async def remember(self, route: str, code: str, credentials_mac: bytes, now: float) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO route_parks VALUES (?,?,?,?)",
                (route, code, credentials_mac, now),
            )
        )

    async def report_health(self, changes: list[tuple[str, str]], now: float) -> None:
        """`route.health` outbox rows for (route, state) changes."""
        await self._store.writer.run(lambda conn: outbox_sql.write_health(conn, changes, now))

    async def forget(self, route: str) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute("DELETE FROM route_parks WHERE route = ?", (route,))
        )
