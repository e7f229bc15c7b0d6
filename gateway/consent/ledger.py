"""The consent ledger: append-only decisions, and the standing derived from them.

Functions here run on the writer's connection inside the caller's transaction, so a
decision commits with whatever caused it (the inbound STOP that carried it, the staff
action that logged it) and a claim that starts after that commit sees it (MSG-5).

`consent_state` holds, per contact, program and scope, the latest decision and the
latest written opt-in; the standing of a message is the newest of the rows whose
scope covers its purpose, in its program or in every program (`*`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.consent.purposes import SCOPE_ALL, PurposePolicy, covering_scopes
from gateway.integrations.events import CONSENT_CHANGED
from gateway.models import new_message_id
from gateway.store.crypto import FieldCipher
from gateway.store.outbox_sql import INSERT_ROW as OUTBOX_ROW

Decision = Literal["opt_in", "opt_out"]
Source = Literal[
    "keyword", "phrase", "api", "panel", "import", "phone", "email", "review", "erasure"
]
ALL_PROGRAMS = "*"


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision to append. `disclosure` is the exact consent text shown for a
    written (marketing) opt-in; `note` what staff wrote. Both are stored encrypted."""

    contact_idx: bytes
    number: str  # E.164; kept encrypted in `contacts`, which the entry creates if new
    decision: Decision
    scope: str
    program: str
    source: Source
    at: float
    actor: str | None = None
    inbound_id: str | None = None
    message_id: str | None = None
    disclosure: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """What the ledger says about one contact for one purpose and program."""

    latest: Literal["in", "out"] | None  # the newest covering decision
    latest_scope: str | None
    all_out: bool  # the newest covering decision is an opt-out of every purpose
    written: bool  # a written opt-in covering the purpose exists (MSG-2)

    def refusal(self, policy: PurposePolicy) -> str | None:
        """The stable reason code a message of `policy` is refused for, or None."""
        return refuse(policy, self.latest, self.all_out, self.written)


def refuse(
    policy: PurposePolicy, latest: Literal["in", "out"] | None, all_out: bool, written: bool
) -> str | None:
    """The rule: the reason code a message of `policy` is refused for, from the standing
    (`Standing`'s fields) of its recipient, or None."""
    if policy.opt_out == "honour" and latest == "out":
        return "opted_out"
    if policy.opt_out == "stop_all_only" and all_out:
        return "opted_out"
    if policy.consent == "written" and not (written and latest == "in"):
        return "opted_out" if latest == "out" else "no_consent"
    return None


NO_RECORD = Standing(None, None, False, False)

_INSERT = (
    "INSERT INTO consent_ledger (id, contact_idx, at, decision, scope, program, source,"
    " inbound_id, message_id, actor, disclosure_ct, note_ct)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING seq"
)
_UPSERT = (
    "INSERT INTO consent_state (contact_idx, program, scope, opted, seq, since, source,"
    " written_seq) VALUES (?,?,?,?,?,?,?,?)"
    " ON CONFLICT (contact_idx, program, scope) DO UPDATE SET opted = excluded.opted,"
    " seq = excluded.seq, since = excluded.since, source = excluded.source,"
    " written_seq = coalesce(excluded.written_seq, consent_state.written_seq)"
)


def entry_row(cipher: FieldCipher, e: Entry) -> tuple[str, tuple[Any, ...]]:
    """A new ledger entry's id and its row (the texts encrypted, bound to the id), as
    both backends insert it (PostgreSQL adds the node's id)."""
    entry_id = "cns_" + new_message_id()
    disclosure = cipher.encrypt(e.disclosure, entry_id, "disclosure") if e.disclosure else None
    note = cipher.encrypt(e.note, entry_id, "note") if e.note else None
    row = (
        entry_id,
        e.contact_idx,
        e.at,
        e.decision,
        e.scope,
        e.program,
        e.source,
        e.inbound_id,
        e.message_id,
        e.actor,
        disclosure,
        note,
    )
    return entry_id, row


