"""Outbound messages: accept (one or a batch), cancel, retry, get, search, reveal.

Every front end (HTTP API, panel, MQTT, Kannel `sendsms`) calls these with a `Caller`
and gets typed records back, masked for that caller; errors are `ApiError`s with the
API's stable codes, which each front end translates into its own answer. The store
keeps the SQL and the decryption; nothing here formats for a wire.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from drivers.clock import Clock
from gateway.config import Config
from gateway.consent.token_purposes import TokenPurposes
from gateway.errors import ApiError
from gateway.intake import Accepted, Intake, Prepared, SendRequest, normalise_number
from gateway.metrics import Metrics
from gateway.models import Priority, State
from gateway.scheduler import Scheduler
from gateway.scheduler_feed import ClaimSoon
from gateway.store.bulk_insert import insert_rows
from gateway.store.idempotency import IdempotentAnswer
from gateway.store.message_reads import LocalReads, MessageReads
from gateway.store.queue_store import AcceptStore
from gateway.store.records import MessageQuery, StoredMessage
from gateway.store.store import Store
from gateway.store.writer import Statement
from gateway.store_failure import KeyRetired, database_unreachable, outcome_unknown
from gateway.usecases.accept_within import WithinAccepts
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.masking import mask_body
from gateway.usecases.records import EventRecord, MessagePage, MessageRecord, Revealed

T = TypeVar("T")
REFERENCE_SCAN_LIMIT = 10_000  # references have no index: search the newest this many
RETRYABLE = frozenset({State.FAILED, State.EXPIRED})
_NOT_ACCEPTED = "the message store could not commit; nothing was accepted"
# The shared database lost under the COMMIT: a retry with the same Idempotency-Key is
# answered from what was committed (202 and the same ids), or accepted then.
_UNKNOWN = (
    "the connection to the message store was lost during the commit, which may have gone"
    " through: send again with the same Idempotency-Key to be answered what was accepted"
)


class BatchAccepted(msgspec.Struct, frozen=True):
    """Per-item results of a batch: an `Accepted` or an error object, in request order."""

    accepted: int
    rejected: int
    results: list[Any]


IDEMPOTENCY_KEY_MAX = 255  # characters of a client's key (HTTP header, MQTT property)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's `Idempotency-Key` (hashed) and a hash of its request: the answer is
    stored with the messages, in their transaction, with `status`."""

    key_hash: bytes
    request_hash: bytes
    status: int


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Cancelled:
    id: str
    status: State
    changed: bool  # False: it was already cancelled


@dataclass(frozen=True, slots=True)
class MessageSearch:
    """Filters of a message list; every field optional. `number` is as typed (needs
    PHI rights, audited); `reference` is searched by decrypting (PHI rights)."""

    state: State | None = None
    priority: Priority | None = None
    route: str | None = None
    receipt_overdue: bool | None = None
    since: float | None = None
    until: float | None = None
    number: str | None = None
    reference: str | None = None
    cursor: str | None = None


def not_found() -> ApiError:
    # The same answer for "no such message" and "another token's message": a token
    # cannot learn that someone else's message exists.
    return ApiError(404, "not_found", "no message with this id")


def forbidden(field: str, what: str) -> ApiError:
    return ApiError(403, "forbidden", f"{field}: {what} needs the 'phi' scope", field=field)


