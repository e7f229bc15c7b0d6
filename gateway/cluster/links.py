"""Tracked links in the cluster's PostgreSQL: the `LinkStore` of
`gateway/links/link_store.py` on a cluster node (cluster migration 14).

Every node reads and writes the same `links`, `link_tokens` and `link_clicks`, so a
short URL minted with its message on one node (`ClusterQueue.insert_within`) redirects
on any node, its click is one row wherever it landed, and the link list's counts are
the whole site's. A named link's name is unique across the nodes (one `INSERT ... ON
CONFLICT DO NOTHING`: two nodes creating one name at once, one of them wins). The
creation is audited in the node's own chain once the shared row is committed (each
node keeps its chain; `gateway/cluster/audit.py` anchors them).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from gateway.cluster.lease import Pool
from gateway.links import store as sql
from gateway.links.placeholders import NamedLink
from gateway.store.audit_log import AuditTrail

_COLUMNS = "id, name, destination, expires_at, created_at, created_by"
_COUNTS = (
    "SELECT link_id, sum(human), sum(1 - human), count(DISTINCT CASE WHEN human = 1"
    " THEN message_id END) FROM link_clicks"
)
_TARGET = (
    "SELECT t.link_id, t.message_id, t.expires_at, l.destination, l.expires_at"
    " FROM link_tokens t JOIN links l ON l.id = t.link_id WHERE t.token_hash = %s"
)


class ClusterLinkStore:
    """`LinkStore` on the shared tables; clicks name the node that answered them."""

    def __init__(self, pool: Pool, audit: AuditTrail, node_id: str) -> None:
        self._pool = pool
        self._audit = audit
        self._node_id = node_id

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(query.encode(), params)).fetchall()

    async def _count(self, query: str, params: Sequence[Any]) -> int:
        async with self._pool.connection() as conn:
            return (await conn.execute(query.encode(), params)).rowcount

    async def all_links(self) -> list[NamedLink]:
        rows = await self._all(f"SELECT {_COLUMNS} FROM links ORDER BY name")  # noqa: S608
        return [sql.link_of(r) for r in rows]

    async def link(self, link_id: str) -> NamedLink | None:
        rows = await self._all(f"SELECT {_COLUMNS} FROM links WHERE id = %s", (link_id,))  # noqa: S608
        return sql.link_of(rows[0]) if rows else None

    async def create(
        self, name: str, destination: str, expires_at: float | None, now: float, actor: str
    ) -> NamedLink | None:
        link = NamedLink("lnk_" + secrets.token_hex(8), name, destination, expires_at, now, actor)
        added = await self._count(
            f"INSERT INTO links ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"  # noqa: S608
            " ON CONFLICT (name) DO NOTHING",
            (link.id, name, destination, expires_at, now, actor),
        )
        if added != 1:
            return None
        await self._audit.record(actor, "link_created", "link", link.id, name=name)
        return link

    async def counts(self, link_id: str | None = None) -> dict[str, sql.Counts]:
        if link_id is None:
            return sql.counts_of(await self._all(_COUNTS + " GROUP BY link_id"))
        rows = await self._all(_COUNTS + " WHERE link_id = %s GROUP BY link_id", (link_id,))
        return sql.counts_of(rows)

    async def classes(self, link_id: str) -> dict[str, int]:
        rows = await self._all(
            "SELECT agent_class, count(*) FROM link_clicks WHERE link_id = %s"
            " GROUP BY agent_class ORDER BY agent_class",
            (link_id,),
        )
        return {str(agent_class): int(n) for agent_class, n in rows}

    async def target(self, token_hash: bytes) -> sql.Target | None:
        rows = await self._all(_TARGET, (token_hash,))
        return sql.target_of(rows[0] if rows else None)

    async def record_click(
        self, target: sql.Target, at: float, human: bool, agent_class: str
    ) -> None:
        await self._count(
            "INSERT INTO link_clicks (link_id, message_id, at, human, agent_class, node_id)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (target.link_id, target.message_id, at, int(human), agent_class, self._node_id),
        )

    async def prune(self, before: float) -> int:
        return await self._count("DELETE FROM link_tokens WHERE expires_at < %s", (before,))
