"""Copying the SQLite store's tables into the cluster schema (`smsgw store migrate`).

Table by table in primary-key order, a batch per transaction through `COPY`, every
column as it is: ids and ciphertexts unchanged (a ciphertext is bound to its row id and
column), times as the same epoch seconds, SQLite's 0/1 flags as booleans where the
target column is one. A source column the target lacks stops the copy, naming it: a
later SQLite migration must get its PostgreSQL twin before a store can move.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

Progress = Callable[[int, int, str], None]
Row = dict[str, Any]
# A migrated message's route group when SQLite has none (SQLite queues by route hint).
DEFAULT_ROUTE_GROUP = "default"


class MigrationRefused(Exception):
    """The copy cannot go on (the message says why; it never holds a value)."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    source: str
    target: str
    key: tuple[str, ...]
    # Target columns SQLite does not have, computed from the source row.
    extra: dict[str, Callable[[Row], object]] = field(default_factory=dict)
    # Target columns set to a constant (the audit trail's node).
    fixed: dict[str, object] = field(default_factory=dict)
    # Source columns the cluster keeps no twin of (SQLite's campaign cursor, a
    # message's event seqs: PostgreSQL finds the same by its own indexes).
    left_out: tuple[str, ...] = ()
    # The target's rows the source's count is compared with, when the migration adds
    # rows of its own there (a running campaign's recipients still to send to).
    counted: str = ""


def _route_group(row: Row) -> object:
    return row.get("route_hint") or DEFAULT_ROUTE_GROUP


def tables(node_id: str) -> tuple[TableCopy, ...]:
    """What is copied, in this order. The SQLite trail becomes `node_id`'s chain."""
    return (
        TableCopy("keyring", "keyring", ("purpose", "generation")),
        TableCopy(
            "messages",
            "messages",
            ("id",),
            extra={"route_group": _route_group},
            left_out=("event_seqs",),  # SQLite's events by message (migration 38)
        ),
        TableCopy(
            "message_events",
            "message_events",
            ("seq",),
            left_out=("on_row",),  # SQLite's mark of a seq its UPDATE listed (migration 44)
        ),
        TableCopy("carrier_ids", "carrier_ids", ("route", "carrier_id")),
        # A Kannel sendsms's dlr-url wish, sealed bound to its message id (cluster 13).
        TableCopy("kannel_dlr", "kannel_dlr", ("message_id",)),
        TableCopy("audit_log", "audit_log", ("seq",), fixed={"node_id": node_id}),
        # The consent evidence: the contacts, the ledger's history (its seqs kept, so
        # the standing's seqs still name their entries) and the standing, merged into
        # the shared one at the first start (`consent_store.merge_migrated`); the
        # reviews follow (`migrate_consent.copy_reviews`).
        TableCopy("contacts", "contacts", ("idx",)),
        TableCopy("consent_ledger", "consent_ledger", ("seq",), fixed={"node_id": node_id}),
        TableCopy("consent_state", "migrated_consent_state", ("contact_idx", "program", "scope")),
        # Contacts as an audience (cluster 17): groups, members, tags, saved audiences.
        # Campaigns and surveys follow the clinical tables (`migrate_campaigns.py`).
        TableCopy("contact_groups", "contact_groups", ("id",)),
        TableCopy("contact_group_members", "contact_group_members", ("group_id", "contact_idx")),
        TableCopy("contact_tags", "contact_tags", ("tag", "contact_idx")),
        TableCopy("contact_audiences", "contact_audiences", ("id",)),
        # Inbound: the messages (their seqs, the API's cursors, kept), the parts still
        # waiting for their set and the digests of sets just joined, all as received
        # by `node_id`.
        TableCopy("inbound", "inbound", ("id",), fixed={"node_id": node_id}),
        TableCopy("inbound_parts", "inbound_parts", ("id",), fixed={"node_id": node_id}),
        TableCopy("inbound_sets_done", "inbound_sets_done", ("set_key", "seq")),
        # Marks of deliveries in doubt (cluster 29), ownerless: the SQLite gateway that
        # left them is stopped, so the carrier's redelivery to any node takes them.
        TableCopy(
            "inbound_doubt",
            "inbound_doubt",
            ("digest", "inbound_id"),
            fixed={"owner": None},
            left_out=("owner",),
        ),
        # Tracked links: the named links, the tokens of messages sent (their short URLs
        # keep redirecting), the clicks (their seqs kept; no node answered them).
        TableCopy("links", "links", ("id",)),
        TableCopy("link_tokens", "link_tokens", ("token_hash",)),
        TableCopy("link_clicks", "link_clicks", ("seq",)),
    )


def source_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in src.execute(f"PRAGMA table_info({table})")]


async def target_columns(conn: AsyncConnection[TupleRow], table: str) -> dict[str, str]:
    cur = await conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return {str(n): str(t) for n, t in await cur.fetchall()}


async def copy_table(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    spec: TableCopy,
    *,
    batch: int,
    progress: Progress,
) -> int:
    """Copy one table; the number of rows copied."""
    columns = [c for c in source_columns(src, spec.source) if c not in spec.left_out]
    have = await target_columns(conn, spec.target)
    missing = [c for c in columns if c not in have]
    if missing:
        raise MigrationRefused(
            f"the PostgreSQL table {spec.target} has no column {', '.join(missing)} that"
            f" SQLite's {spec.source} has; this smsgw's cluster schema cannot hold this store"
        )
    flags = {c for c in columns if have[c] == "boolean"}
    names = [*columns, *spec.extra, *spec.fixed]
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(spec.target), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    (total,) = src.execute(f"SELECT count(*) FROM {spec.source}").fetchone()  # noqa: S608
    select = f"SELECT {', '.join(columns)} FROM {spec.source}"  # noqa: S608 - schema names
    order = f" ORDER BY {', '.join(spec.key)} LIMIT ?"
    after = f" WHERE ({', '.join(spec.key)}) > ({', '.join('?' * len(spec.key))})"
    done, last = 0, None
    while True:
        if last is None:
            rows = src.execute(select + order, (batch,)).fetchall()
        else:
            rows = src.execute(select + after + order, (*last, batch)).fetchall()
        if not rows:
            return done
        async with conn.transaction():
            # A store's history is no news: its events do not go to the outbox.
            await conn.execute("SELECT set_config('smsgw.outbox', 'off', true)")
            async with conn.cursor().copy(copy_sql) as copy:
                for values in rows:
                    await copy.write_row(_target_row(columns, values, flags, spec))
        done += len(rows)
        last = tuple(rows[-1][columns.index(k)] for k in spec.key)
        progress(done, int(total), f"{spec.target}: rows copied")


def _target_row(
    columns: Sequence[str], values: Sequence[object], flags: set[str], spec: TableCopy
) -> list[object]:
    row = dict(zip(columns, values, strict=True))
    for name in flags:
        if row[name] is not None:
            row[name] = bool(row[name])
    out = [row[c] for c in columns]
    out.extend(compute(row) for compute in spec.extra.values())
    out.extend(spec.fixed.values())
    return out


async def set_sequences(conn: AsyncConnection[TupleRow]) -> None:
    """`message_events.seq`, `link_clicks.seq`, `consent_ledger.seq`,
    `appointment_events.seq` and `survey_answers.seq` go on after the highest copied
    (their ids were kept)."""
    for table in (
        "message_events",
        "link_clicks",
        "consent_ledger",
        "appointment_events",
        "survey_answers",
    ):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'),"  # noqa: S608 - fixed names
            f" coalesce(max(seq), 1), max(seq) IS NOT NULL) FROM {table}".encode()
        )
    await conn.commit()
