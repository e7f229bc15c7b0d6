"""Consent: look a number up, record decisions, contacts, the review queue, import, export.

Every front end (the API's `/optouts`, `/consents`, `/contacts`, the panel's consent
pages, `smsgw consent`) calls these with a `Caller`. A number is found through the
blind index and never appears in an error, a log line or the audit trail (which names
a contact by its blind index, a keyed hash). Decisions are appended to the ledger
(`gateway.consent.ledger`) in a writer job, together with whatever check allows them,
so two staff members acting at once cannot both lift one opt-out or resolve one review.
"""

from __future__ import annotations

import asyncio
import functools
import zoneinfo
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from drivers.clock import Clock
from gateway.config import Config
from gateway.consent import import_rule
from gateway.consent.inbound_config import replies_for
from gateway.consent.ledger import ALL_PROGRAMS, Decision, Entry, LedgerRow, Source
from gateway.consent.ledger_store import ConsentLedger, SqliteLedger
from gateway.consent.purposes import SCOPE_ALL, scope_valid
from gateway.consent.review_store import CORRECTED
from gateway.consent.settings import DEFAULT_PROGRAM
from gateway.consent.withdraw import Withdrawal
from gateway.errors import ApiError
from gateway.intake import normalise_number
from gateway.store.consent_sql import Contact as Contact
from gateway.store.consent_sql import ContactChanges as ContactChanges
from gateway.store.consent_sql import ExportRow, StateRow
from gateway.store.store import Store
from gateway.usecases import consent_csv
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.messages import forbidden

# A contact's language: a 2- or 3-letter code with replies configured for it
# (`[consent.replies.<lang>]`; English and Spanish are built in), checked per config.
Language = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$")]
IMPORT_CHUNK = 500  # rows per writer transaction: sends wait for one chunk at most
YIELD_EVERY = 50  # rows parsed between two turns of the event loop
EXPORT_PAGE = 500
MAX_NOTE = 2000
MAX_LINE_ERRORS = 100  # reported one by one; the rest only counted


@dataclass(frozen=True, slots=True)
class ConsentView:
    """One number's contact details, standing per program and scope, and history."""

    contact: Contact | None
    standing: tuple[StateRow, ...]
    history: tuple[LedgerRow, ...]


@dataclass(frozen=True, slots=True)
class Recorded:
    id: str
    seq: int
    decision: Decision
    scope: str
    program: str
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """A decision a person or system reports. `lifts`: an opt-in that re-subscribes
    (`DELETE /optouts`), refused when there is no opt-out to lift."""

    number: str
    decision: Decision
    source: Source
    scope: str = SCOPE_ALL
    program: str = ALL_PROGRAMS
    note: str | None = None
    disclosure: str | None = None
    lifts: bool = False


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """An open review: the number masked for the caller, the text if it may read PHI."""

    id: str
    inbound_id: str
    program: str
    reason: str
    created_at: float
    number_masked: str | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Resolved:
    id: str
    resolution: str
    recorded: tuple[str, ...]  # ledger ids of the opt-ins a correction recorded


