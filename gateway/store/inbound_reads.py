"""The read side of inbound messages, as `GET /api/v1/inbound` and the panel use it.

Two backends satisfy `InboundReads`: `LocalInboundReads` over the node's SQLite store
and `gateway/cluster/inbound_reads.ClusterInboundReads` over the shared PostgreSQL
table, so on a cluster every node lists every node's inbound. Both give the same
typed records, personal fields sealed, for the same messages
(`tests/pg/test_inbound_cluster.py` runs one suite on both). `seq` is the cursor: the
commit order, so a reader that sees one seq sees every smaller one.
"""

from __future__ import annotations

from typing import Protocol

from gateway.store.records import StoredInbound
from gateway.store.store import Store


class InboundReads(Protocol):
    async def inbound(self, inbound_id: str) -> StoredInbound | None: ...

    async def inbound_newest(self, before: int | None, limit: int) -> list[StoredInbound]:
        """Newest first; `before` a seq (the previous page's last)."""
        ...

    async def inbound_after(self, after: int, limit: int) -> list[StoredInbound]:
        """Oldest first, committed after the message whose seq is `after` (0: all)."""
        ...


class LocalInboundReads:
    """`InboundReads` on the SQLite store's read pool."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def inbound(self, inbound_id: str) -> StoredInbound | None:
        return await self._store.records.inbound(inbound_id)

    async def inbound_newest(self, before: int | None, limit: int) -> list[StoredInbound]:
        return await self._store.records.inbound_newest(before, limit)

    async def inbound_after(self, after: int, limit: int) -> list[StoredInbound]:
        return await self._store.records.inbound_after(after, limit)
