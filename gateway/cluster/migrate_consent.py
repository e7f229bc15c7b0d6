"""The consent evidence in `smsgw store migrate`: the contacts, the ledger's whole
history and the open and resolved reviews of free-text revocations (MSG-2, MSG-4).

Contacts and the ledger are plain `TableCopy`s (`migrate_copy.tables`): ids, seqs and
ciphertexts kept (a ledger text is bound to its entry's id, a number to its contact).
A review is not: SQLite keeps its text only in the inbound message it quotes, the
cluster in the review itself (`consent_reviews.body_ct`, bound to the review's id), so
each text is decrypted from the source's inbound row and sealed again for its review.
An inbound message already erased or swept leaves its review without a text, as on the
cluster. The checks compare a sample of every encrypted consent column, decrypted on
both sides; a problem names the table, column and id, never a value.
"""

from __future__ import annotations

import sqlite3

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.migrate_copy import Progress
from gateway.cluster.migrate_samples import same_text, sample_column
from gateway.consent.ledger import contact_row_id
from gateway.store import crypto

_REVIEWS = (
    "SELECT r.id, r.inbound_id, r.contact_idx, r.program, r.reason, r.created_at,"
    " r.resolved_at, r.resolution, r.actor, i.body_ct FROM consent_review r"
    " LEFT JOIN inbound i ON i.id = r.inbound_id ORDER BY r.id"
)
_INSERT_REVIEW = (
    "INSERT INTO consent_reviews (id, inbound_id, contact_idx, program, reason, created_at,"
    " resolved_at, resolution, actor, body_ct, node_id)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)


async def copy_reviews(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    cipher: crypto.FieldCipher,
    node_id: str,
    progress: Progress,
) -> int:
    """Copy every review, its text sealed for the review row; the number copied."""
    rows = src.execute(_REVIEWS).fetchall()
    out = []
    for review_id, inbound_id, *middle, body_ct in rows:
        text = None
        if body_ct is not None:
            body = cipher.decrypt(body_ct, inbound_id, "body")
            text = cipher.encrypt(body, review_id, "body")
        out.append((review_id, inbound_id, *middle, text, node_id))
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(_INSERT_REVIEW, out)
    progress(len(out), len(out), "consent_reviews: rows copied")
    return len(out)


async def check_samples(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    source: crypto.FieldCipher,
    target: crypto.FieldCipher,
    sample: int,
) -> tuple[list[str], list[str]]:
    """(lines, problems): a sample of the ledger's texts, the contacts' numbers and the
    reviews' texts, each decrypted on both sides and compared."""
    lines: list[str] = []
    problems: list[str] = []
    ciphers = (source, target)
    for table, key, column, aad, bound in (
        ("consent_ledger", "id", "disclosure_ct", "disclosure", str),
        ("consent_ledger", "id", "note_ct", "note", str),
        ("contacts", "idx", "number_ct", "number", _contact),
        ("contacts", "idx", "patient_ref_ct", "patient_ref", _contact),
    ):
        line, wrong = await sample_column(
            src, conn, ciphers, sample, table, key, column, aad, bound
        )
        problems.extend(wrong)
        if not wrong:
            lines.append(line)
    rows = src.execute(
        "SELECT r.id, r.inbound_id, i.body_ct FROM consent_review r JOIN inbound i"
        " ON i.id = r.inbound_id WHERE i.body_ct IS NOT NULL ORDER BY random() LIMIT ?",
        (sample,),
    ).fetchall()
    bad = 0
    for review_id, inbound_id, mine in rows:
        cur = await conn.execute("SELECT body_ct FROM consent_reviews WHERE id = %s", (review_id,))
        if not same_text(ciphers, mine, await cur.fetchone(), (inbound_id, review_id), "body"):
            bad += 1
            if bad <= 3:
                problems.append(f"consent_reviews.body_ct of {review_id} differs")
    line = f"consent_reviews.body_ct: {len(rows) - bad} of {len(rows)} sampled decrypt the same"
    (lines if bad == 0 else problems).append(line)
    return lines, problems


def _contact(idx: object) -> str:
    assert isinstance(idx, bytes)
    return contact_row_id(idx)
