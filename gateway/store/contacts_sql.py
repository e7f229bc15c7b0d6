"""Contacts as an audience: their attributes, tags, groups and saved audiences (SQL).

Reads go through the read pool; writes are functions of the writer's connection, run
with `store.writer.run`, so a check and the change it allows are one transaction (a
group's name taken once, a contact compared with an imported row and updated in the
same step). Numbers are decrypted here and nowhere else; a contact is named outside
by its key, the blind index in hex.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.consent.ledger import contact_row_id
from gateway.contacts.audience import AudienceSpec, audience_query, count_query
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

ATTRIBUTES = ("language", "time_zone", "age_band", "clinic")
_SPEC = msgspec.json.Decoder(AudienceSpec)


@dataclass(frozen=True, slots=True)
class ContactRow:
    key: str  # the blind index, hex
    number: str
    language: str | None
    time_zone: str | None
    age_band: str | None
    clinic: str | None
    preferences: tuple[str, ...]
    tags: tuple[str, ...]
    groups: tuple[str, ...]  # group ids
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class GroupRow:
    id: str
    name: str
    description: str | None
    members: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class AudienceRow:
    id: str
    name: str
    spec: AudienceSpec
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Changes:
    """Attribute changes: a value set, a name in `clear` emptied, the rest kept.
    `preferences`/`tags`: the whole new set when not None."""

    values: dict[str, str]
    clear: frozenset[str] = frozenset()
    preferences: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One imported line, its number normalised; None attributes are kept as they are."""

    idx: bytes
    number: str
    values: dict[str, str]
    preferences: tuple[str, ...] | None
    tags: tuple[str, ...]
    groups: tuple[str, ...]  # group names


CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"


def _cipher(store: Store) -> FieldCipher:
    if store.cipher is None:
        raise RuntimeError("the store is not open")
    return store.cipher


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