def standing_row(e: Entry, seq: int) -> tuple[Any, ...]:
    """The `consent_state` row entry `seq` leaves (a written opt-in keeps its seq)."""
    opted = "in" if e.decision == "opt_in" else "out"
    written = seq if e.decision == "opt_in" and e.disclosure else None
    return (e.contact_idx, e.program, e.scope, opted, seq, e.at, e.source, written)


def append(conn: sqlite3.Connection, cipher: FieldCipher, e: Entry) -> tuple[str, int]:
    """Append `e`, bring `consent_state` up to date, make sure the contact exists and
    report the change (`consent.changed`, ids only) through the outbox; (ledger id, seq)."""
    ensure_contact(conn, cipher, e.contact_idx, e.number, e.at)
    entry_id, row = entry_row(cipher, e)
    (seq,) = conn.execute(_INSERT, row).fetchone()
    conn.execute(_UPSERT, standing_row(e, seq))
    conn.execute(
        OUTBOX_ROW, (CONSENT_CHANGED, e.at, entry_id, e.program, e.scope, e.decision, None)
    )
    return entry_id, int(seq)


def contact_row_id(contact_idx: bytes) -> str:
    """The associated data that binds a contact's encrypted fields to its row."""
    return "contact:" + contact_idx.hex()


def ensure_contact(
    conn: sqlite3.Connection, cipher: FieldCipher, contact_idx: bytes, number: str, at: float
) -> None:
    """A `contacts` row for this number, created (number encrypted) if there is none."""
    if conn.execute("SELECT 1 FROM contacts WHERE idx = ?", (contact_idx,)).fetchone():
        return
    conn.execute(
        "INSERT INTO contacts (idx, number_ct, created_at, updated_at) VALUES (?,?,?,?)",
        (contact_idx, cipher.encrypt(number, contact_row_id(contact_idx), "number"), at, at),
    )


def standing(
    conn: sqlite3.Connection | sqlite3.Cursor,
    contact_idx: bytes,
    program: str,
    policy: PurposePolicy,
) -> Standing:
    return standing_among(state_rows(conn, [contact_idx]).get(contact_idx, ()), program, policy)


# contact_idx, program, scope, opted, written_seq, seq: a `consent_state` row as read.
StateRow = tuple[bytes, str, str, str, int | None, int]


def state_rows(
    conn: sqlite3.Connection | sqlite3.Cursor, contact_idxs: Sequence[bytes]
) -> dict[bytes, list[StateRow]]:
    """The `consent_state` rows of these contacts (a few each at most), by contact: one
    read for many, as an accept's transaction judges a whole group of messages."""
    found: dict[bytes, list[StateRow]] = {}
    for marks, chunk in in_chunks(contact_idxs):
        for r in conn.execute(
            "SELECT contact_idx, program, scope, opted, written_seq, seq FROM consent_state"  # noqa: S608 - placeholders only
            f" WHERE contact_idx IN ({marks})",
            chunk,
        ):
            rows = found.get(r[0])
            if rows is None:
                found[r[0]] = [r]
            else:
                rows.append(r)
    return found


_IN_CHUNK = 512


