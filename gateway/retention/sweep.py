"""The retention sweep's SQL: one bounded batch per call, run on the writer's connection.

A removed text or number is replaced by the encryption of "" under its own row and
column (so every reader still decrypts it, and reads an empty value), or by NULL where
the column allows it; a blind index becomes the empty blob, which no lookup matches.
`redacted` records how far a row went (1: text, 2: number too), so each batch reads
only rows still due. A message still waiting (queued, scheduled, sending) is never
touched; a finished one is due once both its creation and its last change are older
than its purpose's period.

| table | removed after `body_days` | after `number_days` |
|---|---|---|
| messages | body, client reference, callback URL; its Kannel dlr-url row | number, blind index |
| inbound | body | sender, blind index |
| clinical_notices (not pending) | template variables | - |
| hl7_messages | raw message | - |
| hl7_outbound (not pending) | raw message | - |
| inbound_undecodable | the whole row | - |
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.consent.purposes import Purpose
from gateway.retention import text_walk
from gateway.retention.settings import RetentionConfig
from gateway.store.crypto import FieldCipher

FINISHED = text_walk.FINISHED
_FINISHED_SQL = text_walk.FINISHED_SQL
DAY = 86400.0

# What each step of the sweep removes, in the order it runs (audit detail names).
STEPS = (
    "message_texts",
    "message_numbers",
    "inbound_texts",
    "inbound_numbers",
    "notice_variables",
    "hl7_messages",
    "hl7_writebacks",
    "quarantined_records",
)


@dataclass(frozen=True, slots=True)
class Group:
    """Messages (or notices) of some purposes, with their cutoffs (epoch seconds)."""

    where: str  # a condition on `purpose`
    params: tuple[Any, ...]  # the named purpose, or (the rest) every purpose named
    body_before: float
    number_before: float
    rest: bool = False  # every purpose but those in `params`


def groups(config: RetentionConfig, now: float) -> Iterator[Group]:
    """One group per purpose with its own periods, then one for every other purpose."""
    named = [p for p in config.purposes if p in {q.value for q in Purpose}]
    for name in named:
        body, number = config.periods(name)
        yield Group("purpose = ?", (name,), now - body * DAY, now - number * DAY)
    rest = "purpose IS NULL OR purpose IS NOT NULL"  # every row: no purpose has its own
    if named:
        rest = "purpose IS NULL OR purpose NOT IN (" + ", ".join("?" * len(named)) + ")"
    yield Group(
        f"({rest})",
        tuple(named),
        now - config.body_days * DAY,
        now - config.number_days * DAY,
        rest=True,
    )


def blank(cipher: FieldCipher, row_id: str, column: str) -> bytes:
    """What a removed encrypted value becomes: "" encrypted for the same place."""
    return cipher.encrypt("", row_id, column)


def _numbers_due(g: Group, limit: int | None) -> tuple[str, tuple[Any, ...]]:
    """Finished rows whose number is kept (`redacted = 1`) created and last changed
    before the number's cutoff, read through the partial index that holds only those
    (`redacted = 1`, a literal, matches its WHERE; a bound parameter would not). Texts
    are found by `text_walk`: there is no such index for them (migration 39)."""
    due = f"created_at < ? AND updated_at < ? AND {_FINISHED_SQL} AND {g.where}"
    sql = (
        "SELECT id FROM messages INDEXED BY messages_number_kept"  # noqa: S608 - our conditions
        f" WHERE redacted = 1 AND {due}"
    )
    params: tuple[Any, ...] = (g.number_before, g.number_before, *g.params)
    if limit is not None:
        sql += " ORDER BY created_at LIMIT ?"
        params += (limit,)
    return sql, params


def _texts_due(conn: sqlite3.Connection, g: Group, before: float) -> int:
    return text_walk.count_due(conn, g.where, g.params, _purposes(g), g.rest, before)


def _purposes(g: Group) -> tuple[str, ...]:
    return tuple(str(p) for p in g.params)


def message_texts(conn: sqlite3.Connection, c: FieldCipher, g: Group, limit: int) -> int:
    ids = text_walk.due_ids(conn, g.where, g.params, _purposes(g), g.rest, g.body_before, limit)
    for mid in ids:
        conn.execute(
            "UPDATE messages SET body_ct = ?, reference_ct = NULL, callback_ct = NULL,"
            " redacted = 1 WHERE id = ?",
            (blank(c, mid, "body"), mid),
        )
        conn.execute("DELETE FROM kannel_dlr WHERE message_id = ?", (mid,))
    return len(ids)


def message_numbers(conn: sqlite3.Connection, c: FieldCipher, g: Group, limit: int) -> int:
    ids = [r[0] for r in conn.execute(*_numbers_due(g, limit))]
    for mid in ids:
        conn.execute(
            "UPDATE messages SET to_ct = ?, to_index = x'', redacted = 2 WHERE id = ?",
            (blank(c, mid, "to"), mid),
        )
    return len(ids)


def _due_inbound(level: int, before: float) -> tuple[str, tuple[Any, ...]]:
    index = ("inbound_text_kept", "inbound_number_kept")[level]
    sql = f"SELECT id FROM inbound INDEXED BY {index} WHERE redacted = {level}"  # noqa: S608
    return sql + " AND received_at < ? ORDER BY received_at", (before,)


def inbound_texts(conn: sqlite3.Connection, c: FieldCipher, before: float, limit: int) -> int:
    sql, params = _due_inbound(0, before)
    ids = [r[0] for r in conn.execute(sql + " LIMIT ?", (*params, limit))]
    for iid in ids:
        conn.execute(
            "UPDATE inbound SET body_ct = ?, redacted = 1 WHERE id = ?",
            (blank(c, iid, "body"), iid),
        )
    return len(ids)


def inbound_numbers(conn: sqlite3.Connection, c: FieldCipher, before: float, limit: int) -> int:
    sql, params = _due_inbound(1, before)
    ids = [r[0] for r in conn.execute(sql + " LIMIT ?", (*params, limit))]
    for iid in ids:
        conn.execute(
            "UPDATE inbound SET sender_ct = ?, sender_index = x'', redacted = 2 WHERE id = ?",
            (blank(c, iid, "sender"), iid),
        )
    return len(ids)


_DUE_NOTICES = (
    "SELECT id FROM clinical_notices WHERE variables_ct IS NOT NULL AND state <> 'pending'"
    " AND updated_at < ? AND {where}"
)


def notice_variables(conn: sqlite3.Connection, g: Group, limit: int) -> int:
    sql = _DUE_NOTICES.format(where=g.where) + " LIMIT ?"
    ids = [r[0] for r in conn.execute(sql, (g.body_before, *g.params, limit))]
    conn.executemany(
        "UPDATE clinical_notices SET variables_ct = NULL WHERE id = ?", [(i,) for i in ids]
    )
    return len(ids)


_DUE_HL7 = "SELECT id FROM hl7_messages WHERE erased_at IS NULL AND received_at < ?"
_DUE_WRITEBACKS = (
    "SELECT id FROM hl7_outbound WHERE erased_at IS NULL AND state <> 'pending' AND updated_at < ?"
)


# HL7 texts: (the due rows, the table, its encrypted column).
_HL7_TEXTS = {
    "hl7_messages": (_DUE_HL7, "hl7_messages", "raw"),
    "hl7_writebacks": (_DUE_WRITEBACKS, "hl7_outbound", "message"),
}


def hl7_texts(
    conn: sqlite3.Connection, c: FieldCipher, kind: str, before: float, now: float, limit: int
) -> int:
    """Blank the raw texts of stored HL7 messages (`hl7_messages`) or write-backs
    (`hl7_writebacks`) due before `before`; the rows stay, marked `erased_at`."""
    due, table, column = _HL7_TEXTS[kind]
    ids = [r[0] for r in conn.execute(due + " LIMIT ?", (before, limit))]
    for hid in ids:
        conn.execute(
            f"UPDATE {table} SET {column}_ct = ?, erased_at = ? WHERE id = ?",  # noqa: S608  # our names
            (blank(c, hid, column), now, hid),
        )
    return len(ids)


_DUE_QUARANTINE = "SELECT id FROM inbound_undecodable WHERE received_at < ?"


def quarantined_records(conn: sqlite3.Connection, before: float, limit: int) -> int:
    ids = [r[0] for r in conn.execute(_DUE_QUARANTINE + " LIMIT ?", (before, limit))]
    conn.executemany("DELETE FROM inbound_undecodable WHERE id = ?", [(i,) for i in ids])
    return len(ids)


def due_counts(conn: sqlite3.Connection, config: RetentionConfig, now: float) -> dict[str, int]:
    """How many rows each step would change now (for `smsgw retention status`)."""

    def count(sql: str, params: Sequence[Any]) -> int:
        counted = f"SELECT count(*) FROM ({sql})"  # noqa: S608  # our own queries
        return int(conn.execute(counted, params).fetchone()[0])

    counts = dict.fromkeys(STEPS, 0)
    for g in groups(config, now):
        counts["message_texts"] += _texts_due(conn, g, g.body_before)
        # A number past its period goes whether its text went before or goes now.
        counts["message_numbers"] += count(*_numbers_due(g, None))
        counts["message_numbers"] += _texts_due(conn, g, g.number_before)
        sql = _DUE_NOTICES.format(where=g.where)
        counts["notice_variables"] += count(sql, (g.body_before, *g.params))
    body_before = now - config.body_days * DAY
    number_before = now - config.number_days * DAY
    counts["inbound_texts"] = count(*_due_inbound(0, body_before))
    counts["inbound_numbers"] = count(*_due_inbound(1, number_before)) + count(
        *_due_inbound(0, number_before)
    )
    counts["hl7_messages"] = count(_DUE_HL7, (body_before,))
    counts["hl7_writebacks"] = count(_DUE_WRITEBACKS, (body_before,))
    counts["quarantined_records"] = count(_DUE_QUARANTINE, (body_before,))
    return counts


def sweep_batch(
    conn: sqlite3.Connection, c: FieldCipher, config: RetentionConfig, now: float
) -> dict[str, int]:
    """One bounded pass over every step (at most `config.batch` rows each); the counts."""
    n = config.batch
    done = dict.fromkeys(STEPS, 0)
    text_walk.forget_done(conn)
    for g in groups(config, now):
        done["message_texts"] += message_texts(conn, c, g, n)
        done["message_numbers"] += message_numbers(conn, c, g, n)
        done["notice_variables"] += notice_variables(conn, g, n)
    body_before = now - config.body_days * DAY
    done["inbound_texts"] = inbound_texts(conn, c, body_before, n)
    done["inbound_numbers"] = inbound_numbers(conn, c, now - config.number_days * DAY, n)
    for kind in _HL7_TEXTS:
        done[kind] = hl7_texts(conn, c, kind, body_before, now, n)
    done["quarantined_records"] = quarantined_records(conn, body_before, n)
    return done
