"""Where tracked links are kept: the named links, the per-message tokens, the clicks.

Two implementations of one protocol: the node's own SQLite tables (`LocalLinkStore`,
below) and, on a cluster, the PostgreSQL tables every node shares
(`gateway/cluster/links.py`), so a short URL minted on one node redirects on any and
its clicks count once, wherever they landed. The use case (`usecase.py`) sees only
this interface; the tokens themselves are written with their message by the accept
(`AcceptStore.accept`'s `links`).
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from gateway.links import store as sql
from gateway.links.placeholders import NamedLink
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store


class LinkStore(Protocol):
    async def all_links(self) -> list[NamedLink]: ...

    async def link(self, link_id: str) -> NamedLink | None: ...

    async def create(
        self, name: str, destination: str, expires_at: float | None, now: float, actor: str
    ) -> NamedLink | None:
        """A new named link, audited as `link_created`; None if the name is taken
        (one statement: no race, across nodes too)."""
        ...

    async def counts(self, link_id: str | None = None) -> dict[str, sql.Counts]:
        """Click counts per link (of one link, with `link_id`)."""
        ...

    async def classes(self, link_id: str) -> dict[str, int]:
        """One link's clicks per agent class (the classes clicked at least once)."""
        ...

    async def target(self, token_hash: bytes) -> sql.Target | None: ...

    async def record_click(
        self, target: sql.Target, at: float, human: bool, agent_class: str
    ) -> None: ...

    async def prune(self, before: float) -> int:
        """Forget tokens that expired before `before`; how many went."""
        ...


class LocalLinkStore:
    """`LinkStore` on this node's SQLite store: reads from the reader pool, writes on
    the writer thread (a link's creation with its audit entry, in one transaction)."""

    def __init__(self, store: Store, audit: AuditTrail) -> None:
        self._store = store
        self._audit = audit

    async def all_links(self) -> list[NamedLink]:
        return [sql.link_of(r) for r in await self._store.reader.all(sql.ALL_SQL)]

    async def link(self, link_id: str) -> NamedLink | None:
        row = await self._store.reader.one(sql.ONE_SQL, (link_id,))
        return None if row is None else sql.link_of(row)

    async def create(
        self, name: str, destination: str, expires_at: float | None, now: float, actor: str
    ) -> NamedLink | None:
        def job(conn: sqlite3.Connection) -> NamedLink | None:
            link = sql.insert_link(conn, name, destination, expires_at, now, actor)
            if link is not None:
                self._audit.append_in(conn, now, actor, "link_created", "link", link.id, name=name)
            return link

        return await self._store.writer.run(job)

    async def counts(self, link_id: str | None = None) -> dict[str, sql.Counts]:
        if link_id is None:
            return sql.counts_of(await self._store.reader.all(sql.COUNTS_SQL))
        return sql.counts_of(await self._store.reader.all(sql.COUNTS_OF_SQL, (link_id,)))

    async def classes(self, link_id: str) -> dict[str, int]:
        rows = await self._store.reader.all(sql.CLASSES_OF_SQL, (link_id,))
        return {str(agent_class): int(n) for agent_class, n in rows}

    async def target(self, token_hash: bytes) -> sql.Target | None:
        return sql.target_of(await self._store.reader.one(sql.TARGET_SQL, (token_hash,)))

    async def record_click(
        self, target: sql.Target, at: float, human: bool, agent_class: str
    ) -> None:
        await self._store.writer.run(
            lambda conn: sql.insert_click(conn, target, at, human, agent_class)
        )

    async def prune(self, before: float) -> int:
        return await self._store.writer.run(lambda conn: sql.prune(conn, before))