@dataclass
class ImportReport:
    """Where an import stands: updated after every chunk, final when `done`."""

    lines: int = 0
    rows: int = 0
    appended: int = 0
    unchanged: int = 0
    superseded: int = 0
    failed: int = 0
    errors: list[consent_csv.LineError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    done: bool = False
    fatal: str | None = None  # a code: the file could not be read at all


Progress = Callable[[ImportReport], None]


def _invalid(field_name: str, code: str, what: str) -> ApiError:
    return ApiError(422, code, f"{field_name}: {what}", field=field_name)


class Consent:
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        ledger: ConsentLedger | None = None,
    ) -> None:
        self._config = config
        self.languages: tuple[str, ...] = replies_for(config.consent).languages
        self._withdrawal = Withdrawal(config.consent)
        self._store = store
        # On a cluster, the ledger and review queue every node shares
        # (`cluster/consent_store.py`, `cluster/consent_reviews.py`).
        self._ledger = ledger or SqliteLedger(store, self._withdrawal.after)
        self._clock = clock
        self._audit = audit
        self.programs = frozenset(
            {ALL_PROGRAMS, DEFAULT_PROGRAM, *(p.name for p in config.consent.programs)}
        )

    def contact_key(self, number: str, field_name: str = "number") -> tuple[str, bytes]:
        """E.164 form and blind index of a number; 422 `invalid_number` otherwise."""
        e164 = normalise_number(number, self._config.queue.default_region)
        if e164 is None:
            raise _invalid(field_name, "invalid_number", "not a valid phone number")
        return e164, self._store.blind_index(e164)

    # -- reading -----------------------------------------------------------------------

    async def lookup(self, caller: Caller, number: str) -> ConsentView:
        """A number's contact, standing and history (PHI rights; audited first)."""
        if not caller.may_read_phi:
            raise forbidden("number", "looking up a number")
        _, idx = self.contact_key(number)
        await self._audit.record(caller.actor, "consent_lookup", "contact", idx.hex())
        contact = await self._ledger.contact(idx)
        states = await self._ledger.states(idx)
        history = await self._ledger.history(idx)
        return ConsentView(contact, tuple(states), tuple(history))

    async def contact(self, caller: Caller, number: str) -> Contact | None:
        if not caller.may_read_phi:
            raise forbidden("number", "looking up a number")
        _, idx = self.contact_key(number)
        await self._audit.record(caller.actor, "phi_read", "contact", idx.hex())
        return await self._ledger.contact(idx)

    # -- deciding ----------------------------------------------------------------------

    async def record(self, caller: Caller, req: DecisionRequest) -> Recorded:
        """Append one decision (audited). Raises `ApiError`: 422 for a field (never
        quoting it), 404 `not_opted_out` when `lifts` finds no opt-out to lift."""
        self._require_write(caller)
        number, idx = self.contact_key(req.number)
        self._check_decision(req)
        now = self._clock.time()
        entry = Entry(
            idx,
            number,
            req.decision,
            req.scope,
            req.program,
            req.source,
            now,
            actor=caller.actor,
            disclosure=req.disclosure,
            note=req.note,
        )
        done = await self._ledger.record(entry, lifts=req.lifts)
        if done is None:
            raise ApiError(404, "not_opted_out", "no opt-out of this scope to lift for this number")
        entry_id, seq = done
        await self._audit.record(
            caller.actor,
            "consent_recorded",
            "consent",
            entry_id,
            decision=req.decision,
            scope=req.scope,
            program=req.program,
            source=req.source,
        )
        return Recorded(entry_id, seq, req.decision, req.scope, req.program, req.source, now)

    def _check_decision(self, req: DecisionRequest) -> None:
        if not scope_valid(req.scope):
            raise _invalid("scope", "invalid_scope", "all, kind:<kind> or purpose:<purpose>")
        if req.program not in self.programs:
            raise _invalid("program", "unknown_program", "not a configured program")
        for name, text in (("note", req.note), ("disclosure", req.disclosure)):
            if text is not None and not 0 < len(text) <= MAX_NOTE:
                raise _invalid(name, "invalid_field", f"1 to {MAX_NOTE} characters")
        if req.decision == "opt_out" and req.disclosure is not None:
            raise _invalid("disclosure", "invalid_field", "only an opt-in carries a disclosure")
        if (
            req.decision == "opt_in"
            and not req.lifts  # a re-subscribe restores what was consented before
            and req.scope in consent_csv.MARKETING_SCOPES
            and req.disclosure is None
        ):
            # MSG-2: marketing needs prior express written consent, with its wording.
            raise _invalid(
                "disclosure", "disclosure_required", "marketing consent needs the exact text shown"
            )

    def _require_write(self, caller: Caller) -> None:
        if not caller.may_record_consent:
            raise ApiError(403, "forbidden", "this caller may not record consent decisions")

    # -- contacts ----------------------------------------------------------------------

    async def put_contact(self, caller: Caller, number: str, changes: ContactChanges) -> Contact:
        """Set a contact's patient reference, language or time zone (audited)."""
        self._require_write(caller)
        e164, idx = self.contact_key(number)
        if changes.time_zone is not None and not _zone_ok(changes.time_zone):
            raise _invalid("time_zone", "invalid_time_zone", "not an IANA time zone")
        languages = self.languages
        if changes.language is not None and changes.language not in languages:
            raise _invalid("language", "invalid_language", f"one of {', '.join(languages)}")
        if changes.patient_ref is not None and not 0 < len(changes.patient_ref) <= 128:
            raise _invalid("patient_ref", "invalid_field", "1 to 128 characters")
        await self._ledger.put_contact(idx, e164, changes, self._clock.time())
        changed = sorted(
            {
                name
                for name in ("patient_ref", "language", "time_zone")
                if getattr(changes, name) is not None
            }
            | changes.clear
        )
        await self._audit.record(
            caller.actor, "contact_updated", "contact", idx.hex(), fields=",".join(changed)
        )
        found = await self._ledger.contact(idx)
        assert found is not None  # written just now
        return found

    # -- the review queue (MSG-4) ------------------------------------------------------

    async def reviews(
        self, caller: Caller, limit: int = 100, *, texts: bool = False
    ) -> list[ReviewItem]:
        """Open free-text revocations, oldest first; `texts`: with the messages' texts
        (PHI rights; audited)."""
        if texts and not caller.may_read_phi:
            raise forbidden("texts", "reading the messages")
        queue = self._ledger.reviews
        open_ = await queue.open(limit)
        numbers: dict[bytes, str] = {}
        bodies: dict[str, str] = {}
        if caller.sees_masked:
            numbers = await queue.numbers([bytes(r.contact_idx) for r in open_])
        if texts and open_:
            ids = [r.inbound_id for r in open_]
            await self._audit.record_each(caller.actor, "phi_read", "inbound", ids)
            bodies = await queue.texts(ids)
        return [
            ReviewItem(
                r.id,
                r.inbound_id,
                r.program,
                r.reason,
                r.created_at,
                caller.mask(numbers[bytes(r.contact_idx)])
                if bytes(r.contact_idx) in numbers
                else None,
                bodies.get(r.inbound_id),
            )
            for r in open_
        ]

    async def resolve(self, caller: Caller, review_id: str, action: str) -> Resolved:
        """`confirm`: the revocation stands. `correct`: it was not one; every opt-out
        the message caused is lifted by an opt-in with the reviewer as actor. Once per
        review, in one transaction with the opt-ins (404 `not_found` after that)."""
        self._require_write(caller)
        if action not in ("confirm", "correct"):
            raise _invalid("action", "invalid_field", "confirm or correct")
        resolution = "confirmed" if action == "confirm" else CORRECTED
        now = self._clock.time()
        recorded = await self._ledger.reviews.resolve(review_id, resolution, caller.actor, now)
        if recorded is None:
            raise ApiError(404, "not_found", "no open review with this id")
        await self._audit.record(
            caller.actor,
            "consent_review_resolved",
            "consent_review",
            review_id,
            resolution=resolution,
            opt_ins=len(recorded),
        )
        return Resolved(review_id, resolution, recorded)

    # -- import and export -------------------------------------------------------------

    async def import_csv(
        self,
        caller: Caller,
        chunks: AsyncIterable[bytes],
        options: consent_csv.Options,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Read a CSV list in a stream and append its decisions in chunks of
        IMPORT_CHUNK rows, each its own transaction of the ledger (on a cluster, holding
        the chunk's contacts' locks). Identical decisions already in the ledger are not
        appended again, so a list can be imported twice."""
        self._require_write(caller)
        if options.program is not None and options.program not in self.programs:
            raise _invalid("program", "unknown_program", "not a configured program")
        report = ImportReport()
        pending: list[tuple[Entry, bool]] = []
        cols: dict[str, int] | None = None
        try:
            async for line, fields in consent_csv.records(chunks):
                report.lines = line
                if cols is None:
                    if fields is None:
                        raise consent_csv.HeaderError(
                            "unreadable_header", "the header is unreadable"
                        )
                    cols, report.ignored_columns = consent_csv.columns(fields, options)
                    continue
                report.rows += 1
                if report.rows % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # parsing is CPU: let requests in between
                entry = self._entry(caller, line, fields, cols, options, report)
                if entry is not None:
                    pending.append(entry)
                if len(pending) >= IMPORT_CHUNK:
                    await self._commit_chunk(pending, report)
                    pending = []
                    if progress is not None:
                        progress(report)
            if cols is None:
                raise consent_csv.HeaderError("empty_file", "the file has no header row")
            if pending:
                await self._commit_chunk(pending, report)
        except consent_csv.HeaderError as e:
            report.fatal = e.code
        finally:
            report.done = True
            await self._audit.record(
                caller.actor,
                "consent_imported",
                None,
                None,
                rows=report.rows,
                appended=report.appended,
                unchanged=report.unchanged,
                superseded=report.superseded,
                failed=report.failed,
                fatal=report.fatal,
            )
            if progress is not None:
                progress(report)
        return report

    def _entry(
        self,
        caller: Caller,
        line: int,
        fields: list[str] | None,
        cols: dict[str, int],
        options: consent_csv.Options,
        report: ImportReport,
    ) -> tuple[Entry, bool] | None:
        now = self._clock.time()
        parsed = (
            consent_csv.LineError(line, "unreadable_line")
            if fields is None
            else consent_csv.row(line, fields, cols, options, now)
        )
        if isinstance(parsed, consent_csv.Row):
            e164 = normalise_number(parsed.number, self._config.queue.default_region)
            program = parsed.program or ALL_PROGRAMS
            if e164 is None:
                parsed = consent_csv.LineError(line, "invalid_number", "number")
            elif program not in self.programs:
                parsed = consent_csv.LineError(line, "unknown_program", "program")
            else:
                entry = Entry(
                    self._store.blind_index(e164),
                    e164,
                    parsed.decision,
                    parsed.scope,
                    program,
                    parsed.source,
                    now if parsed.at is None else parsed.at,
                    actor=caller.actor,
                    disclosure=parsed.disclosure,
                    note=parsed.note,
                )
                return entry, parsed.at is not None
        report.failed += 1
        if len(report.errors) < MAX_LINE_ERRORS:
            report.errors.append(parsed)
        return None

    async def _commit_chunk(self, chunk: list[tuple[Entry, bool]], report: ImportReport) -> None:
        outcomes = await self._ledger.import_entries(chunk)
        report.appended += outcomes.count(import_rule.APPENDED)
        report.unchanged += outcomes.count(import_rule.UNCHANGED)
        report.superseded += outcomes.count(import_rule.SUPERSEDED)

    async def export(self, caller: Caller) -> AsyncIterator[ExportRow]:
        """Every ledger row in order, numbers and texts decrypted. Needs the right to
        record consent and to read PHI; audited before the first row is read."""
        self._require_write(caller)
        if not caller.may_read_phi:
            raise forbidden("number", "exporting numbers")
        await self._audit.record(caller.actor, "consent_exported")
        return self._export_rows()

    async def _export_rows(self) -> AsyncIterator[ExportRow]:
        after = 0
        while True:
            page = await self._ledger.export_page(after, EXPORT_PAGE)
            for r in page:
                yield r
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1].seq


def _zone_ok(name: str) -> bool:
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return False
    return name in _zones()


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