def in_chunks(keys: Sequence[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """`keys` in chunks for `IN (...)` lists, each with its placeholders, padded to a
    power of two by repeating its last key (a repeat adds nothing to an `IN` list). A
    writer group's reads then take a few statement texts, each compiled once and kept
    in the connection's statement cache, rather than one per group size, which
    crowds the cache and has each group's reads compiled anew."""
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = list(keys[start : start + _IN_CHUNK])
        size = 1 << (len(chunk) - 1).bit_length()
        chunk.extend(chunk[-1:] * (size - len(chunk)))
        yield ",".join("?" * size), chunk


def _newest(
    rows: Sequence[StateRow], program: str, scopes: Sequence[str]
) -> tuple[StateRow | None, bool]:
    """Of one contact's rows, the newest whose scope is in `scopes` in `program` (or
    in every program), and whether any of those holds a written opt-in."""
    latest: StateRow | None = None
    written = False
    for r in rows:
        if (r[1] == program or r[1] == ALL_PROGRAMS) and r[2] in scopes:
            if latest is None or r[5] > latest[5]:
                latest = r
            written = written or r[4] is not None
    return latest, written


def standing_among(rows: Sequence[StateRow], program: str, policy: PurposePolicy) -> Standing:
    """The standing for `policy`'s purpose in `program` from one contact's rows."""
    latest, written = _newest(rows, program, covering_scopes(policy.purpose))
    if latest is None:
        return NO_RECORD
    opted: Literal["in", "out"] = "in" if latest[3] == "in" else "out"
    return Standing(opted, latest[2], opted == "out" and latest[2] == SCOPE_ALL, written)


@dataclass(frozen=True, slots=True)
class Refusals:
    """`refuse`'s answers for one purpose's policy, worked out once for every standing
    (the accept path asks for every message), and the scan of a contact's rows that
    finds its standing: `_newest` written out, building no `Standing` (a property test
    holds `among` to `standing_among(...).refusal(...)`)."""

    scopes: tuple[str, ...]  # `covering_scopes` of the policy's purpose
    unknown: str | None  # no covering decision
    opted_in: tuple[str | None, str | None]  # by whether a written opt-in exists
    opted_out: tuple[str | None, str | None]  # the same, an opt-out of some purposes
    all_out: tuple[str | None, str | None]  # the same, an opt-out of every purpose

    @classmethod
    def of(cls, policy: PurposePolicy) -> Refusals:
        return cls(
            covering_scopes(policy.purpose),
            refuse(policy, None, False, False),
            (refuse(policy, "in", False, False), refuse(policy, "in", False, True)),
            (refuse(policy, "out", False, False), refuse(policy, "out", False, True)),
            (refuse(policy, "out", True, False), refuse(policy, "out", True, True)),
        )

    def among(self, rows: Sequence[StateRow], program: str) -> str | None:
        """The reason a message is refused in `program` to the contact of `rows`."""
        if not rows:
            return self.unknown
        if len(rows) == 1:  # most contacts: one decision, no newest to look for
            r = rows[0]
            if (r[1] == program or r[1] == ALL_PROGRAMS) and r[2] in self.scopes:
                if r[3] == "in":
                    return self.opted_in[r[4] is not None]
                return (self.all_out if r[2] == SCOPE_ALL else self.opted_out)[r[4] is not None]
            return self.unknown
        latest: StateRow | None = None
        written = False
        scopes = self.scopes
        for r in rows:
            if (r[1] == program or r[1] == ALL_PROGRAMS) and r[2] in scopes:
                if latest is None or r[5] > latest[5]:
                    latest = r
                if r[4] is not None:
                    written = True
        if latest is None:
            return self.unknown
        if latest[3] == "in":
            return self.opted_in[written]
        return (self.all_out if latest[2] == SCOPE_ALL else self.opted_out)[written]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: str
    seq: int
    at: float
    decision: Decision
    scope: str
    program: str
    source: str
    inbound_id: str | None
    message_id: str | None
    actor: str | None
    disclosure: str | None
    note: str | None


LEDGER_COLUMNS = (
    "id, seq, at, decision, scope, program, source, inbound_id, message_id, actor,"
    " disclosure_ct, note_ct"
)


def row_of(cipher: FieldCipher, r: Sequence[Any]) -> LedgerRow:
    """A `LEDGER_COLUMNS` row, its texts decrypted (an erased one is None)."""
    entry_id = r[0]
    return LedgerRow(
        entry_id,
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        None if r[10] is None else cipher.decrypt(r[10], entry_id, "disclosure"),
        None if r[11] is None else cipher.decrypt(r[11], entry_id, "note"),
    )


def history(
    conn: sqlite3.Connection | sqlite3.Cursor, cipher: FieldCipher, contact_idx: bytes
) -> list[LedgerRow]:
    """Every decision about one contact, oldest first."""
    rows = conn.execute(
        f"SELECT {LEDGER_COLUMNS} FROM consent_ledger WHERE contact_idx = ? ORDER BY seq",  # noqa: S608 - a constant
        (contact_idx,),
    ).fetchall()
    return [row_of(cipher, r) for r in rows]
