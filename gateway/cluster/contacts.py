"""Contacts as an audience in the cluster's PostgreSQL: the `ContactBook` of
`gateway/contacts/book.py` on a cluster node (cluster migration 18).

The contacts are the consent ledger's shared `contacts` (`consent_store.py`), with
SQLite's audience attributes (cluster migration 16); groups, members, tags and saved
audiences are shared tables keyed alike, so a group built on one node is a campaign's
audience on any. A
name is unique across the nodes in one statement (`ON CONFLICT DO NOTHING`, a unique
index): two nodes creating one name at once, one wins. An import chunk holds its
contacts' advisory locks (`consent_store.lock_contacts`) from its comparison to its
commit, so two nodes importing one number take turns. Numbers are decrypted with the
shared keyring's cipher, bound to the same row ids and columns as SQLite's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.cluster import consent_store
from gateway.cluster.audience_sql import audience_query, count_query
from gateway.cluster.lease import Pool
from gateway.consent.ledger import contact_row_id
from gateway.contacts.audience import AudienceSpec
from gateway.store.consent_sql import StateRow
from gateway.store.contacts_sql import (
    ATTRIBUTES,
    CREATED,
    UNCHANGED,
    UPDATED,
    AudienceRow,
    Changes,
    ContactRow,
    GroupRow,
    ImportRow,
    new_id,
)
from gateway.store.crypto import FieldCipher

_SPEC = msgspec.json.Decoder(AudienceSpec)
_CONTACT = (
    "SELECT idx, number_ct, language, time_zone, age_band, clinic, preferences, created_at,"
    " updated_at FROM contacts"
)
_GROUP = (
    "SELECT g.id, g.name, g.description,"
    " (SELECT count(*) FROM contact_group_members m WHERE m.group_id = g.id),"
    " g.created_at, g.updated_at FROM contact_groups g"
)
_AUDIENCE = "SELECT id, name, spec, created_at, updated_at FROM contact_audiences"
_ADD_MEMBERS = (
    "INSERT INTO contact_group_members (group_id, contact_idx, added_at)"
    " SELECT %s, idx, %s FROM contacts WHERE idx = ANY(%s) ON CONFLICT DO NOTHING"
)


def _prefs(value: Sequence[str]) -> str | None:
    """Preferences as SQLite keeps them: a sorted JSON array, or NULL for none."""
    return json.dumps(sorted(set(value))) if value else None


def _audience(r: Sequence[Any]) -> AudienceRow:
    return AudienceRow(r[0], r[1], _SPEC.decode(r[2]), r[3], r[4])


class ClusterContactBook:
    """`ContactBook` on the shared tables."""

    def __init__(self, pool: Pool, cipher: FieldCipher) -> None:
        self._pool = pool
        self._cipher = cipher

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()

    async def _rows(self, rows: Sequence[Any]) -> list[ContactRow]:
        if not rows:
            return []
        idxs = [bytes(r[0]) for r in rows]
        tags: dict[bytes, list[str]] = {}
        groups: dict[bytes, list[str]] = {}
        for idx, tag in await self._all(
            "SELECT contact_idx, tag FROM contact_tags WHERE contact_idx = ANY(%s) ORDER BY tag",
            (idxs,),
        ):
            tags.setdefault(bytes(idx), []).append(tag)
        for idx, gid in await self._all(
            "SELECT contact_idx, group_id FROM contact_group_members"
            " WHERE contact_idx = ANY(%s) ORDER BY group_id",
            (idxs,),
        ):
            groups.setdefault(bytes(idx), []).append(gid)
        c = self._cipher
        return [
            ContactRow(
                idx.hex(),
                c.decrypt(bytes(r[1]), contact_row_id(idx), "number"),
                r[2],
                r[3],
                r[4],
                r[5],
                tuple(json.loads(r[6])) if r[6] else (),
                tuple(tags.get(idx, ())),
                tuple(groups.get(idx, ())),
                r[7],
                r[8],
            )
            for idx, r in zip(idxs, rows, strict=True)
        ]

    async def page(self, spec: AudienceSpec, after: bytes, limit: int) -> list[ContactRow]:
        sql, params = audience_query(spec, after, limit)
        rows = await self._all(f"{_CONTACT} WHERE idx IN ({sql}) ORDER BY idx", params)
        return await self._rows(rows)

    async def count(self, spec: AudienceSpec) -> int:
        sql, params = count_query(spec)
        return int((await self._all(sql, params))[0][0])

    async def contact(self, idx: bytes) -> ContactRow | None:
        found = await self._rows(await self._all(f"{_CONTACT} WHERE idx = %s", (idx,)))
        return found[0] if found else None

    async def states(self, idx: bytes) -> list[StateRow]:
        rows = await self._all(
            "SELECT program, scope, opted, since, source, written_seq FROM consent_state"
            " WHERE contact_idx = %s ORDER BY program, scope",
            (idx,),
        )
        return [StateRow(r[0], r[1], r[2], r[3], r[4], r[5] is not None) for r in rows]

    async def audience_idxs(self, spec: AudienceSpec, after: bytes, limit: int) -> list[bytes]:
        sql, params = audience_query(spec, after, limit)
        return [bytes(r[0]) for r in await self._all(sql, params)]

    async def facets(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, sql in (
            ("languages", "SELECT DISTINCT language FROM contacts WHERE language IS NOT NULL"),
            ("age_bands", "SELECT DISTINCT age_band FROM contacts WHERE age_band IS NOT NULL"),
            ("clinics", "SELECT DISTINCT clinic FROM contacts WHERE clinic IS NOT NULL"),
            ("tags", "SELECT DISTINCT tag FROM contact_tags"),
        ):
            out[name] = sorted(r[0] for r in await self._all(sql))
        return out

    async def update(self, idx: bytes, changes: Changes, now: float) -> bool:
        sets = ["updated_at = %s"]
        values: list[Any] = [now]
        for name in ATTRIBUTES:
            if name in changes.values:
                sets.append(f"{name} = %s")
                values.append(changes.values[name])
            elif name in changes.clear:
                sets.append(f"{name} = NULL")
        if "preferences" in changes.clear:
            sets.append("preferences = NULL")
        elif changes.preferences is not None:
            sets.append("preferences = %s")
            values.append(_prefs(changes.preferences))
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"UPDATE contacts SET {', '.join(sets)} WHERE idx = %s".encode(),  # noqa: S608 - fixed columns
                (*values, idx),
            )
            if cur.rowcount != 1:
                return False
            if changes.tags is not None:
                await conn.execute("DELETE FROM contact_tags WHERE contact_idx = %s", (idx,))
                await conn.execute(
                    "INSERT INTO contact_tags (tag, contact_idx) SELECT t, %s"
                    " FROM unnest(%s::text[]) t ON CONFLICT DO NOTHING",
                    (idx, list(changes.tags)),
                )
        return True

    # -- groups ------------------------------------------------------------------------

    async def groups(self) -> list[GroupRow]:
        return [GroupRow(*r) for r in await self._all(f"{_GROUP} ORDER BY g.name")]

    async def group(self, group_id: str) -> GroupRow | None:
        rows = await self._all(f"{_GROUP} WHERE g.id = %s", (group_id,))
        return GroupRow(*rows[0]) if rows else None

    async def create_group(self, name: str, description: str | None, now: float) -> str | None:
        gid = new_id("g")
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO contact_groups (id, name, description, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (gid, name, description, now, now),
            )
        return gid if cur.rowcount == 1 else None

    async def update_group(
        self, group_id: str, name: str | None, description: str | None, now: float
    ) -> str:
        async with self._pool.connection() as conn, conn.transaction():
            found = await conn.execute(
                "SELECT 1 FROM contact_groups WHERE id = %s FOR UPDATE", (group_id,)
            )
            if await found.fetchone() is None:
                return "not_found"
            if name is not None:
                taken = await conn.execute(
                    "SELECT 1 FROM contact_groups WHERE name = %s AND id <> %s", (name, group_id)
                )
                if await taken.fetchone() is not None:
                    return "name_taken"
            # A name taken meanwhile on another node fails the unique index: a 5xx,
            # not a second group with the name.
            await conn.execute(
                "UPDATE contact_groups SET name = coalesce(%s, name),"
                " description = CASE WHEN %s THEN nullif(%s::text, '') ELSE description END,"
                " updated_at = %s WHERE id = %s",
                (name, description is not None, description, now, group_id),
            )
        return "ok"

    async def delete_group(self, group_id: str) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM contact_group_members WHERE group_id = %s", (group_id,))
            cur = await conn.execute("DELETE FROM contact_groups WHERE id = %s", (group_id,))
            return cur.rowcount == 1

    async def add_members(self, group_id: str, idxs: Sequence[bytes], now: float) -> int | None:
        async with self._pool.connection() as conn, conn.transaction():
            found = await conn.execute(
                "SELECT 1 FROM contact_groups WHERE id = %s FOR SHARE", (group_id,)
            )
            if await found.fetchone() is None:
                return None
            cur = await conn.execute(_ADD_MEMBERS, (group_id, now, list(idxs)))
            return cur.rowcount

    async def remove_members(self, group_id: str, idxs: Sequence[bytes]) -> int | None:
        async with self._pool.connection() as conn, conn.transaction():
            found = await conn.execute("SELECT 1 FROM contact_groups WHERE id = %s", (group_id,))
            if await found.fetchone() is None:
                return None
            cur = await conn.execute(
                "DELETE FROM contact_group_members WHERE group_id = %s AND contact_idx = ANY(%s)",
                (group_id, list(idxs)),
            )
            return cur.rowcount

    # -- saved audiences ---------------------------------------------------------------

    async def audiences(self) -> list[AudienceRow]:
        return [_audience(r) for r in await self._all(f"{_AUDIENCE} ORDER BY name")]

    async def audience(self, audience_id: str) -> AudienceRow | None:
        rows = await self._all(f"{_AUDIENCE} WHERE id = %s", (audience_id,))
        return _audience(rows[0]) if rows else None

    async def save_audience(
        self, audience_id: str | None, name: str, spec: AudienceSpec, now: float
    ) -> str:
        text = msgspec.json.encode(spec).decode()
        async with self._pool.connection() as conn, conn.transaction():
            if audience_id is None:
                aid = new_id("a")
                cur = await conn.execute(
                    "INSERT INTO contact_audiences (id, name, spec, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (aid, name, text, now, now),
                )
                return aid if cur.rowcount == 1 else ""
            taken = await conn.execute(
                "SELECT 1 FROM contact_audiences WHERE name = %s AND id <> %s", (name, audience_id)
            )
            if await taken.fetchone() is not None:
                return ""
            cur = await conn.execute(
                "UPDATE contact_audiences SET name = %s, spec = %s, updated_at = %s WHERE id = %s",
                (name, text, now, audience_id),
            )
            return audience_id if cur.rowcount == 1 else "!"

    async def delete_audience(self, audience_id: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("DELETE FROM contact_audiences WHERE id = %s", (audience_id,))
            return cur.rowcount == 1

    # -- import ------------------------------------------------------------------------

    async def import_rows(
        self, rows: Sequence[ImportRow], group_id: str | None, now: float
    ) -> list[str]:
        async with self._pool.connection() as conn, conn.transaction():
            await consent_store.lock_contacts(conn, [r.idx for r in rows])
            gids = await self._group_ids(conn, sorted({g for r in rows for g in r.groups}), now)
            return [await self._import_one(conn, r, gids, group_id, now) for r in rows]

    async def _group_ids(self, conn: Any, names: Sequence[str], now: float) -> dict[str, str]:
        """Group ids by name, creating the groups not there yet (on any node at once:
        the unique name picks one)."""
        out: dict[str, str] = {}
        for name in names:
            await conn.execute(
                "INSERT INTO contact_groups (id, name, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (new_id("g"), name, now, now),
            )
            row = await (
                await conn.execute("SELECT id FROM contact_groups WHERE name = %s", (name,))
            ).fetchone()
            out[name] = row[0]
        return out

    async def _import_one(
        self, conn: Any, r: ImportRow, gids: dict[str, str], group_id: str | None, now: float
    ) -> str:
        before = await (
            await conn.execute(
                "SELECT language, time_zone, age_band, clinic, preferences FROM contacts"
                " WHERE idx = %s",
                (r.idx,),
            )
        ).fetchone()
        prefs = None if r.preferences is None else _prefs(r.preferences)
        if before is None:
            await conn.execute(
                "INSERT INTO contacts (idx, number_ct, language, time_zone, age_band, clinic,"
                " preferences, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    r.idx,
                    self._cipher.encrypt(r.number, contact_row_id(r.idx), "number"),
                    *(r.values.get(a) for a in ATTRIBUTES),
                    prefs,
                    now,
                    now,
                ),
            )
            outcome = CREATED
        else:
            changed: dict[str, Any] = {
                a: v for a, v in r.values.items() if before[ATTRIBUTES.index(a)] != v
            }
            if prefs is not None and prefs != before[4]:
                changed["preferences"] = prefs
            if changed:
                sets = ", ".join(f"{a} = %s" for a in changed)
                await conn.execute(
                    f"UPDATE contacts SET {sets}, updated_at = %s WHERE idx = %s".encode(),  # noqa: S608 - fixed columns
                    (*changed.values(), now, r.idx),
                )
            outcome = UPDATED if changed else UNCHANGED
        added = 0
        if r.tags:
            cur = await conn.execute(
                "INSERT INTO contact_tags (tag, contact_idx) SELECT t, %s"
                " FROM unnest(%s::text[]) t ON CONFLICT DO NOTHING",
                (r.idx, list(r.tags)),
            )
            added += cur.rowcount
        joined = [gids[g] for g in r.groups] + ([group_id] if group_id else [])
        if joined:
            cur = await conn.execute(
                "INSERT INTO contact_group_members (group_id, contact_idx, added_at)"
                " SELECT g, %s, %s FROM unnest(%s::text[]) g ON CONFLICT DO NOTHING",
                (r.idx, now, joined),
            )
            added += cur.rowcount
        return UPDATED if outcome == UNCHANGED and added else outcome