def _prefs(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


_CONTACT = (
    "SELECT idx, number_ct, language, time_zone, age_band, clinic, preferences, created_at,"
    " updated_at FROM contacts"
)


async def _rows(store: Store, rows: Sequence[sqlite3.Row]) -> list[ContactRow]:
    if not rows:
        return []
    idxs = [bytes(r[0]) for r in rows]
    marks = ",".join("?" * len(idxs))
    tags: dict[bytes, list[str]] = {}
    for idx, tag in await store.reader.all(
        f"SELECT contact_idx, tag FROM contact_tags WHERE contact_idx IN ({marks})"  # noqa: S608 - placeholders only
        " ORDER BY tag",
        idxs,
    ):
        tags.setdefault(bytes(idx), []).append(tag)
    groups: dict[bytes, list[str]] = {}
    for idx, gid in await store.reader.all(
        "SELECT contact_idx, group_id FROM contact_group_members"  # noqa: S608 - placeholders only
        f" WHERE contact_idx IN ({marks}) ORDER BY group_id",
        idxs,
    ):
        groups.setdefault(bytes(idx), []).append(gid)
    c = _cipher(store)
    return [
        ContactRow(
            idx.hex(),
            c.decrypt(r[1], contact_row_id(idx), "number"),
            r[2],
            r[3],
            r[4],
            r[5],
            _prefs(r[6]),
            tuple(tags.get(idx, ())),
            tuple(groups.get(idx, ())),
            r[7],
            r[8],
        )
        for idx, r in zip(idxs, rows, strict=True)
    ]


async def page(store: Store, spec: AudienceSpec, after: bytes, limit: int) -> list[ContactRow]:
    """The audience's contacts after index `after`, in index order."""
    sql, params = audience_query(spec)
    rows = await store.reader.all(
        f"{_CONTACT} WHERE idx IN ({sql}) ORDER BY idx",
        [*params, after, limit],
    )
    return await _rows(store, rows)


async def count(store: Store, spec: AudienceSpec) -> int:
    sql, params = count_query(spec)
    row = await store.reader.one(sql, params)
    return int(row[0]) if row is not None else 0


async def contact(store: Store, idx: bytes) -> ContactRow | None:
    rows = await store.reader.all(f"{_CONTACT} WHERE idx = ?", (idx,))
    found = await _rows(store, rows)
    return found[0] if found else None


async def audience_idxs(store: Store, spec: AudienceSpec, after: bytes, limit: int) -> list[bytes]:
    sql, params = audience_query(spec)
    return [bytes(r[0]) for r in await store.reader.all(sql, [*params, after, limit])]


_GROUP = (
    "SELECT g.id, g.name, g.description,"
    " (SELECT count(*) FROM contact_group_members m WHERE m.group_id = g.id),"
    " g.created_at, g.updated_at FROM contact_groups g"
)


async def groups(store: Store) -> list[GroupRow]:
    return [GroupRow(*r) for r in await store.reader.all(f"{_GROUP} ORDER BY g.name")]


async def group(store: Store, group_id: str) -> GroupRow | None:
    r = await store.reader.one(f"{_GROUP} WHERE g.id = ?", (group_id,))
    return None if r is None else GroupRow(*r)


_AUDIENCE = "SELECT id, name, spec, created_at, updated_at FROM contact_audiences"


def _audience(r: Sequence[Any]) -> AudienceRow:
    return AudienceRow(r[0], r[1], _SPEC.decode(r[2]), r[3], r[4])


async def audiences(store: Store) -> list[AudienceRow]:
    return [_audience(r) for r in await store.reader.all(f"{_AUDIENCE} ORDER BY name")]


async def audience(store: Store, audience_id: str) -> AudienceRow | None:
    r = await store.reader.one(f"{_AUDIENCE} WHERE id = ?", (audience_id,))
    return None if r is None else _audience(r)


async def facets(store: Store) -> dict[str, list[str]]:
    """The values in use, for the filters: languages, age bands, clinics, tags."""
    out: dict[str, list[str]] = {}
    for name, sql in (
        ("languages", "SELECT DISTINCT language FROM contacts WHERE language IS NOT NULL"),
        ("age_bands", "SELECT DISTINCT age_band FROM contacts WHERE age_band IS NOT NULL"),
        ("clinics", "SELECT DISTINCT clinic FROM contacts WHERE clinic IS NOT NULL"),
        ("tags", "SELECT DISTINCT tag FROM contact_tags"),
    ):
        out[name] = sorted(r[0] for r in await store.reader.all(sql))
    return out


# -- writes (on the writer's connection) -----------------------------------------------


def update(conn: sqlite3.Connection, idx: bytes, changes: Changes, now: float) -> bool:
    """Apply `changes` to an existing contact; False if there is none."""
    if conn.execute("SELECT 1 FROM contacts WHERE idx = ?", (idx,)).fetchone() is None:
        return False
    sets = ["updated_at = ?"]
    values: list[Any] = [now]
    for name in ATTRIBUTES:
        if name in changes.values:
            sets.append(f"{name} = ?")
            values.append(changes.values[name])
        elif name in changes.clear:
            sets.append(f"{name} = NULL")
    if "preferences" in changes.clear:
        sets.append("preferences = NULL")
    elif changes.preferences is not None:
        sets.append("preferences = ?")
        values.append(json.dumps(sorted(set(changes.preferences))) if changes.preferences else None)
    conn.execute(
        f"UPDATE contacts SET {', '.join(sets)} WHERE idx = ?",  # noqa: S608 - fixed columns
        (*values, idx),
    )
    if changes.tags is not None:
        conn.execute("DELETE FROM contact_tags WHERE contact_idx = ?", (idx,))
        conn.executemany(
            "INSERT OR IGNORE INTO contact_tags (tag, contact_idx) VALUES (?, ?)",
            [(t, idx) for t in changes.tags],
        )
    return True


def create_group(
    conn: sqlite3.Connection, name: str, description: str | None, now: float
) -> str | None:
    """A new group's id; None when the name is taken."""
    gid = new_id("g")
    cur = conn.execute(
        "INSERT OR IGNORE INTO contact_groups (id, name, description, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (gid, name, description, now, now),
    )
    return gid if cur.rowcount == 1 else None


def update_group(
    conn: sqlite3.Connection, gid: str, name: str | None, description: str | None, now: float
) -> str:
    """ "ok", "not_found" or "name_taken" (the name checked and set in one step)."""
    if conn.execute("SELECT 1 FROM contact_groups WHERE id = ?", (gid,)).fetchone() is None:
        return "not_found"
    if name is not None:
        taken = conn.execute(
            "SELECT 1 FROM contact_groups WHERE name = ? AND id <> ?", (name, gid)
        ).fetchone()
        if taken:
            return "name_taken"
        conn.execute("UPDATE contact_groups SET name = ? WHERE id = ?", (name, gid))
    if description is not None:
        conn.execute(
            "UPDATE contact_groups SET description = ? WHERE id = ?", (description or None, gid)
        )
    conn.execute("UPDATE contact_groups SET updated_at = ? WHERE id = ?", (now, gid))
    return "ok"


def delete_group(conn: sqlite3.Connection, gid: str) -> bool:
    conn.execute("DELETE FROM contact_group_members WHERE group_id = ?", (gid,))
    return conn.execute("DELETE FROM contact_groups WHERE id = ?", (gid,)).rowcount == 1


def add_members(
    conn: sqlite3.Connection, gid: str, idxs: Iterable[bytes], now: float
) -> int | None:
    """Contacts added (existing contacts only; members already in are not counted);
    None when there is no such group."""
    if conn.execute("SELECT 1 FROM contact_groups WHERE id = ?", (gid,)).fetchone() is None:
        return None
    added = 0
    for idx in idxs:
        added += conn.execute(
            "INSERT OR IGNORE INTO contact_group_members (group_id, contact_idx, added_at)"
            " SELECT ?, idx, ? FROM contacts WHERE idx = ?",
            (gid, now, idx),
        ).rowcount
    return added


def remove_members(conn: sqlite3.Connection, gid: str, idxs: Iterable[bytes]) -> int | None:
    if conn.execute("SELECT 1 FROM contact_groups WHERE id = ?", (gid,)).fetchone() is None:
        return None
    return sum(
        conn.execute(
            "DELETE FROM contact_group_members WHERE group_id = ? AND contact_idx = ?", (gid, idx)
        ).rowcount
        for idx in idxs
    )


def save_audience(
    conn: sqlite3.Connection, aid: str | None, name: str, spec: AudienceSpec, now: float
) -> str:
    """The audience's id; "" when the name is another audience's, "!" when `aid` is
    given and there is no such audience."""
    taken = conn.execute("SELECT id FROM contact_audiences WHERE name = ?", (name,)).fetchone()
    if taken is not None and taken[0] != aid:
        return ""
    text = msgspec.json.encode(spec).decode()
    if aid is None:
        aid = new_id("a")
        conn.execute(
            "INSERT INTO contact_audiences (id, name, spec, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (aid, name, text, now, now),
        )
        return aid
    cur = conn.execute(
        "UPDATE contact_audiences SET name = ?, spec = ?, updated_at = ? WHERE id = ?",
        (name, text, now, aid),
    )
    return aid if cur.rowcount == 1 else "!"


def delete_audience(conn: sqlite3.Connection, aid: str) -> bool:
    return conn.execute("DELETE FROM contact_audiences WHERE id = ?", (aid,)).rowcount == 1


def _group_ids(conn: sqlite3.Connection, names: Iterable[str], now: float) -> dict[str, str]:
    """Group ids by name, creating the groups not there yet."""
    out: dict[str, str] = {}
    for name in names:
        r = conn.execute("SELECT id FROM contact_groups WHERE name = ?", (name,)).fetchone()
        if r is None:
            gid = new_id("g")
            conn.execute(
                "INSERT INTO contact_groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                (gid, name, now, now),
            )
            out[name] = gid
        else:
            out[name] = r[0]
    return out


def import_rows(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    rows: Sequence[ImportRow],
    group_id: str | None,
    now: float,
) -> list[str]:
    """Create or update each row's contact; CREATED, UPDATED or UNCHANGED per row (a
    row that changes nothing, as a second import of one file, is UNCHANGED). Tags and
    groups are added, never removed."""
    gids = _group_ids(conn, sorted({g for r in rows for g in r.groups}), now)
    out: list[str] = []
    for r in rows:
        before = conn.execute(
            "SELECT language, time_zone, age_band, clinic, preferences FROM contacts WHERE idx = ?",
            (r.idx,),
        ).fetchone()
        prefs = None if r.preferences is None else json.dumps(sorted(set(r.preferences)))
        if before is None:
            conn.execute(
                "INSERT INTO contacts (idx, number_ct, language, time_zone, age_band, clinic,"
                " preferences, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    r.idx,
                    cipher.encrypt(r.number, contact_row_id(r.idx), "number"),
                    *(r.values.get(a) for a in ATTRIBUTES),
                    prefs,
                    now,
                    now,
                ),
            )
            outcome = CREATED
        else:
            changed = {a: v for a, v in r.values.items() if before[ATTRIBUTES.index(a)] != v}
            if prefs is not None and prefs != before[4]:
                changed["preferences"] = prefs
            if changed:
                sets = ", ".join(f"{a} = ?" for a in changed)
                conn.execute(
                    f"UPDATE contacts SET {sets}, updated_at = ? WHERE idx = ?",  # noqa: S608 - fixed columns
                    (*changed.values(), now, r.idx),
                )
            outcome = UPDATED if changed else UNCHANGED
        added = 0
        for tag in r.tags:
            added += conn.execute(
                "INSERT OR IGNORE INTO contact_tags (tag, contact_idx) VALUES (?, ?)", (tag, r.idx)
            ).rowcount
        for gid in [gids[g] for g in r.groups] + ([group_id] if group_id else []):
            added += conn.execute(
                "INSERT OR IGNORE INTO contact_group_members (group_id, contact_idx, added_at)"
                " VALUES (?, ?, ?)",
                (gid, r.idx, now),
            ).rowcount
        out.append(UPDATED if outcome == UNCHANGED and added else outcome)
    return out
