"""Where contacts as an audience are kept: attributes, tags, groups, saved audiences.

Two implementations of one protocol: the node's own SQLite tables (`LocalContactBook`,
below, over `gateway/store/contacts_sql.py`) and, on a cluster, the PostgreSQL tables
every node shares (`gateway/cluster/contacts.py`), so a group built on one node is the
audience of a campaign started on another. The use cases (`usecase.py`, `importer.py`)
see only this interface; each write is one transaction with the check it depends on
(a group's name taken once, a contact compared with an imported row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.contacts.audience import AudienceSpec
from gateway.store import consent_sql, contacts_sql
from gateway.store.consent_sql import StateRow
from gateway.store.contacts_sql import AudienceRow, Changes, ContactRow, GroupRow, ImportRow
from gateway.store.store import Store


class ContactBook(Protocol):
    async def page(self, spec: AudienceSpec, after: bytes, limit: int) -> list[ContactRow]:
        """The audience's contacts after index `after`, in index order."""
        ...

    async def count(self, spec: AudienceSpec) -> int: ...

    async def contact(self, idx: bytes) -> ContactRow | None: ...

    async def states(self, idx: bytes) -> list[StateRow]:
        """The contact's consent standing (the ledger's)."""
        ...

    async def audience_idxs(self, spec: AudienceSpec, after: bytes, limit: int) -> list[bytes]: ...

    async def facets(self) -> dict[str, list[str]]: ...

    async def update(self, idx: bytes, changes: Changes, now: float) -> bool:
        """Apply `changes` to an existing contact; False if there is none."""
        ...

    async def groups(self) -> list[GroupRow]: ...

    async def group(self, group_id: str) -> GroupRow | None: ...

    async def create_group(self, name: str, description: str | None, now: float) -> str | None:
        """A new group's id; None when the name is taken."""
        ...

    async def update_group(
        self, group_id: str, name: str | None, description: str | None, now: float
    ) -> str:
        """ "ok", "not_found" or "name_taken"."""
        ...

    async def delete_group(self, group_id: str) -> bool: ...

    async def add_members(self, group_id: str, idxs: Sequence[bytes], now: float) -> int | None:
        """Existing contacts added (members already in not counted); None: no group."""
        ...

    async def remove_members(self, group_id: str, idxs: Sequence[bytes]) -> int | None: ...

    async def audiences(self) -> list[AudienceRow]: ...

    async def audience(self, audience_id: str) -> AudienceRow | None: ...

    async def save_audience(
        self, audience_id: str | None, name: str, spec: AudienceSpec, now: float
    ) -> str:
        """The audience's id; "" when the name is another's, "!" when there is no
        audience `audience_id`."""
        ...

    async def delete_audience(self, audience_id: str) -> bool: ...

    async def import_rows(
        self, rows: Sequence[ImportRow], group_id: str | None, now: float
    ) -> list[str]:
        """Create or update each row's contact: CREATED, UPDATED or UNCHANGED each."""
        ...


class LocalContactBook:
    """`ContactBook` on this node's SQLite store: reads from the reader pool, writes as
    jobs of the writer thread."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def page(self, spec: AudienceSpec, after: bytes, limit: int) -> list[ContactRow]:
        return await contacts_sql.page(self._store, spec, after, limit)

    async def count(self, spec: AudienceSpec) -> int:
        return await contacts_sql.count(self._store, spec)

    async def contact(self, idx: bytes) -> ContactRow | None:
        return await contacts_sql.contact(self._store, idx)

    async def states(self, idx: bytes) -> list[StateRow]:
        return await consent_sql.states(self._store, idx)

    async def audience_idxs(self, spec: AudienceSpec, after: bytes, limit: int) -> list[bytes]:
        return await contacts_sql.audience_idxs(self._store, spec, after, limit)

    async def facets(self) -> dict[str, list[str]]:
        return await contacts_sql.facets(self._store)

    async def update(self, idx: bytes, changes: Changes, now: float) -> bool:
        return await self._store.writer.run(
            lambda conn: contacts_sql.update(conn, idx, changes, now)
        )

    async def groups(self) -> list[GroupRow]:
        return await contacts_sql.groups(self._store)

    async def group(self, group_id: str) -> GroupRow | None:
        return await contacts_sql.group(self._store, group_id)

    async def create_group(self, name: str, description: str | None, now: float) -> str | None:
        return await self._store.writer.run(
            lambda conn: contacts_sql.create_group(conn, name, description, now)
        )

    async def update_group(
        self, group_id: str, name: str | None, description: str | None, now: float
    ) -> str:
        return await self._store.writer.run(
            lambda conn: contacts_sql.update_group(conn, group_id, name, description, now)
        )

    async def delete_group(self, group_id: str) -> bool:
        return await self._store.writer.run(lambda c: contacts_sql.delete_group(c, group_id))

    async def add_members(self, group_id: str, idxs: Sequence[bytes], now: float) -> int | None:
        return await self._store.writer.run(
            lambda conn: contacts_sql.add_members(conn, group_id, idxs, now)
        )

    async def remove_members(self, group_id: str, idxs: Sequence[bytes]) -> int | None:
        return await self._store.writer.run(
            lambda conn: contacts_sql.remove_members(conn, group_id, idxs)
        )

    async def audiences(self) -> list[AudienceRow]:
        return await contacts_sql.audiences(self._store)

    async def audience(self, audience_id: str) -> AudienceRow | None:
        return await contacts_sql.audience(self._store, audience_id)

    async def save_audience(
        self, audience_id: str | None, name: str, spec: AudienceSpec, now: float
    ) -> str:
        return await self._store.writer.run(
            lambda conn: contacts_sql.save_audience(conn, audience_id, name, spec, now)
        )

    async def delete_audience(self, audience_id: str) -> bool:
        return await self._store.writer.run(
            lambda conn: contacts_sql.delete_audience(conn, audience_id)
        )

    async def import_rows(
        self, rows: Sequence[ImportRow], group_id: str | None, now: float
    ) -> list[str]:
        cipher = consent_sql.cipher_of(self._store)
        return await self._store.writer.run(
            lambda conn: contacts_sql.import_rows(conn, cipher, rows, group_id, now)
        )
