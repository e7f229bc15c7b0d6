"""Consent lists as CSV: reading one in a stream, row by row, and writing the ledger.

Theory of operation. The input arrives as byte chunks and is never held whole:
`gateway.usecases.csv_reader` decodes it (the encoding found from the bytes), cuts it
into lines and joins them into records while a quoted field is open, and each record
is parsed alone. The first record is the header; columns are found by
name (with common aliases) or by an explicit mapping. A row that cannot be read
becomes an error naming its line, a code and the column, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime

from gateway.consent.ledger import Decision, Source
from gateway.consent.purposes import (
    SCOPE_ALL,
    Kind,
    Purpose,
    appointment_scope_valid,
    kind_scope,
    purpose_scope,
    scope_valid,
)
from gateway.csv_safe import csv_line as csv_line
from gateway.csv_safe import unescaped
from gateway.store.consent_sql import ExportRow
from gateway.usecases import csv_reader
from gateway.usecases.csv_reader import HeaderError as HeaderError
from gateway.usecases.csv_reader import LineError as LineError
from gateway.usecases.csv_reader import file_chunks as file_chunks
from gateway.usecases.csv_reader import records as records

FIELDS = (
    "number",
    "decision",
    "scope",
    "purpose",
    "program",
    "date",
    "source",
    "disclosure",
    "note",
)
ALIASES: dict[str, str] = {
    **{name: name for name in FIELDS},
    "phone": "number",
    "phone_number": "number",
    "mobile": "number",
    "msisdn": "number",
    "cell": "number",
    "to": "number",
    "status": "decision",
    "action": "decision",
    "opted": "decision",
    "category": "purpose",
    "at": "date",
    "time": "date",
    "timestamp": "date",
    "date_time": "date",
    "opted_at": "date",
    "channel": "source",
    "method": "source",
    "disclosure_text": "disclosure",
    "consent_text": "disclosure",
    "notes": "note",
    "comment": "note",
}
OPT_OUT_WORDS = frozenset(
    [
        "opt_out",
        "optout",
        "opt-out",
        "out",
        "stop",
        "stopped",
        "unsubscribe",
        "unsubscribed",
        "revoke",
        "revoked",
        "no",
    ]
)
OPT_IN_WORDS = frozenset(
    [
        "opt_in",
        "optin",
        "opt-in",
        "in",
        "start",
        "subscribe",
        "subscribed",
        "yes",
        "consent",
        "consented",
        "granted",
    ]
)
SOURCES: frozenset[str] = frozenset(
    ("keyword", "phrase", "api", "panel", "import", "phone", "email", "review")
)
MAX_TEXT = 2000
MARKETING_SCOPES = frozenset({kind_scope(Kind.MARKETING), purpose_scope(Purpose.MARKETING)})


@dataclass(frozen=True, slots=True)
class Row:
    """One decision read from the file, still with its number as written."""

    line: int
    number: str
    decision: Decision
    scope: str
    program: str | None
    at: float | None
    source: Source
    disclosure: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class Options:
    """`columns`: field → header name, over the aliases. `decision`: for a list with
    no decision column (a plain opt-out list). `program`: for rows naming none."""

    columns: Mapping[str, str] = dc_field(default_factory=dict)
    decision: Decision | None = None
    program: str | None = None


def parse_mapping(text: str) -> dict[str, str]:
    """`number=Phone,decision=Status` → {"number": "Phone", ...} (`csv_reader.parse_mapping`)."""
    return csv_reader.parse_mapping(text, FIELDS)


def columns(header: list[str], options: Options) -> tuple[dict[str, int], list[str]]:
    """Field → column index, and the headers no field takes (reported, not guessed)."""
    found, ignored = csv_reader.map_columns(header, options.columns, ALIASES)
    if "decision" not in found and options.decision is None:
        raise HeaderError(
            "missing_column", "decision: no decision column; say which decision the list holds"
        )
    return found, ignored


def _date(text: str) -> float | None:
    text = text.strip()
    if re.fullmatch(r"[0-9]{1,12}(\.[0-9]+)?", text):
        return float(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # a date, or a time written without a zone: UTC
    return when.timestamp()


def scope_of(scope: str | None, purpose: str | None) -> str | None:
    """The ledger scope of a row's `scope` or `purpose` cell (a purpose, a kind, `all`,
    or an appointment's scope as the export writes it); None if it names neither."""
    if scope:
        return scope if scope_valid(scope) or appointment_scope_valid(scope) else None
    if not purpose:
        return SCOPE_ALL
    name = purpose.strip().lower()
    if name == SCOPE_ALL:
        return SCOPE_ALL
    for candidate in (f"purpose:{name}", f"kind:{name}"):
        if scope_valid(candidate):
            return candidate
    return None


def row(
    line: int, fields: list[str], cols: Mapping[str, int], options: Options, now: float
) -> Row | LineError:
    """One record as a decision, or the first thing wrong with it."""

    def cell(name: str) -> str | None:
        i = cols.get(name)
        if i is None or i >= len(fields):
            return None
        value = unescaped(fields[i].strip())  # as our export escaped it
        return value or None

    number = cell("number")
    if number is None:
        return LineError(line, "missing_value", "number")
    decision: Decision | None = options.decision
    if (word := cell("decision")) is not None:
        word = word.lower()
        decision = (
            "opt_out" if word in OPT_OUT_WORDS else "opt_in" if word in OPT_IN_WORDS else None
        )
        if decision is None:
            return LineError(line, "invalid_decision", "decision")
    if decision is None:
        return LineError(line, "missing_value", "decision")
    scope = scope_of(cell("scope"), cell("purpose"))
    if scope is None:
        return LineError(line, "invalid_scope", "scope" if cell("scope") else "purpose")
    at = None
    if (text := cell("date")) is not None:
        at = _date(text)
        if at is None:
            return LineError(line, "invalid_date", "date")
        if at > now:
            return LineError(line, "future_date", "date")
    source = (cell("source") or "import").lower()
    if source not in SOURCES:
        return LineError(line, "invalid_source", "source")
    disclosure, note = cell("disclosure"), cell("note")
    for name, value in (("disclosure", disclosure), ("note", note)):
        if value is not None and len(value) > MAX_TEXT:
            return LineError(line, "too_long", name)
    if disclosure is not None and decision == "opt_out":
        return LineError(line, "disclosure_not_allowed", "disclosure")
    if decision == "opt_in" and scope in MARKETING_SCOPES and disclosure is None:
        return LineError(line, "disclosure_required", "disclosure")  # MSG-2
    return Row(
        line,
        number,
        decision,
        scope,
        cell("program") or options.program,
        at,
        source,  # type: ignore[arg-type]  # checked against SOURCES
        disclosure,
        note,
    )


EXPORT_HEADER = (
    "seq",
    "id",
    "contact",
    "number",
    "at",
    "decision",
    "scope",
    "program",
    "source",
    "actor",
    "inbound_id",
    "message_id",
    "disclosure",
    "note",
)


def export_line(r: ExportRow) -> str:
    """One ledger row as a CSV line under EXPORT_HEADER (re-importable as it is)."""
    return csv_line(
        (
            r.seq,
            r.id,
            r.contact,
            r.number,
            iso(r.at),
            r.decision,
            r.scope,
            r.program,
            r.source,
            r.actor,
            r.inbound_id,
            r.message_id,
            r.disclosure,
            r.note,
        )
    )


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
