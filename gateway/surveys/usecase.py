"""Surveys as use cases: list, get, create, a new version, send, results, export.

Every front end (the API's `/surveys`, the panel's "Surveys" pages, the demo seed)
calls these with a `Caller`. Creating and versioning need an administrator (an `admin`
token, a panel admin) and are audited; sending needs the right to send and is audited
with its counts. Errors are `ApiError`s naming the field, never quoting what was sent.

One open survey per number. Starting a survey for a number that is answering one is
REFUSED (`409 survey_open` for one number; counted as `already_open` for an audience),
not queued: a second flow's questions interleaved with the first's could not be told
apart by the patient, and a queued one could start days later, out of context. The
check and the start are one step (the partial unique index on open sessions).

The surveys' rows live where the clinical tables do (`ClinicalDb`): the node's SQLite,
or on a cluster the shared PostgreSQL, where a session started on one node is answered
on any; an audience is read from the contact book (the shared one on a cluster).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.clock import Clock
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.consent.ledger import contact_row_id
from gateway.contacts.audience import AudienceSpec
from gateway.contacts.book import ContactBook, LocalContactBook
from gateway.errors import ApiError
from gateway.intake import Prepared, normalise_number
from gateway.store.store import Store
from gateway.surveys import flow, results, sql
from gateway.surveys.asking import ask
from gateway.surveys.results import Results
from gateway.surveys.spec import Survey, SurveySpec, check
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.messages import Messages

BATCH = 500  # recipients per transaction of an audience send: sends keep flowing between


@dataclass(frozen=True, slots=True)
class Target:
    """One number (`to`) or an audience; `language` wins over the contact's own."""

    to: str | None = None
    audience: AudienceSpec | None = None
    language: str | None = None


@dataclass(slots=True)
class Sent:
    """What a send did: sessions started, numbers already answering a survey, first
    questions the policy blocked (by reason) and recipients refused (by error code)."""

    started: int = 0
    already_open: int = 0
    blocked: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    session_id: str | None = None  # one number: its session
    status: str | None = None  # one number: queued, scheduled or blocked


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no survey with this id")


