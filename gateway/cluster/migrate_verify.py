"""Checking a migrated store against its SQLite source (`smsgw store migrate`).

Counts of every copied table, and per state of messages, their events and carrier ids;
the message ids themselves (a digest of them all, in order); the audit trail, verified
on the target with the store's key and ending at the source's head; and a random
sample of every encrypted message column, plus one message per state, decrypted on
both sides (the target's keys read from its own keyring) and compared, with the blind
index of each sampled number recomputed from the target's key; the same for a sample
of inbound messages (sender and text, with their seq). A problem is described
by table, column, state and id only, never by a value.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import audit, keyring, migrate_campaigns, migrate_clinical
from gateway.cluster.migrate_consent import check_samples
from gateway.cluster.migrate_copy import TableCopy
from gateway.store import crypto

ENCRYPTED = keyring.ENCRYPTED
BY_STATE = ("messages", "message_events", "carrier_ids")


@dataclass(slots=True)
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, line: str) -> None:
        (self.lines if ok else self.problems).append(line)


async def verify(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    specs: tuple[TableCopy, ...],
    *,
    source_cipher: crypto.FieldCipher,
    master: bytes,
    audit_key: bytes,
    node_id: str,
    sample: int,
) -> Report:
    report = Report()
    for spec in specs:
        await _counts(src, conn, spec, report)
    await _ids(src, conn, report)
    await _audit(src, conn, audit_key, node_id, report)
    keys = await keyring.load(conn, master)
    target = crypto.FieldCipher(keys.field, keys.blind)
    await _samples(src, conn, source_cipher, target, sample, report)
    await _inbound_samples(src, conn, source_cipher, target, sample, report)
    for check in (check_samples, migrate_clinical.check_samples, migrate_campaigns.check_samples):
        lines, problems = await check(src, conn, source_cipher, target, sample)
        report.lines.extend(lines)
        report.problems.extend(problems)
    (reviews,) = src.execute("SELECT count(*) FROM consent_review").fetchone()
    got = await _one(conn, "SELECT count(*) FROM consent_reviews")
    report.check(got == reviews, f"consent_reviews: {got} rows (source {reviews})")
    return report


async def _one(conn: AsyncConnection[TupleRow], query: str) -> int:
    row = await (await conn.execute(query.encode())).fetchone()
    return int(row[0]) if row else 0


async def _counts(
    src: sqlite3.Connection, conn: AsyncConnection[TupleRow], spec: TableCopy, report: Report
) -> None:
    (want,) = src.execute(f"SELECT count(*) FROM {spec.source}").fetchone()  # noqa: S608
    where = f" WHERE {spec.counted}" if spec.counted else ""
    got = await _one(conn, f"SELECT count(*) FROM {spec.target}{where}")  # noqa: S608 - schema names
    if spec.target == "audit_log":  # the migration's own entry may already follow
        got = await _one(conn, f"SELECT count(*) FROM audit_log WHERE seq <= {int(want)}")  # noqa: S608
    report.check(got == want, f"{spec.target}: {got} rows (source {want})")
    if spec.source not in BY_STATE:
        return
    source = dict(src.execute(f"SELECT state, count(*) FROM {spec.source} GROUP BY state"))  # noqa: S608
    cur = await conn.execute(f"SELECT state, count(*) FROM {spec.target} GROUP BY state".encode())  # noqa: S608
    target = {str(s): int(n) for s, n in await cur.fetchall()}
    for state in sorted(set(source) | set(target)):
        want_n, got_n = int(source.get(state, 0)), target.get(state, 0)
        report.check(got_n == want_n, f"{spec.target} {state}: {got_n} (source {want_n})")


async def _ids(src: sqlite3.Connection, conn: AsyncConnection[TupleRow], report: Report) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    first = True
    for (message_id,) in src.execute("SELECT id FROM messages ORDER BY id COLLATE BINARY"):
        digest.update((("" if first else ",") + message_id).encode())
        first = False
    cur = await conn.execute(
        "SELECT coalesce(md5(string_agg(id, ',' ORDER BY id COLLATE \"C\")), md5('')) FROM messages"
    )
    row = await cur.fetchone()
    report.check(row is not None and row[0] == digest.hexdigest(), "messages: every id kept")


async def _audit(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    key: bytes,
    node_id: str,
    report: Report,
) -> None:
    result = await audit.verify(conn, key)
    for problem in result.problems:
        report.problems.append(f"audit chain on the target: {problem}")
    head = src.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    if head is None:
        report.lines.append("audit chain: the source has no entries")
        return
    cur = await conn.execute(
        "SELECT hash FROM audit_log WHERE node_id = %s AND seq = %s", (node_id, head[0])
    )
    row = await cur.fetchone()
    report.check(
        result.ok and row is not None and row[0] == head[1],
        f"audit chain: verified on the target through the source's head, entry {head[0]}",
    )


async def _samples(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    source: crypto.FieldCipher,
    target: crypto.FieldCipher,
    sample: int,
    report: Report,
) -> None:
    picked: dict[str, set[str]] = {}
    for column in ENCRYPTED:
        rows = src.execute(
            f"SELECT id FROM messages WHERE {column}_ct IS NOT NULL"  # noqa: S608 - fixed names
            " ORDER BY random() LIMIT ?",
            (sample,),
        ).fetchall()
        picked[column] = {r[0] for r in rows}
    for (message_id,) in src.execute(
        "SELECT min(id) FROM messages GROUP BY state UNION SELECT max(id) FROM messages"
        " GROUP BY state"
    ):
        for column in ("to", "body"):
            picked[column].add(message_id)
    columns = ", ".join(f"{c}_ct" for c in ENCRYPTED)
    for column, ids in picked.items():
        bad = 0
        for message_id in sorted(ids):
            mine = src.execute(
                f"SELECT {column}_ct FROM messages WHERE id = ?",  # noqa: S608 - fixed names
                (message_id,),
            ).fetchone()
            cur = await conn.execute(
                f"SELECT to_index, {columns} FROM messages WHERE id = %s",  # noqa: S608
                (message_id,),
            )
            theirs = await cur.fetchone()
            if not _same(source, target, column, message_id, mine, theirs):
                bad += 1
                if bad <= 3:
                    report.problems.append(f"messages.{column}_ct of {message_id} differs")
        report.check(
            bad == 0,
            f"messages.{column}_ct: {len(ids) - bad} of {len(ids)} sampled decrypt the same",
        )


async def _inbound_samples(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    source: crypto.FieldCipher,
    target: crypto.FieldCipher,
    sample: int,
    report: Report,
) -> None:
    """A random sample of inbound messages, sender and text decrypted on both sides
    and compared, the sender's blind index recomputed; the same seq (the cursor)."""
    rows = src.execute(
        "SELECT id, seq, sender_ct, body_ct, redacted FROM inbound ORDER BY random() LIMIT ?",
        (sample,),
    ).fetchall()
    bad = 0
    for inbound_id, seq, sender_ct, body_ct, redacted in rows:
        cur = await conn.execute(
            "SELECT seq, sender_ct, sender_index, body_ct FROM inbound WHERE id = %s",
            (inbound_id,),
        )
        theirs = await cur.fetchone()
        try:
            same = theirs is not None and theirs[0] == seq
            if same and theirs is not None:
                sender = target.decrypt(bytes(theirs[1]), inbound_id, "sender")
                same = source.decrypt(sender_ct, inbound_id, "sender") == sender
                same = same and target.decrypt(bytes(theirs[3]), inbound_id, "body") == (
                    source.decrypt(body_ct, inbound_id, "body")
                )
                if redacted < 2:  # an erased number has no index left
                    same = same and bytes(theirs[2]) == target.blind_index(sender)
        except crypto.DecryptError:
            same = False
        if not same:
            bad += 1
            if bad <= 3:
                report.problems.append(f"inbound {inbound_id} differs")
    report.check(bad == 0, f"inbound: {len(rows) - bad} of {len(rows)} sampled decrypt the same")


def _same(
    source: crypto.FieldCipher,
    target: crypto.FieldCipher,
    column: str,
    message_id: str,
    mine: tuple[bytes | None] | None,
    theirs: tuple[Any, ...] | None,
) -> bool:
    if mine is None or theirs is None:
        return False
    blob = theirs[1 + ENCRYPTED.index(column)]
    if mine[0] is None or blob is None:
        return mine[0] is None and blob is None
    try:
        value = target.decrypt(bytes(blob), message_id, column)
        same = source.decrypt(mine[0], message_id, column) == value
    except crypto.DecryptError:
        return False
    if column == "to":
        same = same and bytes(theirs[0]) == target.blind_index(value)
    return same
