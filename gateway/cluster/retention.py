"""The retention sweep in the cluster's PostgreSQL: the `Sweep` of
`gateway/retention/job.py` for what the nodes share.

SQLite's rules (`gateway/retention/sweep.py`) on the shared twins of its tables:
finished messages' texts (body, client reference, callback, Kannel dlr-url row) after
their purpose's `body_days`, their numbers and blind index after `number_days`; the shared inbound's
texts and senders after the section's periods; and the review texts a reviewer on
another node reads (SQLite has no copy: a review there shows its inbound's text,
which the sweep blanks), after `body_days`; the template variables of the shared
clinical notices no longer pending, after their purpose's `body_days` (removed, as
SQLite's); the raw texts of the shared HL7 message log, and of the write-backs sent
or parked, after `body_days` (the rows stay, marked `erased_at`, as SQLite's). A
removed value is "" sealed for its row and column as SQLite's, `redacted` the same
levels (1: text, 2: number too).

Each batch is one transaction that locks the rows it takes `FOR UPDATE SKIP LOCKED`:
two nodes sweeping at once take different rows, and a row another node has just
changed is re-checked against `redacted` under its lock, so each row is blanked once
and each node counts only its own. Its counts are named `shared_<step>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.cluster.inbound import Conn
from gateway.cluster.lease import Pool
from gateway.retention import sweep
from gateway.retention.settings import RetentionConfig
from gateway.retention.sweep import DAY, FINISHED, Group, blank
from gateway.store.crypto import FieldCipher

STEPS = (
    "shared_message_texts",
    "shared_message_numbers",
    "shared_inbound_texts",
    "shared_inbound_numbers",
    "shared_review_texts",
    "shared_notice_variables",
    "shared_hl7_messages",
    "shared_hl7_writebacks",  # cluster migration 23
)
_FINISHED_SQL = "state IN (" + ", ".join(f"'{s}'" for s in FINISHED) + ")"


def _pg(g: Group) -> tuple[str, tuple[Any, ...]]:
    """A SQLite group's purpose condition with psycopg's placeholders."""
    return g.where.replace("?", "%s"), g.params


def due_messages(level: int, g: Group, before: float) -> tuple[str, tuple[Any, ...]]:
    """Finished rows at `level` (0: text kept; 1: number kept) created and last changed
    before `before`; `redacted = <literal>` so the planner reads that level's partial
    index (cluster migration 13)."""
    where, params = _pg(g)
    sql = (
        f"SELECT id FROM messages WHERE redacted = {level} AND created_at < %s"  # noqa: S608
        f" AND updated_at < %s AND {_FINISHED_SQL} AND {where}"
    )
    return sql, (before, before, *params)


def due_inbound(level: int, before: float) -> tuple[str, tuple[Any, ...]]:
    sql = f"SELECT id FROM inbound WHERE redacted = {level} AND received_at < %s"  # noqa: S608
    return sql, (before,)


def due_notices(g: Group) -> tuple[str, tuple[Any, ...]]:
    """Notices no longer pending whose template variables outlived their purpose's
    `body_days` (SQLite's `notice_variables`)."""
    where, params = _pg(g)
    sql = (
        "SELECT id FROM clinical_notices WHERE variables_ct IS NOT NULL"  # noqa: S608
        f" AND state <> 'pending' AND updated_at < %s AND {where}"
    )
    return sql, (g.body_before, *params)


_DUE_REVIEWS = "SELECT id FROM consent_reviews WHERE body_ct IS NOT NULL AND created_at < %s"
_DUE_HL7 = "SELECT id FROM hl7_messages WHERE erased_at IS NULL AND received_at < %s"
_DUE_WRITEBACKS = (  # a pending write-back is still to be sent: its text stays
    "SELECT id FROM hl7_outbound WHERE erased_at IS NULL AND state <> 'pending' AND updated_at < %s"
)


async def _take(conn: Conn, due: tuple[str, tuple[Any, ...]], order: str, limit: int) -> list[str]:
    """Up to `limit` due rows, oldest first, locked; rows another transaction holds are
    skipped (another node's sweep takes them, or a later batch or run)."""
    sql, params = due
    cur = await conn.execute(
        f"{sql} ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED".encode(), (*params, limit)
    )
    return [str(r[0]) for r in await cur.fetchall()]


def _blanks(c: FieldCipher, ids: Sequence[str], column: str) -> list[bytes]:
    return [blank(c, i, column) for i in ids]


async def _set(conn: Conn, sql: str, ids: list[str], blanks: list[bytes]) -> int:
    """Run one step's UPDATE (`v`: each taken row's id and its blank) on `ids`."""
    if ids:
        await conn.execute(sql.encode(), (ids, blanks))
    return len(ids)


_BLANK_MESSAGE_TEXTS = (
    "UPDATE messages m SET body_ct = v.ct, reference_ct = NULL, callback_ct = NULL,"
    " redacted = 1 FROM unnest(%s::text[], %s::bytea[]) v(id, ct) WHERE m.id = v.id"
)
_BLANK_MESSAGE_NUMBERS = (
    "UPDATE messages m SET to_ct = v.ct, to_index = '\\x'::bytea, redacted = 2"
    " FROM unnest(%s::text[], %s::bytea[]) v(id, ct) WHERE m.id = v.id"
)
_BLANK_INBOUND_TEXTS = (
    "UPDATE inbound i SET body_ct = v.ct, redacted = 1"
    " FROM unnest(%s::text[], %s::bytea[]) v(id, ct) WHERE i.id = v.id"
)
_BLANK_HL7_TEXTS = (
    "UPDATE hl7_messages h SET raw_ct = v.ct, erased_at = %s"
    " FROM unnest(%s::text[], %s::bytea[]) v(id, ct) WHERE h.id = v.id"
)
_BLANK_WRITEBACK_TEXTS = (
    "UPDATE hl7_outbound h SET message_ct = v.ct, erased_at = %s"
    " FROM unnest(%s::text[], %s::bytea[]) v(id, ct) WHERE h.id = v.id"
)
_BLANK_INBOUND_NUMBERS = (
    "UPDATE inbound i SET sender_ct = v.ct, sender_index = '\\x'::bytea, redacted = 2"
    " FROM unnest(%s::text[], %s::bytea[]) v(id, ct) WHERE i.id = v.id"
)


async def _message_texts(conn: Conn, c: FieldCipher, g: Group, limit: int) -> int:
    ids = await _take(conn, due_messages(0, g, g.body_before), "created_at", limit)
    if ids:  # its Kannel dlr-url and receiver go with the text, as on SQLite
        await conn.execute("DELETE FROM kannel_dlr WHERE message_id = ANY(%s)", (ids,))
    return await _set(conn, _BLANK_MESSAGE_TEXTS, ids, _blanks(c, ids, "body"))


async def _message_numbers(conn: Conn, c: FieldCipher, g: Group, limit: int) -> int:
    ids = await _take(conn, due_messages(1, g, g.number_before), "created_at", limit)
    return await _set(conn, _BLANK_MESSAGE_NUMBERS, ids, _blanks(c, ids, "to"))


async def _inbound_texts(conn: Conn, c: FieldCipher, before: float, limit: int) -> int:
    ids = await _take(conn, due_inbound(0, before), "received_at", limit)
    return await _set(conn, _BLANK_INBOUND_TEXTS, ids, _blanks(c, ids, "body"))


async def _inbound_numbers(conn: Conn, c: FieldCipher, before: float, limit: int) -> int:
    ids = await _take(conn, due_inbound(1, before), "received_at", limit)
    return await _set(conn, _BLANK_INBOUND_NUMBERS, ids, _blanks(c, ids, "sender"))


async def _notice_variables(conn: Conn, g: Group, limit: int) -> int:
    ids = await _take(conn, due_notices(g), "updated_at", limit)
    if ids:
        await conn.execute(
            "UPDATE clinical_notices SET variables_ct = NULL WHERE id = ANY(%s)", (ids,)
        )
    return len(ids)


async def _review_texts(conn: Conn, before: float, limit: int) -> int:
    ids = await _take(conn, (_DUE_REVIEWS, (before,)), "created_at", limit)
    if ids:
        await conn.execute("UPDATE consent_reviews SET body_ct = NULL WHERE id = ANY(%s)", (ids,))
    return len(ids)


async def _hl7_texts(conn: Conn, c: FieldCipher, before: float, now: float, limit: int) -> int:
    ids = await _take(conn, (_DUE_HL7, (before,)), "received_at", limit)
    if ids:
        await conn.execute(_BLANK_HL7_TEXTS.encode(), (now, ids, _blanks(c, ids, "raw")))
    return len(ids)


async def _writeback_texts(
    conn: Conn, c: FieldCipher, before: float, now: float, limit: int
) -> int:
    ids = await _take(conn, (_DUE_WRITEBACKS, (before,)), "updated_at", limit)
    if ids:
        blanks = _blanks(c, ids, "message")
        await conn.execute(_BLANK_WRITEBACK_TEXTS.encode(), (now, ids, blanks))
    return len(ids)


class ClusterSweep:
    """`Sweep` on the shared PostgreSQL tables, under the shared keyring."""

    def __init__(self, pool: Pool, cipher: FieldCipher, config: RetentionConfig) -> None:
        self._pool = pool
        self._cipher = cipher
        self._config = config

    async def due(self, now: float) -> dict[str, int]:
        config = self._config
        counts = dict.fromkeys(STEPS, 0)
        body_before = now - config.body_days * DAY
        number_before = now - config.number_days * DAY
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot

            async def count(due: tuple[str, tuple[Any, ...]]) -> int:
                sql, params = due
                counted = f"SELECT count(*) FROM ({sql}) d"  # noqa: S608  # our own queries
                cur = await conn.execute(counted.encode(), params)
                row = await cur.fetchone()
                return int(row[0]) if row else 0

            for g in sweep.groups(config, now):
                counts["shared_message_texts"] += await count(due_messages(0, g, g.body_before))
                # A number past its period goes whether its text went before or goes now.
                for level in (0, 1):
                    due = due_messages(level, g, g.number_before)
                    counts["shared_message_numbers"] += await count(due)
                counts["shared_notice_variables"] += await count(due_notices(g))
            counts["shared_inbound_texts"] = await count(due_inbound(0, body_before))
            for level in (0, 1):
                counts["shared_inbound_numbers"] += await count(due_inbound(level, number_before))
            counts["shared_review_texts"] = await count((_DUE_REVIEWS, (body_before,)))
            counts["shared_hl7_messages"] = await count((_DUE_HL7, (body_before,)))
            counts["shared_hl7_writebacks"] = await count((_DUE_WRITEBACKS, (body_before,)))
        return counts

    async def sweep_batch(self, now: float) -> dict[str, int]:
        config, c = self._config, self._cipher
        n = config.batch
        done = dict.fromkeys(STEPS, 0)
        body_before = now - config.body_days * DAY
        async with self._pool.connection() as conn, conn.transaction():
            for g in sweep.groups(config, now):
                done["shared_message_texts"] += await _message_texts(conn, c, g, n)
                done["shared_message_numbers"] += await _message_numbers(conn, c, g, n)
                done["shared_notice_variables"] += await _notice_variables(conn, g, n)
            done["shared_inbound_texts"] = await _inbound_texts(conn, c, body_before, n)
            number_before = now - config.number_days * DAY
            done["shared_inbound_numbers"] = await _inbound_numbers(conn, c, number_before, n)
            done["shared_review_texts"] = await _review_texts(conn, body_before, n)
            done["shared_hl7_messages"] = await _hl7_texts(conn, c, body_before, now, n)
            done["shared_hl7_writebacks"] = await _writeback_texts(conn, c, body_before, now, n)
        return done