class Messages(WithinAccepts):
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        intake: Intake,
        scheduler: Scheduler,
        clock: Clock,
        metrics: Metrics,
        audit: AuditSink,
        accepting: Callable[[], bool],
        cluster: AcceptStore | None = None,
        reads: MessageReads | None = None,
    ) -> None:
        self._config = config
        self._store = store
        # On a cluster the messages live in the shared queue, not `store`.
        self._cluster = cluster
        # Where lists and details are read: the shared queue on a cluster.
        self._reads: MessageReads = reads if reads is not None else LocalReads(store)
        self._intake = intake
        self._scheduler = scheduler
        self._clock = clock
        self._metrics = metrics
        self._audit = audit
        self._accepting = accepting
        self._token_purposes = TokenPurposes(store)

    # -- accepting ---------------------------------------------------------------------

    def check_accepting(self) -> None:
        if not self._accepting():
            raise ApiError(
                503,
                "shutting_down",
                "the gateway is shutting down; retry shortly",
                headers={"Retry-After": "5"},
            )

    def check_batch_size(self, count: int) -> None:
        limit = self._config.http.max_batch
        if count == 0:
            raise ApiError(422, "empty_batch", "messages: the batch is empty", field="messages")
        if count > limit:
            raise ApiError(
                413,
                "batch_too_large",
                f"messages: at most {limit} messages per batch",
                field="messages",
            )

    async def accept(
        self,
        caller: Caller,
        request: SendRequest,
        *,
        idempotency: IdempotencyKey | None = None,
    ) -> Accepted:
        """Validate one message and commit it; returns once it is durably stored.

        Raises `ApiError` (the API's codes: `invalid_number`, `no_route`, ...,
        `shutting_down`, `store_unavailable`) and then stores nothing."""
        self._require_send(caller)
        self.check_accepting()
        if "{" in request.body:  # a named link's placeholder, maybe: no coroutine without
            await self._intake.links.ensure([request.body])
        known = self._token_purposes.known(caller.token_id)  # read once: no coroutine after
        default = known[0] if known else await self._token_purposes.default_for(caller.token_id)
        prepared = self._intake.prepare(
            request, caller.token_id, self._clock.time(), token_purpose=default
        )
        return await self._commit(caller, [prepared], idempotency, _first)

    async def accept_together(
        self,
        caller: Caller,
        requests: Sequence[SendRequest],
        *,
        attached: Callable[[list[str]], list[Statement]] | None = None,
    ) -> list[Accepted]:
        """All of `requests` in one commit, or none of them (the first invalid one's
        `ApiError` is raised). `attached` gives a front end's own rows for the new
        message ids (a Kannel dlr-url), written in the same transaction: in the SQL of
        the backend the messages go to (`integrations/dlr_wishes.py` chooses it)."""
        self._require_send(caller)
        self.check_accepting()
        await self._intake.links.ensure(r.body for r in requests)
        now = self._clock.time()
        default = await self._token_purposes.default_for(caller.token_id)
        prepared = [
            self._intake.prepare(r, caller.token_id, now, token_purpose=default) for r in requests
        ]
        extra = attached([p.message.id for p in prepared]) if attached else []
        return await self._commit(caller, prepared, None, lambda a: a, extra)

    async def accept_batch(
        self,
        caller: Caller,
        items: Sequence[SendRequest | ApiError],
        *,
        idempotency: IdempotencyKey | None = None,
    ) -> BatchAccepted:
        """Each valid item is accepted, all in one commit; an `ApiError` item (one the
        front end could not decode) and each invalid one is reported in its place."""
        self._require_send(caller)
        self.check_accepting()
        self.check_batch_size(len(items))
        await self._intake.links.ensure(i.body for i in items if not isinstance(i, ApiError))
        now = self._clock.time()
        known = self._token_purposes.known(caller.token_id)  # read once: no coroutine after
        default = known[0] if known else await self._token_purposes.default_for(caller.token_id)
        prepared, errors = self._intake.prepare_batch(items, caller.token_id, now, default)
        if not prepared:
            raise ApiError(
                422, "batch_rejected", "no message in the batch was valid", field="messages"
            )

        def build(accepted: list[Accepted]) -> BatchAccepted:
            if not errors:  # every item accepted (the writer's thread runs this)
                return BatchAccepted(len(accepted), 0, accepted)
            it = iter(accepted)
            results = [errors[i] if i in errors else next(it) for i in range(len(items))]
            return BatchAccepted(len(accepted), len(errors), results)

        return await self._commit(caller, prepared, idempotency, build)

    async def _commit(
        self,
        caller: Caller,
        prepared: list[Prepared],
        idempotency: IdempotencyKey | None,
        build: Callable[[list[Accepted]], T],
        extra: Sequence[Statement] = (),
    ) -> T:
        """Commit the messages (and the idempotent answer, and `extra` rows) in one
        transaction. With the send policy on, its verdict on each message is reached in
        that transaction too (`Intake.judge`), so a cap's count and the insert it allowed
        are one step, and the answer says what became of each message."""
        started = time.perf_counter()
        for p in prepared:  # a loop, not a comprehension: no frame of its own per accept
            if p.quiet_hours_override:
                overriding = [p for p in prepared if p.quiet_hours_override]
                await self._audit_overrides(caller, overriding)
                break
        now = self._clock.time()

        def finish(judged: list[Prepared]) -> tuple[list[Statement], T]:
            answer = build([p.answer() for p in judged])
            if idempotency is None:
                return [], answer
            if caller.token_id is None:
                raise ValueError("an Idempotency-Key belongs to a token")
            row = self._store.idempotency_statement(
                caller.token_id,
                idempotency.key_hash,
                idempotency.request_hash,
                idempotency.status,
                msgspec.json.encode(answer),
                now,
            )
            return [row], answer

        intake = self._intake
        try:
            if self._cluster is not None:
                prepared, answer = await self._commit_shared(
                    self._cluster, caller, prepared, idempotency, build, extra
                )
            elif intake.policy.enabled:
                job = _AcceptJob(
                    intake, prepared, now, build, finish if idempotency is not None else None, extra
                )
                judged = self._store.writer.run_grouped(_judged_jobs, job)
                self._claim_with(prepared)
                outcome: _Judged[T] = await judged
                prepared, answer = outcome.prepared, outcome.answer
            else:
                rows, answer = finish(prepared)
                inserted = self._store.writer.insert([*intake.statements(prepared), *extra, *rows])
                self._claim_with(prepared)
                await inserted
        except KeyRetired as e:  # a node back from a cut-off: its key is current now
            raise ApiError(
                503,
                "key_retired",
                "this node's field key was retired while it was cut off from the database;"
                " it has taken the current key up: nothing was accepted, send again",
                headers={"Retry-After": "1"},
            ) from e
        except Exception as e:
            raise ApiError(
                503,
                "store_unavailable",
                _UNKNOWN if outcome_unknown(e) else _NOT_ACCEPTED,
                headers={"Retry-After": "2"} if database_unreachable(e) else None,
            ) from e
        intake.accepted(prepared)
        self._metrics.accept_latency.observe(time.perf_counter() - started)
        return answer

    def _claim_with(self, prepared: list[Prepared], claim: ClaimSoon | None = None) -> None:
        """A single message due now may be claimed in its accept's transaction (the
        scheduler decides): handed to the writer now, right after the accept (on a
        cluster: to the shared queue, right before its accept)."""
        if len(prepared) == 1 and not prepared[0].scheduled:
            self._scheduler.claim_with_accept(
                prepared[0].entry, claim or self._store.claim_group_soon
            )

    async def _commit_shared(
        self,
        cluster: AcceptStore,
        caller: Caller,
        prepared: list[Prepared],
        idempotency: IdempotencyKey | None,
        build: Callable[[list[Accepted]], T],
        extra: Sequence[Statement],
    ) -> tuple[list[Prepared], T]:
        """`_commit` on the cluster's queue: the messages (judged by the policy when it
        is on: `cluster/consent_accept.py`), the idempotent answer and `extra` rows
        (written in PostgreSQL's SQL by their front end's backend) in one PostgreSQL
        transaction. What it cannot carry yet is refused at start
        (`cluster/settings.py`), and checked again here."""
        now = self._clock.time()

        def answer_of(judged: list[Prepared]) -> tuple[T, IdempotentAnswer | None]:
            answer = build([p.answer() for p in judged])
            if idempotency is None:
                return answer, None
            if caller.token_id is None:
                raise ValueError("an Idempotency-Key belongs to a token")
            kept = IdempotentAnswer(
                caller.token_id,
                idempotency.key_hash,
                idempotency.request_hash,
                idempotency.status,
                msgspec.json.encode(answer),
                now,
            )
            return answer, kept

        if self._intake.policy.enabled:
            from gateway.cluster.consent_accept import accept_judged  # here: psycopg is optional

            return await accept_judged(cluster, self._intake, prepared, now, answer_of, extra)
        answer, kept = answer_of(prepared)
        links = [m for p in prepared for m in p.links]
        self._claim_with(prepared, cluster.claim_group_soon)  # then the accept, at once
        await cluster.accept([p.message for p in prepared], kept, links, extra)
        return prepared, answer

    async def _audit_overrides(self, caller: Caller, overriding: Sequence[Prepared]) -> None:
        """A send outside quiet hours is allowed only with the `urgent` right, and
        audited (with its reason) before the message is stored."""
        if not caller.may_override_quiet_hours:
            raise ApiError(
                403,
                "forbidden",
                "quiet_hours_override: needs the 'urgent' scope",
                field="quiet_hours_override",
            )
        for p in overriding:
            await self._audit.record(
                caller.actor,
                "quiet_hours_override",
                "message",
                p.message.id,
                reason=p.quiet_hours_reason,
            )

    async def replay(self, caller: Caller, key: IdempotencyKey) -> StoredAnswer | None:
        """The answer stored under this key by this token, if any; 409 if the key was
        used with a different request."""
        if caller.token_id is None:
            return None
        found = self._store if self._cluster is None else self._cluster
        row = await found.find_idempotent(caller.token_id, key.key_hash)
        if row is None:
            return None
        if row.request_hash != key.request_hash:
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request",
            )
        return StoredAnswer(row.status, row.response)

    # -- acting on one message ---------------------------------------------------------

    async def cancel(self, caller: Caller, message_id: str) -> Cancelled:
        """Cancel a message not yet sending, in one atomic step; audited when it was
        this call that cancelled it. An already cancelled message answers as done."""
        self._require_send(caller)
        store = self._store if self._cluster is None else self._cluster
        found = await store.withdraw(message_id, self._clock.time(), owner=caller.owner)
        if found is None:
            raise not_found()
        state, changed = found
        if state is not State.CANCELLED:
            raise ApiError(
                409,
                "not_cancellable",
                f"the message is {state.value} and can no longer be cancelled",
            )
        self._scheduler.forget(message_id)
        if changed:
            await self._audit.record(caller.actor, "message_cancelled", "message", message_id)
        return Cancelled(message_id, state, changed)

    async def retry(self, caller: Caller, message_id: str) -> Accepted:
        """A failed or expired message is final; retry sends a copy as a new message,
        owned by the token that sent the original (so that client sees it)."""
        self._require_send(caller)
        stored = await self._visible(caller, message_id)
        if stored.state not in RETRYABLE:
            raise ApiError(409, "not_retryable", "only failed or expired messages can be retried")
        self.check_accepting()
        copy = SendRequest(
            to=stored.to.open(),
            body=stored.body.open(),
            priority=stored.priority.label,  # type: ignore[arg-type]  # a valid label
            route=stored.route_hint,
            category=stored.category,
            reference=None if stored.reference is None else stored.reference.open(),
            purpose=stored.purpose,  # type: ignore[arg-type]  # stored from a valid name
        )
        default = await self._token_purposes.default_for(stored.token_id)
        prepared = self._intake.prepare(
            copy, stored.token_id, self._clock.time(), token_purpose=default
        )
        answer = await self._commit(caller, [prepared], None, lambda a: a[0])
        await self._audit.record(
            caller.actor, "message_retried", "message", message_id, new_message_id=answer.id
        )
        return answer

    # -- reading -----------------------------------------------------------------------

    async def get(self, caller: Caller, message_id: str, *, phi: bool = False) -> MessageRecord:
        """One message with its history. `phi`: with its number and body whole (PHI
        rights needed; the read is audited before anything is returned)."""
        if phi and not caller.may_read_phi:
            raise forbidden("include", "reading numbers and bodies")
        stored = await self._visible(caller, message_id)
        events = await self._reads.events(message_id)
        if phi:
            await self._audit.record(caller.actor, "phi_read", "message", message_id)
        return self._record(
            caller, stored, tuple(EventRecord(**vars_of(e)) for e in events), phi=phi
        )

    async def search(
        self, caller: Caller, search: MessageSearch, limit: int, *, phi: bool = False
    ) -> MessagePage:
        """Messages newest first, `limit` a page; `next_cursor` only if more follow.
        `phi`: with numbers and bodies whole (PHI rights; each id shown is audited)."""
        if phi and not caller.may_read_phi:
            raise forbidden("include", "reading numbers and bodies")
        to = None
        if search.number is not None:
            if not caller.may_read_phi:
                raise forbidden("to", "looking up a number")
            to = normalise_number(search.number, self._config.queue.default_region)
            if to is None:
                raise ApiError(400, "invalid_number", "to: not a valid phone number", field="to")
            await self._audit.record(caller.actor, "phi_number_lookup", "messages", None)
        query = MessageQuery(
            owner=caller.owner,
            state=search.state,
            priority=search.priority,
            route=search.route,
            receipt_overdue=search.receipt_overdue,
            since=search.since,
            until=search.until,
            to=to,
            before=search.cursor,
        )
        truncated = False
        if search.reference is not None:
            if not caller.may_read_phi:
                raise forbidden("reference", "searching by reference")
            stored, truncated = await self._by_reference(query, search.reference, limit)
        else:
            stored = await self._reads.messages(query, limit + 1)
        more = len(stored) > limit
        stored = stored[:limit]
        if phi and stored:
            await self._audit.record_each(
                caller.actor, "phi_read", "message", [m.id for m in stored]
            )
        return MessagePage(
            tuple(self._record(caller, m, phi=phi) for m in stored),
            stored[-1].id if more and stored else None,
            truncated,
        )

    async def _by_reference(
        self, query: MessageQuery, reference: str, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Messages whose (encrypted) reference is `reference`, newest first, scanning
        at most REFERENCE_SCAN_LIMIT; True if the scan stopped at that limit."""
        found: list[StoredMessage] = []
        scanned = 0
        while scanned < REFERENCE_SCAN_LIMIT and len(found) <= limit:
            batch = await self._reads.messages(query, 500)
            if not batch:
                return found, False
            for m in batch:
                scanned += 1
                if m.reference is not None and m.reference.open() == reference:
                    found.append(m)
            query = MessageQuery(**{**vars_of(query), "before": batch[-1].id})
        return found, scanned >= REFERENCE_SCAN_LIMIT

    async def reveal(self, caller: Caller, message_id: str) -> Revealed:
        """A message's number, body and reference whole; audited before it is returned."""
        if not caller.may_read_phi:
            raise forbidden("id", "revealing a message")
        stored = await self._visible(caller, message_id)
        await self._audit.record(caller.actor, "reveal", "message", message_id)
        return Revealed(
            message_id,
            stored.to.open(),
            stored.body.open(),
            None if stored.reference is None else stored.reference.open(),
        )

    async def _visible(self, caller: Caller, message_id: str) -> StoredMessage:
        stored = await self._reads.message(message_id)
        owner = caller.owner
        if stored is None or (owner is not None and stored.token_id != owner):
            raise not_found()
        return stored

    def _require_send(self, caller: Caller) -> None:
        if not caller.may_send:
            raise ApiError(403, "forbidden", "this caller may not send or act on messages")

    @staticmethod
    def _record(
        caller: Caller,
        m: StoredMessage,
        events: tuple[EventRecord, ...] | None = None,
        *,
        phi: bool = False,
    ) -> MessageRecord:
        to = m.to.open() if caller.sees_masked or phi else None
        body = m.body.open() if (caller.sees_masked and caller.shows_body_length) or phi else None
        own = caller.token_id is not None and m.token_id == caller.token_id
        return MessageRecord(
            id=m.id,
            status=m.state,
            priority=m.priority,
            segments=m.segments,
            encoding=m.encoding,
            created_at=m.created_at,
            updated_at=m.updated_at,
            expires_at=m.expires_at,
            send_at=m.send_at,
            route=m.route,
            route_hint=m.route_hint,
            category=m.category,
            attempts=m.attempts,
            possible_duplicate=m.possible_duplicate,
            error_code=m.error_code,
            receipt_overdue=m.receipt_overdue,
            purpose=m.purpose,
            to_masked=caller.mask(to) if to is not None and caller.sees_masked else None,
            body_masked=mask_body(body)
            if body is not None and caller.sees_masked and caller.shows_body_length
            else None,
            reference=m.reference.open() if own and m.reference is not None else None,
            to=to if phi else None,
            body=body if phi else None,
            events=events,
        )


# Structs, not frozen dataclasses, as the two below are built for every request accepted:
# one costs a fifth as much.
class _Judged(msgspec.Struct, Generic[T], frozen=True):
    prepared: list[Prepared]
    answer: T


class _AcceptJob(msgspec.Struct, Generic[T], frozen=True):
    """One request's messages, judged with the others of its writer transaction by the
    intake's policy; `build` gives the answer for the judged messages' `Accepted`s, and
    `finish`, if set, the answer and the rows that go with it (the idempotent answer)
    instead; `extra` are the front end's own rows."""

    intake: Intake
    prepared: list[Prepared]
    now: float
    build: Callable[[list[Accepted]], T]
    finish: Callable[[list[Prepared]], tuple[list[Statement], T]] | None
    extra: Sequence[Statement]


def _judged_jobs(conn: sqlite3.Connection, jobs: list[_AcceptJob[Any]]) -> list[_Judged[Any]]:
    """Judge the messages of every request that arrived meanwhile, in order, from one
    read of what the policy needs to know of all their recipients (each sees the ones
    judged before it), then insert all their rows at once (`insert_rows`: a batch's in
    multi-row statements, else one executemany per statement). If anything fails, the
    writer runs each request alone. Written for the single send, most jobs: it runs in
    the writer for every message accepted."""
    if not jobs:
        return []
    intake = jobs[0].intake
    policy = intake.policy
    capping = policy.capping
    now = jobs[0].now
    to_indexes: list[bytes] = []
    capped: list[bytes] = []  # recipients of messages some cap applies to
    for j in jobs:  # one loop, no comprehension's frame per accept
        if j.now < now:
            now = j.now
        for p in j.prepared:
            idx = p.message.to_index
            if idx:
                to_indexes.append(idx)
                if p.purpose in capping:
                    capped.append(idx)
    view = policy.group_view(conn, to_indexes, capped, now, writer=True)
    judge, statements, insert = intake.judge, intake.statements, intake.insert_statements
    by_sql: dict[str, list[Sequence[Any]]] = {}
    outcomes: list[_Judged[Any]] = []
    for job in jobs:
        prepared = job.prepared
        if len(prepared) == 1:  # a single send
            judged = [p := judge(view, prepared[0])]
            added = statements(judged) if p.links else insert(p.message)
        else:
            judged = [judge(view, p) for p in prepared]
            added = statements(judged)
        if job.finish is None:
            answer = job.build([p.answer() for p in judged])
            if job.extra:  # a front end's own rows: few jobs
                added = [*added, *job.extra]
        else:  # an idempotent answer: few jobs
            rows, answer = job.finish(judged)
            added = [*added, *job.extra, *rows]
        for sql, params in added:
            batch = by_sql.get(sql)
            if batch is None:
                by_sql[sql] = [params]
            else:
                batch.append(params)
        outcomes.append(_Judged(judged, answer))
    for sql, batch in by_sql.items():
        insert_rows(conn, sql, batch)
    return outcomes


def _first(accepted: list[Accepted]) -> Accepted:
    return accepted[0]


def vars_of(obj: Any) -> dict[str, Any]:
    """The fields of a slotted dataclass, by name."""
    return {name: getattr(obj, name) for name in obj.__slots__}
