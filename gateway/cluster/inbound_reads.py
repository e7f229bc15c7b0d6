"""`InboundReads` on the shared PostgreSQL `inbound` table: what every node's API and
panel list. The same answers as the SQLite store's (`gateway/store/records.py`): by
id, newest first before a seq, oldest first after one; `seq` commits in order
(`cluster/inbound.py`), so an `after` poll never misses a message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.cluster.lease import Pool
from gateway.cluster.shared_keys import KeyringWatch
from gateway.store.crypto import FieldCipher, header_generation
from gateway.store.records import Sealed, StoredInbound

_COLUMNS = "id, seq, route, sender_ct, body_ct, received_at, incomplete"


class ClusterInboundReads:
    def __init__(self, pool: Pool, cipher: FieldCipher, keys: KeyringWatch | None = None) -> None:
        self._pool = pool
        self._cipher = cipher
        self._keys = keys

    async def _read(self, sql: str, params: Sequence[Any]) -> list[StoredInbound]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.encode(), params)).fetchall()
        known = self._cipher.generations
        if self._keys is not None and any(
            header_generation(bytes(r[3])) not in known for r in rows
        ):  # sealed by a rotation made on another node since the last heartbeat
            await self._keys.check()
        return [self._record(r) for r in rows]

    def _record(self, r: Sequence[Any]) -> StoredInbound:
        iid = r[0]
        return StoredInbound(
            iid,
            int(r[1]),
            r[2],
            Sealed(self._cipher, bytes(r[3]), iid, "sender"),
            Sealed(self._cipher, bytes(r[4]), iid, "body"),
            float(r[5]),
            bool(r[6]),
        )

    async def inbound(self, inbound_id: str) -> StoredInbound | None:
        found = await self._read(
            f"SELECT {_COLUMNS} FROM inbound WHERE id = %s",  # noqa: S608 - fixed columns
            (inbound_id,),
        )
        return found[0] if found else None

    async def inbound_newest(self, before: int | None, limit: int) -> list[StoredInbound]:
        sql = f"SELECT {_COLUMNS} FROM inbound"  # noqa: S608 - fixed columns
        params: tuple[Any, ...] = ()
        if before is not None:
            sql += " WHERE seq < %s"
            params = (before,)
        return await self._read(sql + " ORDER BY seq DESC LIMIT %s", (*params, limit))

    async def inbound_after(self, after: int, limit: int) -> list[StoredInbound]:
        return await self._read(
            f"SELECT {_COLUMNS} FROM inbound WHERE seq > %s"  # noqa: S608 - fixed columns
            " ORDER BY seq LIMIT %s",
            (after, limit),
        )
