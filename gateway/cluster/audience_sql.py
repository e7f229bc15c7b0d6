"""An audience (`gateway/contacts/audience.py`) as PostgreSQL SQL: the same membership
rule over the shared `contacts`, `contact_group_members` and `contact_tags` (cluster
migration 18), the same walk in index order.

As SQLite's builder: each group and each tag is an arm seeking its membership table's
primary key from the cursor and stopping at the limit, the arms merged in index order,
so a batch costs as the batch; with neither, the contacts' own key is the walk. A
preference is a key of the contact's JSON array (kept as text, as SQLite keeps it;
read with `jsonb ?`).
"""

from __future__ import annotations

from gateway.contacts.audience import MAX_ARMS, AudienceSpec


def audience_query(spec: AudienceSpec, after: bytes, limit: int | None) -> tuple[str, list[object]]:
    """`SELECT idx ...` of this audience after the index `after`, in index order, at
    most `limit` (None: all of it)."""
    params: list[object] = []

    def add(value: object) -> str:
        params.append(value)
        return "%s"

    def filters() -> str:
        out = ""
        for column, values in (
            ("c.language", spec.languages),
            ("c.age_band", spec.age_bands),
            ("c.clinic", spec.clinics),
        ):
            if values:
                out += f" AND {column} = ANY({add(list(values))})"
        for pref in spec.preferences:
            out += f" AND c.preferences::jsonb ? {add(pref)}"
        return out

    def limited() -> str:
        return "" if limit is None else f" LIMIT {add(limit)}"

    sources = [("contact_group_members", "group_id", g) for g in spec.groups]
    sources += [("contact_tags", "tag", t) for t in spec.tags]
    if not sources or len(sources) > MAX_ARMS:
        where = f"c.idx > {add(after)}"
        member = " OR ".join(
            f"c.idx IN (SELECT contact_idx FROM {table} WHERE {column} = {add(key)})"  # noqa: S608 - fixed names
            for table, column, key in sources
        )
        if member:
            where += f" AND ({member})"
        where += filters()
        sql = f"SELECT c.idx FROM contacts c WHERE {where} ORDER BY c.idx"  # noqa: S608 - placeholders only
        return sql + limited(), params
    arms = []
    for table, column, key in sources:
        arm = (
            f"(SELECT m.contact_idx AS idx FROM {table} m"  # noqa: S608 - fixed names
            f" JOIN contacts c ON c.idx = m.contact_idx WHERE m.{column} = {add(key)}"
            f" AND m.contact_idx > {add(after)}{filters()} ORDER BY m.contact_idx{limited()})"
        )
        arms.append(arm)
    union = " UNION ".join(arms)
    return f"SELECT idx FROM ({union}) a ORDER BY idx{limited()}", params  # noqa: S608 - placeholders only


def count_query(spec: AudienceSpec) -> tuple[str, list[object]]:
    """`SELECT count(*)` of the whole audience in one statement."""
    sql, params = audience_query(spec, b"", None)
    return f"SELECT count(*) FROM ({sql}) n", params  # noqa: S608 - placeholders only
