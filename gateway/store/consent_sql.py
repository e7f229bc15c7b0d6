"""Consent reads and the few writes the consent use cases make besides `ledger.append`.

Reads go through the read pool (one hop each); writes are functions of the writer's
connection, run with `store.writer.run`, so a check and the change it allows commit
in one transaction (a review resolved once, an import row compared with the ledger
and appended in the same step). Numbers, patient references, notes and disclosure
texts are decrypted here and nowhere else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.consent import import_rule, ledger
from gateway.consent.ledger import ALL_PROGRAMS, Entry, LedgerRow, contact_row_id
from gateway.consent.purposes import SCOPE_ALL
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store


@dataclass(frozen=True, slots=True)
class Contact:
    number: str
    patient_ref: str | None
    language: str | None
    time_zone: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StateRow:
    """The latest decision for one program and scope (`consent_state`)."""

    program: str
    scope: str
    opted: str  # "in" | "out"
    since: float
    source: str
    written: bool  # a written opt-in (with its disclosure) exists for this scope


@dataclass(frozen=True, slots=True)
class Review:
    """A free-text revocation waiting for staff (`consent_review`)."""

    id: str
    inbound_id: str
    contact_idx: bytes
    program: str
    reason: str
    created_at: float
    resolved_at: float | None
    resolution: str | None
    actor: str | None


@dataclass(frozen=True, slots=True)
class ExportRow:
    seq: int
    id: str
    contact: str  # the blind index, hex: stays when the number is erased
    number: str | None
    at: float
    decision: str
    scope: str
    program: str
    source: str
    actor: str | None
    inbound_id: str | None
    message_id: str | None
    disclosure: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class ContactChanges:
    """What `PUT /contacts` changes: a field left None is kept; `clear` names the
    fields set back to nothing."""

    patient_ref: str | None = None
    language: str | None = None
    time_zone: str | None = None
    clear: frozenset[str] = frozenset()


def cipher_of(store: Store) -> FieldCipher:
    if store.cipher is None:
        raise RuntimeError("the store is not open")
    return store.cipher


# -- reads -----------------------------------------------------------------------------


async def contact(store: Store, idx: bytes) -> Contact | None:
    r = await store.reader.one(
        "SELECT number_ct, patient_ref_ct, language, time_zone, created_at, updated_at"
        " FROM contacts WHERE idx = ?",
        (idx,),
    )
    if r is None:
        return None
    c, row_id = cipher_of(store), contact_row_id(idx)
    return Contact(
        c.decrypt(r[0], row_id, "number"),
        None if r[1] is None else c.decrypt(r[1], row_id, "patient_ref"),
        r[2],
        r[3],
        r[4],
        r[5],
    )


async def states(store: Store, idx: bytes) -> list[StateRow]:
    rows = await store.reader.all(
        "SELECT program, scope, opted, since, source, written_seq FROM consent_state"
        " WHERE contact_idx = ? ORDER BY program, scope",
        (idx,),
    )
    return [StateRow(r[0], r[1], r[2], r[3], r[4], r[5] is not None) for r in rows]


_HISTORY = f"SELECT {ledger.LEDGER_COLUMNS} FROM consent_ledger"  # noqa: S608 - a constant


async def history(store: Store, idx: bytes) -> list[LedgerRow]:
    """Every decision about one contact, oldest first (erased texts None)."""
    rows = await store.reader.all(f"{_HISTORY} WHERE contact_idx = ? ORDER BY seq", (idx,))
    c = cipher_of(store)
    return [ledger.row_of(c, r) for r in rows]


async def export_page(store: Store, after_seq: int, limit: int) -> list[ExportRow]:
    """Ledger rows after `after_seq` in order, each with its contact's key (the blind
    index, hex) and number; a row whose contact was erased keeps its key only (MSG-11)."""
    rows = await store.reader.all(
        "SELECT l.id, l.seq, l.at, l.decision, l.scope, l.program, l.source, l.inbound_id,"
        " l.message_id, l.actor, l.disclosure_ct, l.note_ct, c.number_ct, l.contact_idx"
        " FROM consent_ledger l LEFT JOIN contacts c ON c.idx = l.contact_idx"
        " WHERE l.seq > ? ORDER BY l.seq LIMIT ?",
        (after_seq, limit),
    )
    c = cipher_of(store)
    out = []
    for r in rows:
        e = ledger.row_of(c, r)
        idx = bytes(r[13])
        number = None if r[12] is None else c.decrypt(r[12], contact_row_id(idx), "number")
        out.append(
            ExportRow(
                e.seq,
                e.id,
                idx.hex(),
                number,
                e.at,
                e.decision,
                e.scope,
                e.program,
                e.source,
                e.actor,
                e.inbound_id,
                e.message_id,
                e.disclosure,
                e.note,
            )
        )
    return out


_REVIEW = (
    "SELECT id, inbound_id, contact_idx, program, reason, created_at, resolved_at,"
    " resolution, actor FROM consent_review"
)


async def open_reviews(store: Store, limit: int) -> list[Review]:
    rows = await store.reader.all(
        f"{_REVIEW} WHERE resolved_at IS NULL ORDER BY created_at LIMIT ?",
        (limit,),
    )
    return [Review(*r) for r in rows]


async def contact_numbers(store: Store, idxs: Sequence[bytes]) -> dict[bytes, str]:
    """Numbers of these contacts, decrypted (the review queue shows them masked)."""
    if not idxs:
        return {}
    marks = ",".join("?" * len(idxs))
    rows = await store.reader.all(
        f"SELECT idx, number_ct FROM contacts WHERE idx IN ({marks})",  # noqa: S608 - placeholders only
        list(idxs),
    )
    c = cipher_of(store)
    return {bytes(r[0]): c.decrypt(r[1], contact_row_id(r[0]), "number") for r in rows}


async def inbound_texts(store: Store, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = await store.reader.all(
        f"SELECT id, body_ct FROM inbound WHERE id IN ({marks})",  # noqa: S608 - placeholders only
        list(ids),
    )
    c = cipher_of(store)
    return {r[0]: c.decrypt(r[1], r[0], "body") for r in rows}


# -- writes (on the writer's connection) -----------------------------------------------


def put_contact(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    idx: bytes,
    number: str,
    changes: ContactChanges,
    now: float,
) -> None:
    ledger.ensure_contact(conn, cipher, idx, number, now)
    columns = contact_columns(cipher, idx, changes)
    sets = ", ".join(["updated_at = ?", *(f"{c} = ?" for c in columns)])
    conn.execute(
        f"UPDATE contacts SET {sets} WHERE idx = ?",  # noqa: S608 - fixed columns
        (now, *columns.values(), idx),
    )


def contact_columns(cipher: FieldCipher, idx: bytes, changes: ContactChanges) -> dict[str, Any]:
    """The `contacts` columns `changes` sets, each with its value (None: cleared), the
    patient reference sealed to the contact's row; for either backend's UPDATE."""
    columns: dict[str, Any] = {}
    if changes.patient_ref is not None:
        row_id = contact_row_id(idx)
        columns["patient_ref_ct"] = cipher.encrypt(changes.patient_ref, row_id, "patient_ref")
    if changes.language is not None:
        columns["language"] = changes.language
    if changes.time_zone is not None:
        columns["time_zone"] = changes.time_zone
    for name in sorted(changes.clear):
        columns[
            {"patient_ref": "patient_ref_ct", "language": "language"}.get(name, "time_zone")
        ] = None
    return columns


def has_opt_out(conn: sqlite3.Connection, idx: bytes, program: str, scope: str) -> bool:
    """An opt-out this opt-in would lift: of `scope` (any scope if it is `all`), in
    `program` or every program (any program if `program` is `*`)."""
    sql = "SELECT 1 FROM consent_state WHERE contact_idx = ? AND opted = 'out'"
    args: list[Any] = [idx]
    if program != ALL_PROGRAMS:
        sql += " AND program IN (?, '*')"
        args.append(program)
    if scope != SCOPE_ALL:
        sql += " AND scope = ?"
        args.append(scope)
    return conn.execute(sql + " LIMIT 1", args).fetchone() is not None


def resolve_review(
    conn: sqlite3.Connection, review_id: str, resolution: str, actor: str, now: float
) -> Review | None:
    """Mark an open review resolved; None if there is none open (resolved once only,
    however many reviewers press at once)."""
    r = conn.execute(
        "UPDATE consent_review SET resolved_at = ?, resolution = ?, actor = ?"
        " WHERE id = ? AND resolved_at IS NULL"
        " RETURNING id, inbound_id, contact_idx, program, reason, created_at, resolved_at,"
        " resolution, actor",
        (now, resolution, actor, review_id),
    ).fetchone()
    return None if r is None else Review(*r)


def number_of(conn: sqlite3.Connection, cipher: FieldCipher, idx: bytes) -> str | None:
    r = conn.execute("SELECT number_ct FROM contacts WHERE idx = ?", (idx,)).fetchone()
    return None if r is None else cipher.decrypt(r[0], contact_row_id(idx), "number")


def import_entries(
    conn: sqlite3.Connection, cipher: FieldCipher, entries: Sequence[tuple[Entry, bool]]
) -> list[str]:
    """Append each imported entry by `gateway/consent/import_rule.py`; (entry, dated):
    an undated entry matches an identical one at any time. Returns the outcomes."""
    return [_import_one(conn, cipher, e, dated) for e, dated in entries]


def _import_one(conn: sqlite3.Connection, cipher: FieldCipher, e: Entry, dated: bool) -> str:
    same = conn.execute(*import_rule.same_decisions(e, dated)).fetchall()
    if import_rule.already_recorded(cipher, same, e):
        return import_rule.UNCHANGED
    newer = conn.execute(*import_rule.newer_standing(e)).fetchone() is not None
    before = conn.execute(*import_rule.standing_before(e)).fetchone()
    ledger.append(conn, cipher, e)
    if not newer:
        return import_rule.APPENDED
    conn.execute(*import_rule.put_back(e, before))
    return import_rule.SUPERSEDED
