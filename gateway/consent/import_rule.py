"""When an imported decision is appended, and what it does to the standing.

One rule for both ledgers (SQLite's `consent_sql.import_entries`, PostgreSQL's
`cluster/consent_store.import_entries`); each runs these queries in its own
connection and hands the rows back (the SQL's placeholders are `?`, SQLite's;
PostgreSQL's `%s` replace them):

- an entry identical to one already in the ledger (same contact, decision, scope,
  program, source and disclosure text; the same time too when the list dates it) is
  UNCHANGED and not appended again, so a list can be imported twice;
- an entry older than a decision already standing for its program is appended as
  evidence, but the standing it replaced is put back (SUPERSEDED): an old list
  imported late must not undo a newer STOP;
- anything else is APPENDED and stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.consent.ledger import ALL_PROGRAMS, Entry
from gateway.store.crypto import FieldCipher

APPENDED = "appended"
UNCHANGED = "unchanged"  # an identical decision is already in the ledger
SUPERSEDED = "superseded"  # appended as evidence; a newer decision still stands
AT_TOLERANCE = 0.0005  # a dated row as exported: RFC 3339 to the microsecond

Query = tuple[str, list[Any]]


def same_decisions(e: Entry, dated: bool) -> Query:
    """The ledger's (id, disclosure_ct) rows that may be `e` recorded before; an
    undated entry matches one at any time."""
    sql = (
        "SELECT id, disclosure_ct FROM consent_ledger WHERE contact_idx = ?"
        " AND decision = ? AND scope = ? AND program = ? AND source = ?"
    )
    args: list[Any] = [e.contact_idx, e.decision, e.scope, e.program, e.source]
    if dated:
        sql += " AND at BETWEEN ? AND ?"
        args += [e.at - AT_TOLERANCE, e.at + AT_TOLERANCE]
    return sql, args


def already_recorded(cipher: FieldCipher, rows: Iterable[Sequence[Any]], e: Entry) -> bool:
    """Whether one of `same_decisions`' rows carries `e`'s disclosure text too."""
    for entry_id, ct in rows:
        text = None if ct is None else cipher.decrypt(bytes(ct), entry_id, "disclosure")
        if text == e.disclosure:
            return True
    return False


def newer_standing(e: Entry) -> Query:
    """A row when a decision newer than `e` stands for its program (or all)."""
    sql = "SELECT 1 FROM consent_state WHERE contact_idx = ? AND since > ?"
    args: list[Any] = [e.contact_idx, e.at]
    if e.program != ALL_PROGRAMS:
        sql += " AND program IN (?, '*')"
        args.append(e.program)
    return sql + " LIMIT 1", args


def standing_before(e: Entry) -> Query:
    """The standing `e` would replace: (opted, seq, since, source, written_seq)."""
    return (
        "SELECT opted, seq, since, source, written_seq FROM consent_state"
        " WHERE contact_idx = ? AND program = ? AND scope = ?",
        [e.contact_idx, e.program, e.scope],
    )


def put_back(e: Entry, before: Sequence[Any] | None) -> Query:
    """After appending a SUPERSEDED `e`: its standing as `standing_before` found it."""
    key = [e.contact_idx, e.program, e.scope]
    if before is None:
        return (
            "DELETE FROM consent_state WHERE contact_idx = ? AND program = ? AND scope = ?",
            key,
        )
    return (
        "UPDATE consent_state SET opted = ?, seq = ?, since = ?, source = ?,"
        " written_seq = coalesce(?, written_seq)"
        " WHERE contact_idx = ? AND program = ? AND scope = ?",
        [*before, *key],
    )
