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
# More groups and tags than this are read as one membership test over the whole audience
# (SQLite allows 500 arms in a compound query; so many arms would cost as much anyway).
MAX_ARMS = 64


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


class _Params:
    """Numbered placeholders (`?3`): the walk's cursor and limit are the last two
    parameters (the caller appends them) but appear once in every arm of the query."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"?{len(self.values)}"

    def in_(self, column: str, values: list[str]) -> str:
        return f"{column} IN ({','.join(self.add(v) for v in values)})"


def audience_query(spec: AudienceSpec) -> tuple[str, list[object]]:
    """`SELECT idx ...` for this audience after a cursor, ordered by index (stable
    batches: a walk resumes after the last index it saw); the caller appends the cursor
    and the limit to the parameters.

    Each group and each tag is its own arm, a seek in its membership table's primary
    key from the cursor that stops at the limit, so a batch costs as the batch, not as
    the audience (a campaign's pass runs this in the writer's transaction: reading the
    whole group every pass cost 35 ms at 100,000 members); the arms' few rows are merged
    in index order. With neither groups nor tags, the contacts' own key is the walk."""
    p = _Params()
    filters: list[str] = []
    if spec.languages:
        filters.append(p.in_("c.language", list(spec.languages)))
    if spec.age_bands:
        filters.append(p.in_("c.age_band", list(spec.age_bands)))
    if spec.clinics:
        filters.append(p.in_("c.clinic", list(spec.clinics)))
    for pref in spec.preferences:
        has = f"EXISTS (SELECT 1 FROM json_each(c.preferences) j WHERE j.value = {p.add(pref)})"  # noqa: S608 - placeholders only
        filters.append(has)
    sources = [("contact_group_members", "group_id", g) for g in spec.groups]
    sources += [("contact_tags", "tag", t) for t in spec.tags]
    keys = [p.add(key) for _, _, key in sources]
    after, limit = f"?{len(p.values) + 1}", f"?{len(p.values) + 2}"
    where = "".join(f" AND {f}" for f in filters)
    if not sources or len(sources) > MAX_ARMS:
        member = " OR ".join(
            f"c.idx IN (SELECT contact_idx FROM {table} WHERE {column} = {key})"  # noqa: S608 - placeholders only
            for (table, column, _), key in zip(sources, keys, strict=True)
        )
        if member:
            where += f" AND ({member})"
        sql = f"SELECT c.idx FROM contacts c WHERE c.idx > {after}{where}"  # noqa: S608 - placeholders only
        return f"{sql} ORDER BY c.idx LIMIT {limit}", p.values
    arms = [
        f"SELECT * FROM (SELECT m.contact_idx AS idx FROM {table} m"  # noqa: S608 - placeholders only
        f" JOIN contacts c ON c.idx = m.contact_idx WHERE m.{column} = {key}"
        f" AND m.contact_idx > {after}{where}"
        f" ORDER BY m.contact_idx LIMIT {limit})"
        for (table, column, _), key in zip(sources, keys, strict=True)
    ]
    union = " UNION ".join(arms)
    return f"SELECT idx FROM ({union}) ORDER BY idx LIMIT {limit}", p.values  # noqa: S608 - placeholders only


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
