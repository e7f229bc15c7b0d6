"""An audience: which contacts a campaign or a group send goes to (pure SQL building).

A contact belongs to an audience when it is in any of `groups` or carries any of `tags`
(both empty: every contact), and it matches every attribute filter given: its language,
age band and clinic are among those listed, and it has every preference listed. The
contacts are named by their blind index; numbers stay encrypted in `contacts`, and a
caller that needs them decrypts them through the store, one batch at a time.

Consent, quiet hours and caps are not decided here: the send policy judges every
message an audience turns into, as it judges any other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Annotated

import msgspec

Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
BATCH = 1000


class AudienceSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Who receives a campaign or a group send. Every list is optional."""

    groups: list[Key] = []  # group ids
    tags: list[Key] = []
    languages: list[Key] = []
    age_bands: list[Key] = []
    clinics: list[Key] = []
    preferences: list[Key] = []  # a contact must have all of them

    @property
    def everyone(self) -> bool:
        return not (
            self.groups
            or self.tags
            or self.languages
            or self.age_bands
            or self.clinics
            or self.preferences
        )


def _in(column: str, values: list[str], params: list[object]) -> str:
    params.extend(values)
    return f"{column} IN ({','.join('?' * len(values))})"


def audience_query(spec: AudienceSpec) -> tuple[str, list[object]]:
    """`SELECT idx FROM contacts ...` for this audience, ordered by index (stable
    batches: a walk resumes after the last index it saw)."""
    where: list[str] = []
    params: list[object] = []
    members: list[str] = []
    if spec.groups:
        members.append(
            "c.idx IN (SELECT contact_idx FROM contact_group_members WHERE "  # noqa: S608 - placeholders only
            + _in("group_id", list(spec.groups), params)
            + ")"
        )
    if spec.tags:
        members.append(
            "c.idx IN (SELECT contact_idx FROM contact_tags WHERE "  # noqa: S608 - placeholders only
            + _in("tag", list(spec.tags), params)
            + ")"
        )
    if members:
        where.append("(" + " OR ".join(members) + ")")
    if spec.languages:
        where.append(_in("c.language", list(spec.languages), params))
    if spec.age_bands:
        where.append(_in("c.age_band", list(spec.age_bands), params))
    if spec.clinics:
        where.append(_in("c.clinic", list(spec.clinics), params))
    for pref in spec.preferences:
        where.append("EXISTS (SELECT 1 FROM json_each(c.preferences) p WHERE p.value = ?)")
        params.append(pref)
    where.append("c.idx > ?")
    sql = "SELECT c.idx FROM contacts c WHERE " + " AND ".join(where)  # noqa: S608 - placeholders only
    sql += " ORDER BY c.idx LIMIT ?"
    return sql, params


def audience_batches(
    conn: sqlite3.Connection, spec: AudienceSpec, batch: int = BATCH
) -> Iterator[list[bytes]]:
    """The audience's contact indexes, `batch` at a time, in index order."""
    sql, params = audience_query(spec)
    after = b""
    while True:
        rows = conn.execute(sql, [*params, after, batch]).fetchall()
        if not rows:
            return
        idxs = [bytes(r[0]) for r in rows]
        yield idxs
        if len(idxs) < batch:
            return
        after = idxs[-1]


def audience_size(conn: sqlite3.Connection, spec: AudienceSpec) -> int:
    return sum(len(b) for b in audience_batches(conn, spec, batch=10_000))


def count_query(spec: AudienceSpec) -> tuple[str, list[object]]:
    """`SELECT count(*)` of this audience in one statement (a live count): the batch
    query from the first index on, with no limit (SQLite's LIMIT -1)."""
    sql, params = audience_query(spec)
    return f"SELECT count(*) FROM ({sql})", [*params, b"", -1]  # noqa: S608 - placeholders only