class Surveys:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        messages: Messages,
        region: str,
        wake: Callable[[], None] = lambda: None,
        db: ClinicalDb | None = None,
        book: ContactBook | None = None,
    ) -> None:
        """`db`: where the surveys' rows live, `book`: the contacts an audience is read
        from (None: the store's own; a cluster's shared ones)."""
        self._store = store
        self._db = db or LocalClinicalDb(store)
        self._book = book or LocalContactBook(store)
        self._clock = clock
        self._audit = audit
        self._messages = messages
        self._region = region
        self._wake = wake

    # -- reading -----------------------------------------------------------------------

    async def list_surveys(self, caller: Caller) -> list[Survey]:
        return await sql.current_all(self._db)

    async def get(self, caller: Caller, survey_id: str) -> tuple[Survey, list[Survey]]:
        """The current version and every version, newest first."""
        found = await sql.versions(self._db, survey_id)
        if not found:
            raise not_found()
        return found[0], found

    async def _version(self, survey_id: str, version: int | None) -> Survey:
        found = await sql.versions(self._db, survey_id)
        for survey in found:
            if version is None or survey.version == version:
                return survey
        if found:
            raise ApiError(404, "not_found", "version: no such version of this survey",
                           field="version")  # fmt: skip
        raise not_found()

    async def results(self, caller: Caller, survey_id: str, version: int | None = None) -> Results:
        """Counts per question of one version (default: the current one)."""
        return await results.results(self._db, await self._version(survey_id, version))

    async def export(
        self,
        caller: Caller,
        survey_id: str,
        *,
        version: int | None = None,
        include_numbers: bool = False,
    ) -> tuple[list[str], list[list[object]]]:
        """The header and rows of the CSV export (audited; see `results.export_rows`)."""
        survey = await self._version(survey_id, version)
        return await results.export_rows(
            self._db, self._audit, caller, survey, include_numbers=include_numbers
        )

    # -- editing -----------------------------------------------------------------------

    def _require_edit(self, caller: Caller) -> None:
        if not caller.may_edit_templates:
            raise ApiError(403, "forbidden", "changing a survey needs the 'admin' scope")

    async def create(self, caller: Caller, spec: SurveySpec) -> Survey:
        return await self._save(caller, sql.new_survey_id(), check(spec), new=True)

    async def update(self, caller: Caller, survey_id: str, spec: SurveySpec) -> Survey:
        """A new version; sessions already running keep the version they began with."""
        return await self._save(caller, survey_id, check(spec), new=False)

    async def _save(self, caller: Caller, survey_id: str, spec: SurveySpec, *, new: bool) -> Survey:
        self._require_edit(caller)
        now = self._clock.time()

        def job(conn: sqlite3.Connection) -> Survey | None:
            if not new and sql.current_of(conn, survey_id) is None:
                return None
            version = sql.insert_version(conn, survey_id, spec, now, caller.actor)
            return sql.version_of(conn, survey_id, version)

        saved = await self._db.run(job)
        if saved is None:
            raise not_found()
        await self._audit.record(
            caller.actor, "survey_saved", "survey", survey_id, version=saved.version
        )
        return saved

    # -- sending -----------------------------------------------------------------------

    async def send(self, caller: Caller, survey_id: str, target: Target) -> Sent:
        """Start the survey for one number or an audience; each first question goes
        through the accept path and the send policy."""
        if not caller.may_send:
            raise ApiError(403, "forbidden", "sending a survey needs the 'send' scope")
        self._messages.check_accepting()
        if (target.to is None) == (target.audience is None):
            raise ApiError(
                422, "invalid_field", "to: give a number or an audience, not both", field="to"
            )
        current, _ = await self.get(caller, survey_id)
        if target.language is not None and target.language not in current.spec.languages:
            raise ApiError(422, "invalid_field", "language: not a language of this survey",
                           field="language")  # fmt: skip
        sent = Sent()
        if target.to is not None:
            await self._send_one(caller, survey_id, target, sent)
        else:
            assert target.audience is not None
            await self._send_audience(caller, survey_id, target, target.audience, sent)
        self._wake()
        await self._audit.record(
            caller.actor,
            "survey_sent",
            "survey",
            survey_id,
            started=sent.started,
            already_open=sent.already_open,
            blocked=sum(sent.blocked.values()),
            refused=sum(sent.refused.values()),
        )
        return sent

    async def _send_one(self, caller: Caller, survey_id: str, target: Target, sent: Sent) -> None:
        assert target.to is not None
        now = self._clock.time()
        to = target.to
        number = normalise_number(to, self._region)  # the accept path refuses a bad one

        def job(conn: sqlite3.Connection) -> list[Prepared]:
            survey = sql.current_of(conn, survey_id)
            if survey is None:
                raise not_found()
            out: list[Prepared] = []
            known = None if number is None else _language_of(conn, self._store.blind_index(number))
            lang = flow.language_for(survey.spec, target.language, known)
            self._start(conn, caller, survey, to, lang, now, sent, out, single=True)
            return out

        prepared = await self._db.run(job)
        self._messages.hand_over(prepared)
        if sent.already_open:
            raise ApiError(
                409, "survey_open", "to: this number is answering a survey already", field="to"
            )

    async def _send_audience(
        self, caller: Caller, survey_id: str, target: Target, audience: AudienceSpec, sent: Sent
    ) -> None:
        everyone: list[bytes] = []
        while page := await self._book.audience_idxs(
            audience, everyone[-1] if everyone else b"", BATCH
        ):
            everyone.extend(page)
        if not everyone:
            raise ApiError(422, "empty_audience", "audience: no contact matches", field="audience")
        for start in range(0, len(everyone), BATCH):
            chunk = everyone[start : start + BATCH]
            now = self._clock.time()

            def job(
                conn: sqlite3.Connection, chunk: list[bytes] = chunk, now: float = now
            ) -> list[Prepared]:
                survey = sql.current_of(conn, survey_id)
                if survey is None:
                    raise not_found()
                out: list[Prepared] = []
                for idx in chunk:
                    r = conn.execute(
                        "SELECT number_ct, language FROM contacts WHERE idx = ?", (idx,)
                    ).fetchone()
                    if r is None:
                        continue  # erased since the audience was read
                    number = self._db.cipher.decrypt(bytes(r[0]), contact_row_id(idx), "number")
                    lang = flow.language_for(survey.spec, target.language, r[1])
                    self._start(conn, caller, survey, number, lang, now, sent, out, single=False)
                return out

            self._messages.hand_over(await self._db.run(job))

    def _start(
        self,
        conn: sqlite3.Connection,
        caller: Caller,
        survey: Survey,
        number: str,
        language: str,
        now: float,
        sent: Sent,
        out: list[Prepared],
        *,
        single: bool,
    ) -> None:
        """Accept one session's first text and open the session, under a savepoint:
        a number already answering a survey, or a refused message, leaves nothing
        behind. One number (`single`): a refusal is raised; else it is counted."""
        spec = survey.spec
        session_id = sql.new_session_id()
        conn.execute("SAVEPOINT survey_start")
        try:
            asked = ask(
                conn,
                self._messages,
                caller,
                number=number,
                body=flow.first_text(spec, language),
                purpose=spec.purpose,
                priority=spec.priority,
                session_id=session_id,
                now=now,
            )
            idx = self._store.blind_index(asked.prepared.message.to)
            opened = sql.open_session(conn, session_id, survey, idx, language, caller.actor, now)
        except ApiError as e:
            conn.execute("ROLLBACK TO survey_start")
            conn.execute("RELEASE survey_start")
            if single or e.status >= 500:
                raise
            sent.refused[e.code] += 1
            return
        except BaseException:
            conn.execute("ROLLBACK TO survey_start")
            conn.execute("RELEASE survey_start")
            raise
        if not opened:
            conn.execute("ROLLBACK TO survey_start")
            conn.execute("RELEASE survey_start")
            sent.already_open += 1
            return
        if asked.blocked:
            sql.close(conn, session_id, "blocked", now)
            sent.blocked[asked.reason or "blocked"] += 1
        else:
            deadline = asked.goes_at + spec.timeout(0)
            sql.advance(conn, session_id, 0, 0, deadline, asked.prepared.message.id, now)
            sent.started += 1
        conn.execute("RELEASE survey_start")
        out.append(asked.prepared)
        if single:
            sent.session_id, sent.status = session_id, asked.status


def _language_of(conn: sqlite3.Connection, idx: bytes) -> str | None:
    row = conn.execute("SELECT language FROM contacts WHERE idx = ?", (idx,)).fetchone()
    return None if row is None else row[0]
