"""CSV import of contacts: read in a stream, written in bounded chunks, run as a job.

A file is read as it arrives (`gateway.usecases.csv_reader`), each row normalised in
the file's region and keyed by its blind index, and written IMPORT_CHUNK rows per
writer transaction, so a send waits behind one chunk at most, never behind the file.
A row creates a contact, updates one (the same number earlier in the file, or already
in the store: never a second contact) or changes nothing: a file imported twice is
all `unchanged` the second time. Jobs keep their report in memory (counts and line
errors, no PHI) for the API and the panel to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from drivers.clock import Clock
from gateway.contacts import csv_import
from gateway.contacts.book import ContactBook
from gateway.errors import ApiError
from gateway.store import contacts_sql
from gateway.store.store import Store
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.csv_reader import (
    Decoder,
    HeaderError,
    LineError,
    coded_records,
    file_chunks,
)

log = structlog.get_logger("smsgw.contacts")

IMPORT_CHUNK = 200  # rows per writer transaction: sends wait for one chunk at most
YIELD_EVERY = 50  # rows parsed between two turns of the event loop
MAX_LINE_ERRORS = 100  # reported one by one; the rest only counted
MAX_SEEN = 2_000_000  # numbers remembered for the in-file duplicate count
KEEP_JOBS = 20


@dataclass
class ImportReport:
    """Where an import stands: updated after every chunk, final when `done`."""

    lines: int = 0
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0  # rows repeating a number earlier in the file (merged into it)
    failed: int = 0
    errors: list[LineError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    encoding: str | None = None
    done: bool = False
    fatal: str | None = None  # a code: the file could not be read at all

    def fail(self, error: LineError) -> None:
        self.failed += 1
        if len(self.errors) < MAX_LINE_ERRORS:
            self.errors.append(error)


@dataclass
class ImportJob:
    """An import running in the background; pages and the API poll it."""

    id: str
    size: int
    name: str | None
    report: ImportReport = field(default_factory=ImportReport)
    read: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def percent(self) -> int:
        if self.report.done:
            return 100
        return min(99, self.read * 100 // self.size) if self.size else 0


Progress = Callable[[ImportReport], None]


class Importer:
    def __init__(
        self,
        *,
        store: Store,
        book: ContactBook,
        clock: Clock,
        audit: AuditSink,
        region: str,
        languages: tuple[str, ...],
    ) -> None:
        self._store = store  # its blind index: the key every node shares
        self._book = book
        self._clock = clock
        self._audit = audit
        self._region = region
        self._languages = languages
        self.jobs: dict[str, ImportJob] = {}

    def check(self, caller: Caller, options: csv_import.Options) -> None:
        if not caller.may_record_consent:
            raise ApiError(403, "forbidden", "this caller may not change contacts")
        if options.region is not None and not csv_import.region_ok(options.region):
            raise ApiError(
                422, "invalid_region", "region: an ISO 3166 country code", field="region"
            )

    async def run(
        self,
        caller: Caller,
        chunks: AsyncIterable[bytes],
        options: csv_import.Options,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import a CSV stream (see the module's docstring); audited with its counts."""
        self.check(caller, options)
        if options.group is not None and await self._book.group(options.group) is None:
            raise ApiError(404, "not_found", "group: no such group", field="group")
        region = options.region or self._region
        decoder = Decoder()
        report = ImportReport()
        seen: set[bytes] = set()
        pending: list[contacts_sql.ImportRow] = []
        cols: dict[str, int] | None = None
        try:
            async for line, fields in coded_records(chunks, decoder):
                report.lines = line
                if cols is None:
                    if isinstance(fields, str):
                        raise HeaderError("unreadable_header", "the header is unreadable")
                    cols, report.ignored_columns = csv_import.columns(fields, options)
                    continue
                report.rows += 1
                if report.rows % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # parsing is CPU: let requests in between
                parsed = (
                    LineError(line, fields)
                    if isinstance(fields, str)
                    else csv_import.row(line, fields, cols, region, self._languages)
                )
                if isinstance(parsed, LineError):
                    report.fail(parsed)
                    continue
                idx = self._store.blind_index(parsed.number)
                if idx in seen:
                    report.duplicates += 1
                elif len(seen) < MAX_SEEN:
                    seen.add(idx)
                pending.append(
                    contacts_sql.ImportRow(
                        idx,
                        parsed.number,
                        parsed.values,
                        parsed.preferences,
                        parsed.tags,
                        parsed.groups,
                    )
                )
                if len(pending) >= IMPORT_CHUNK:
                    await self._commit(pending, options.group, report)
                    pending = []
                    if progress is not None:
                        progress(report)
            if cols is None:
                raise HeaderError("empty_file", "the file has no header row")
            if pending:
                await self._commit(pending, options.group, report)
        except HeaderError as e:
            report.fatal = e.code
        finally:
            report.encoding = decoder.encoding
            report.done = True
            await self._audit.record(
                caller.actor,
                "contacts_imported",
                "contact_group" if options.group else None,
                options.group,
                file=(options.name or "")[:128] or None,
                rows=report.rows,
                created=report.created,
                updated=report.updated,
                unchanged=report.unchanged,
                failed=report.failed,
                fatal=report.fatal,
            )
            if progress is not None:
                progress(report)
        return report

    async def _commit(
        self, rows: list[contacts_sql.ImportRow], group: str | None, report: ImportReport
    ) -> None:
        outcomes = await self._book.import_rows(rows, group, self._clock.time())
        report.created += outcomes.count(contacts_sql.CREATED)
        report.updated += outcomes.count(contacts_sql.UPDATED)
        report.unchanged += outcomes.count(contacts_sql.UNCHANGED)

    # -- jobs ------------------------------------------------------------------------

    def start(
        self, caller: Caller, path: Path, size: int, options: csv_import.Options
    ) -> ImportJob:
        """Import the file at `path` in the background, deleting it when done."""
        self.check(caller, options)
        job = ImportJob(secrets.token_urlsafe(12), size, options.name)

        def progress(report: ImportReport) -> None:
            job.report = report

        def counted(n: int) -> None:
            job.read += n

        async def go() -> None:
            try:
                job.report = await self.run(caller, file_chunks(path, counted), options, progress)
            except ApiError as e:
                job.report = ImportReport(done=True, fatal=e.code)
            finally:
                r = job.report  # counts and codes only: never a number or a cell
                log.info("contacts_import_done", job=job.id, rows=r.rows, failed=r.failed,
                         fatal=r.fatal)  # fmt: skip
                await asyncio.to_thread(path.unlink, missing_ok=True)

        done = [j for j in self.jobs.values() if j.report.done]
        for old in done[: max(0, len(self.jobs) - KEEP_JOBS)]:
            del self.jobs[old.id]  # finished ones beyond the newest KEEP_JOBS are forgotten
        self.jobs[job.id] = job
        job.task = asyncio.create_task(go())
        return job

    def job(self, job_id: str) -> ImportJob:
        found = self.jobs.get(job_id)
        if found is None:
            raise ApiError(404, "not_found", "no such import")
        return found

    async def stop(self) -> None:
        for job in self.jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task
