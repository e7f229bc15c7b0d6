"""The message store: SQLite in WAL mode, personal fields encrypted, queue on disk.

Writes go through the group-commit writer (one connection, one transaction in
flight); reads go through a pool of read-only connections (`reads.py`), each read whole
in one call, so a read that starts after a commit sees it, and in WAL mode never waits
for the writer. Every state change checks the lifecycle table inside the writer's
transaction and appends an event row in the same transaction, so a message's history
and its state never disagree.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.integrations.events import EVENT_TYPES, MESSAGE_STATUS
from gateway.lifecycle import CANCELLABLE, IllegalTransition
from gateway.links.placeholders import Minted
from gateway.links.store import token_statements
from gateway.models import STATE_VALUES, Priority, State
from gateway.store import (
    crypto,
    group_sql,
    keyring_sql,
    outbox_sql,
    receipt_deadline,
    space,
)
from gateway.store.claim_check import ClaimCheck, Held
from gateway.store.event_log import EventLog
from gateway.store.idempotency import IdempotentAnswer, StoredIdempotent
from gateway.store.message_types import ClaimedMessage as ClaimedMessage
from gateway.store.message_types import LiveMessage as LiveMessage
from gateway.store.message_types import NewMessage as NewMessage
from gateway.store.message_types import Sealed as Sealed
from gateway.store.reads import ReadPool
from gateway.store.records import Records, StoredEvent, StoredMessage
from gateway.store.schema import migrate
from gateway.store.store_inbound import InboundRows
from gateway.store.tokens_sql import TokenTable
from gateway.store.transitions import (
    CLAIM_UNANSWERED,
    UNCOUNTED,
    Transition,
    apply,
    claim_many,
    mark_sent_many,
    receipts_many,
)
from gateway.store.writer import LAZY_DELAY, GroupCommitWriter, Statement

if TYPE_CHECKING:
    from gateway.store.route_parks import RouteParks

LIVE_PAGE = 5000  # queued messages read per query at start-up
_PRIORITIES = {int(p): p for p in Priority}


class Store(InboundRows):
    def __init__(
        self,
        path: Path,
        master_key: bytes,
        *,
        synchronous: str = "FULL",
        group_commit_max: int = 2000,
        lazy_delay: float = LAZY_DELAY,
    ) -> None:
        self.path = path
        self._master = master_key
        self.writer = GroupCommitWriter(path, synchronous, group_commit_max, lazy_delay)
        self._reader: ReadPool | None = None
        self.cipher: crypto.FieldCipher | None = None
        self._root = master_key  # until `open` reads the keyring's root key
        # Set by the send policy: why a queued message may not be claimed now (an
        # opt-out since its accept), checked in the claim's own transaction.
        self.claim_check: ClaimCheck | None = None
        # The event types some outbox consumer takes (`OutboxRepo.keep_only`): an
        # accept leaves out a status row the outbox's trigger would drop anyway.
        self.outbox_types: frozenset[str] = EVENT_TYPES
        # The owner of this process's inbound marks in doubt (`inbound_doubt_sql.py`).
        self._doubt_owner = secrets.token_hex(8)

    # -- life --------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Owner-only from the first byte; SQLite gives -wal and -shm the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        await self.writer.open()
        await self.writer.call_outside_transaction(space.secure_file)  # i14-retention
        await self.writer.call_outside_transaction(migrate)
        # i13-hl7speed: statement journals (every statement that fires a trigger, e.g. a
        # notice's opt-out check) in memory, not in a temp file written page by page.
        # Only now: the one VACUUM and a migration's index build sort and copy on disk.
        await self.writer.call_outside_transaction(
            lambda conn: conn.execute("PRAGMA temp_store = MEMORY")
        )
        keys = await self.writer.run(self._load_or_create_keys)
        self._root = keys.root
        self.cipher = crypto.FieldCipher(keys.field, keys.blind)
        self._reader = ReadPool(self.path)
        await self._reader.open()

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        await self.writer.close()

    def _load_or_create_keys(self, conn: sqlite3.Connection) -> keyring_sql.Keys:
        return keyring_sql.load(conn, self._master, create=True, now=time.time())

    async def reload_keys(self) -> int:
        """Take up the keyring as it is now (a rotation or a retirement, perhaps by
        another process): new writes go under its newest field key at once. Returns
        that generation."""
        keys = await self.writer.run(
            lambda conn: keyring_sql.load(conn, self._master, create=False, now=0.0)
        )
        self._crypto.install(keys.field)
        return self._crypto.generation

    def new_field_generation(self, conn: sqlite3.Connection, now: float) -> int:
        """Add field key generation N+1 (on the writer thread); `reload_keys` makes it
        current."""
        return keyring_sql.add_field_generation(conn, self._master, now)

    async def replace_master(self, new: bytes) -> int:
        """Re-wrap every key under `new` in one transaction; this store unwraps with
        `new` from then on. The number of keys re-wrapped."""
        old = self._master
        count = await self.writer.run(lambda conn: keyring_sql.rewrap(conn, old, new))
        self._master = new
        return count

    @property
    def failing(self) -> str | None:
        """`disk_full` (or `io_error`...) while commits fail; None once one succeeds."""
        return self.writer.failure

    async def probe(self, now: float) -> None:
        """A small real write: while the store is failing, one that commits clears it."""
        await self.writer.run(
            lambda conn: space.probe(conn, self.path.parent, now), proves_room=True
        )

    @property
    def master_key(self) -> bytes:
        """The key the audit chain's and route credentials' MAC keys derive from: the
        keyring's `root`, the same across master key replacements."""
        return self._root

    @property
    def _crypto(self) -> crypto.FieldCipher:
        assert self.cipher is not None, "store is not open"
        return self.cipher

    @property
    def reader(self) -> ReadPool:
        assert self._reader is not None, "store is not open"
        return self._reader

    @property
    def records(self) -> Records:
        """Typed reads of messages and inbound messages (`records.py`)."""
        return Records(self.reader, self._crypto)

    @property
    def event_log(self) -> EventLog:
        """`message_events` by position (`event_log.py`)."""
        return EventLog(self.reader)

    @property
    def api_tokens(self) -> TokenTable:
        """The API tokens' table (`tokens_sql.py`)."""
        return TokenTable(self.reader, self.writer)

    # -- intake ------------------------------------------------------------------------

    def insert_statements(self, m: NewMessage) -> list[Statement]:
        """The row one accepted message adds. Its creation is its first event, implied
        by the row (`Records.events`), a policy's hold or block with its reason too;
        those two also add their `message.status` outbox row, if some consumer takes it."""
        # `m.state` written out, and the cipher only if needed: no property call per row
        # (the writer runs this for every message of a batch in its thread).
        send_at = m.send_at
        if m.blocked is not None:
            state, due = State.BLOCKED, m.created_at
        elif send_at is not None and send_at > m.created_at:
            state, due = State.SCHEDULED, send_at
        else:
            state, due = State.QUEUED, m.created_at
        to_ct, body_ct, reference_ct, callback_ct = m.sealed or self.seal(
            m.id, m.to, m.body, m.reference, m.callback_url
        )
        rows: list[Statement] = [
            (
                "INSERT INTO messages (id, token_id, priority, state, to_ct, to_index, body_ct,"
                " reference_ct, callback_ct, encoding, segments, route_hint, category,"
                " created_at, updated_at, send_at, expires_at, due_at, purpose, error_code,"
                " quiet_override, held_for, uncounted)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    m.id,
                    m.token_id,
                    int(m.priority),
                    STATE_VALUES[state],
                    to_ct,
                    m.to_index or self._crypto.blind_index(m.to),
                    body_ct,
                    reference_ct,
                    callback_ct,
                    m.encoding,
                    m.segments,
                    m.route_hint,
                    m.category,
                    m.created_at,
                    m.created_at,
                    m.send_at,
                    m.expires_at,
                    due,
                    m.purpose,
                    m.blocked,
                    int(m.quiet_override),
                    m.held_for,
                    int(state in UNCOUNTED),
                ),
            ),
        ]
        reason = m.blocked or m.held_for
        if reason is not None and MESSAGE_STATUS in self.outbox_types:
            status = (MESSAGE_STATUS, m.created_at, m.id, None, state.value, reason, 0)
            rows.append((outbox_sql.INSERT_ROW, status))
        return rows

    def seal(
        self,
        message_id: str,
        to: str,
        body: str,
        reference: str | None,
        callback_url: str | None,
    ) -> Sealed:
        """A message's personal fields encrypted, bound to its id and column."""
        if reference is None and callback_url is None:  # most sends
            cipher = self.cipher
            assert cipher is not None, "store is not open"
            to_ct, body_ct = cipher.encrypt_to_and_body(message_id, to, body)
            return to_ct, body_ct, None, None
        fields = [(to, "to"), (body, "body")]
        if reference is not None:
            fields.append((reference, "reference"))
        if callback_url is not None:
            fields.append((callback_url, "callback"))
        sealed = self._crypto.encrypt_row(message_id, fields)
        return (
            sealed[0],
            sealed[1],
            None if reference is None else sealed[2],
            None if callback_url is None else sealed[-1],
        )

    @staticmethod
    def idempotency_statement(
        token_id: str,
        key_hash: bytes,
        request_hash: bytes,
        status: int,
        response: bytes,
        now: float,
    ) -> Statement:
        return (
            "INSERT INTO idempotency VALUES (?,?,?,?,?,?)",
            (token_id, key_hash, request_hash, status, response, now),
        )

    async def prune_idempotency(self, before: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM idempotency WHERE created_at < ?", (before,)).rowcount

        return await self.writer.run(job)

    async def insert(self, statements: list[Statement]) -> None:
        await self.writer.insert(statements)

    async def accept(
        self,
        messages: Sequence[NewMessage],
        answer: IdempotentAnswer | None = None,
        links: Sequence[Minted] = (),
        extra: Sequence[Statement] = (),
    ) -> None:
        """Commit accepted messages, their short links' tokens, the answer kept under
        their Idempotency-Key and `extra` rows in one transaction (`QueueStore.accept`)."""
        rows = [s for m in messages for s in self.insert_statements(m)]
        rows.extend(token_statements(links))
        rows.extend(extra)
        if answer is not None:
            rows.append(
                self.idempotency_statement(
                    answer.token_id,
                    answer.key_hash,
                    answer.request_hash,
                    answer.status,
                    answer.response,
                    answer.at,
                )
            )
        await self.writer.insert(rows)

    async def find_idempotent(self, token_id: str, key_hash: bytes) -> StoredIdempotent | None:
        cur = await self.reader.execute(
            "SELECT request_hash, status, response FROM idempotency"
            " WHERE token_id = ? AND key_hash = ?",
            (token_id, key_hash),
        )
        row: sqlite3.Row | None = await cur.fetchone()
        if row is None:
            return None
        return StoredIdempotent(bytes(row[0]), int(row[1]), bytes(row[2]))

    def parks(self) -> RouteParks:
        """Routes parked for refused credentials, kept in this store."""
        from gateway.store.route_parks import RouteParks  # here: route_parks imports Store

        return RouteParks(self)

    # -- queue -------------------------------------------------------------------------

    async def recover_in_flight(self, now: float) -> int:
        """Return every `sending` row to `queued` as a possible duplicate (after a crash)."""

        def job(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute("SELECT id FROM messages WHERE state = 'sending'")]
            for message_id in ids:
                apply(
                    conn,
                    Transition(
                        message_id,
                        State.QUEUED,
                        possible_duplicate=True,
                        error_code="gateway:restart",
                        due_at=now,
                    ),
                    now,
                )
            return len(ids)

        return await self.writer.run(job)

    async def live_messages(
        self, *, numbers: bool = True, scheduled_until: float = math.inf
    ) -> AsyncIterator[LiveMessage]:
        """Every queued and scheduled message, a page at a time (a queue of a hundred
        thousand is never held twice over as rows and records). `numbers=False`: `to`
        left empty, not decrypted, for a router that routes by no prefix.
        `scheduled_until`: the scheduled ones due after it are left out, for
        `scheduled_later` to read once the gateway serves (issue 16: start-up)."""
        async for m in self._live(State.QUEUED, -math.inf, math.inf, numbers):
            yield m
        async for m in self._live(State.SCHEDULED, -math.inf, scheduled_until, numbers):
            yield m

    def scheduled_later(self, after: float, *, numbers: bool = True) -> AsyncIterator[LiveMessage]:
        """The scheduled messages due after `after`: what `live_messages` left out."""
        return self._live(State.SCHEDULED, after, math.inf, numbers)

    async def _live(
        self, state: State, due_after: float, due_until: float, numbers: bool
    ) -> AsyncIterator[LiveMessage]:
        c = self._crypto
        after: tuple[float, str] = (-math.inf, "")  # one state a walk: its index's order
        while True:
            rows = await self.reader.all(
                "SELECT id, priority, to_ct, due_at, expires_at, attempts, route_hint,"
                " created_at FROM messages WHERE state = ? AND due_at > ? AND due_at <= ?"
                " AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
                (state.value, due_after, due_until, *after, LIVE_PAGE),
            )
            for r in rows:
                yield LiveMessage(
                    r[0],
                    _PRIORITIES[r[1]],
                    state,
                    c.decrypt(r[2], r[0], "to") if numbers else "",
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                )
            if len(rows) < LIVE_PAGE:
                return
            after = (rows[-1][7], rows[-1][0])

    async def claim(self, message_id: str, route: str, now: float) -> ClaimedMessage | Held | None:
        """Mark a queued message `sending` (durably) and return what the driver needs.

        None if it is no longer queued (cancelled or expired meanwhile), or if the
        policy's claim check refused it (it is then `blocked`, in the same transaction);
        `Held` if the policy keeps it waiting (outside its sending window).
        """
        item = (message_id, route, now, self.claim_check)
        return self._claimed(message_id, await self.writer.run_grouped(claim_many, item))

    async def claim_group(
        self, message_ids: Sequence[str], route: str, now: float
    ) -> list[ClaimedMessage | Held | Exception | None]:
        """`claim` for a dispatched group in one writer job (all `sending` in the same
        commit); an exception in place of a message whose claim failed alone."""
        check = self.claim_check
        items = [(m, route, now, check) for m in message_ids]
        rows = await self.writer.run(lambda conn: group_sql.grouped(conn, claim_many, items))
        return [
            row if isinstance(row, Exception) else self._claimed(m, row)
            for m, row in zip(message_ids, rows, strict=True)
        ]

    def claim_group_soon(
        self, message_ids: Sequence[str], route: str, now: float
    ) -> asyncio.Future[list[ClaimedMessage | Held | Exception | None]]:
        """`claim_group` handed to the writer now, without a coroutine step between: it
        joins the transaction of what was handed to the writer just before (an accept:
        `Scheduler.claim_with_accept`), and runs after it there. Decrypted in the job,
        so the result is final when the commit resolves the accept's future."""
        check = self.claim_check
        items = [(m, route, now, check) for m in message_ids]

        def job(conn: sqlite3.Connection) -> list[ClaimedMessage | Held | Exception | None]:
            rows = group_sql.grouped(conn, claim_many, items)
            return [
                row if isinstance(row, Exception) else self._claimed(m, row)
                for m, row in zip(message_ids, rows, strict=True)
            ]

        return self.writer.run(job)

    async def claim_due(self, route: str, want: int, now: float) -> list[ClaimedMessage]:
        """`claim_group` for the first `want` due, unexpired queued messages in class,
        due-time and id order, chosen in the same writer job that claims them."""
        check = self.claim_check
        rows = await self.writer.run(lambda conn: group_sql.due(conn, route, want, now, check))
        claimed = [self._claimed(m, row) for m, row in rows]
        return [c for c in claimed if isinstance(c, ClaimedMessage)]

    async def record_outcomes(
        self, sent: list[group_sql.SentItem], changes: list[tuple[Transition, float]]
    ) -> tuple[list[State | Exception], list[bool | Exception]]:
        """A dispatched group's answers in one writer job (see `group_sql.outcomes`)."""
        # Lazy when every message was accepted (each safe as `sending`, see `mark_sent`);
        # a retry or a failure commits now, as the scheduler acts on it.
        return await self.writer.run(
            lambda conn: group_sql.outcomes(conn, sent, changes), lazy=not changes
        )

    async def give_back(self, claims: Sequence[tuple[str, int]], route: str, now: float) -> int:
        """A claim that raised here was rolled back, or committed and then failed in this
        process (opening a ciphertext): either way nothing else holds these rows."""

        def job(conn: sqlite3.Connection) -> int:
            given = 0
            for message_id, attempts in claims:
                back = Transition(
                    message_id,
                    State.QUEUED,
                    route=route,
                    error_code=CLAIM_UNANSWERED,
                    attempts=attempts,
                )
                try:
                    apply(conn, back, now, only_from=State.SENDING)
                except (IllegalTransition, LookupError):
                    continue  # never claimed: still queued (or since finished elsewhere)
                given += 1
            return given

        return await self.writer.run(job)

    def _claimed(self, message_id: str, row: Any) -> ClaimedMessage | Held | None:
        if row is None or isinstance(row, Held):
            return row
        c = self._crypto
        return ClaimedMessage(
            message_id,
            c.decrypt(row[0], message_id, "to"),
            c.decrypt(row[1], message_id, "body"),
            row[2],
            _PRIORITIES[row[3]],  # not Priority(): an enum call per claimed message
            row[4],
            bool(row[5]),
        )

    async def transition(self, t: Transition, now: float) -> None:
        """Apply one state change; raises `IllegalTransition` and changes nothing if illegal."""
        await self.writer.run(lambda conn: apply(conn, t, now))

    async def transition_many(self, ts: Sequence[Transition], now: float) -> list[bool]:
        """Apply several changes in one transaction; each True if it was legal and done."""

        def job(conn: sqlite3.Connection) -> list[bool]:
            done = []
            for t in ts:
                try:
                    apply(conn, t, now)
                    done.append(True)
                except IllegalTransition:
                    done.append(False)
            return done

        return await self.writer.run(job)

    async def cancel(
        self, message_id: str, now: float, *, owner: str | None = None
    ) -> State | None:
        """Cancel a message not yet sending; returns its state after, None if unknown
        (or, with `owner`, if that token did not create it)."""
        found = await self.withdraw(message_id, now, owner=owner)
        return None if found is None else found[0]

    async def withdraw(
        self, message_id: str, now: float, *, owner: str | None = None
    ) -> tuple[State, bool] | None:
        """`cancel`, also saying whether this call was the one that cancelled it."""

        def job(conn: sqlite3.Connection) -> tuple[State, bool] | None:
            row = conn.execute(
                "SELECT state, token_id FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None or (owner is not None and row[1] != owner):
                return None
            if State(row[0]) in CANCELLABLE:
                apply(conn, Transition(message_id, State.CANCELLED), now)
                return State.CANCELLED, True
            return State(row[0]), False

        return await self.writer.run(job)

    async def mark_sent(
        self, message_id: str, route: str, carrier_ids: Sequence[str], now: float
    ) -> State:
        """Record the carrier's acceptance, then any receipts that arrived before it."""
        # Lazy: the message is safe as `sending` (claimed and committed before the
        # submit); a crash before this commits resends it flagged, like any in flight.
        state: State = await self.writer.run_grouped(
            mark_sent_many, (message_id, route, tuple(carrier_ids), now), lazy=True
        )
        return state

    async def sweep_receipts(
        self, sent_before: float, wanting_receipts: Collection[int], now: float, limit: int
    ) -> receipt_deadline.Sweep:
        """Flag `sent` messages whose receipt is overdue (see `receipt_deadline.py`)."""
        return await self.writer.run(
            lambda conn: receipt_deadline.sweep(conn, sent_before, wanting_receipts, now, limit)
        )

    async def apply_receipt(
        self,
        route: str,
        carrier_id: str,
        state: str,
        error_code: str | None,
        now: float,
        alternate_ids: Sequence[str] = (),
    ) -> tuple[str, State] | None:
        """Record a receipt for one part; (message id, new state) if the message changed.

        A receipt for an id not (yet) known is kept in `early_receipts` and applied when
        the submit's answer is recorded: receipts can overtake `submit_sm_resp`.
        """
        item = (route, carrier_id, state, error_code, now, tuple(alternate_ids))
        # Lazy: the message is safe as `sent`, and the carrier keeps a receipt until it is
        # answered, which is only after this commits; so it rides the next commit (at most
        # `lazy_commit_ms` later) instead of paying one of its own.
        outcome: tuple[str, State] | None = await self.writer.run_grouped(
            receipts_many, item, lazy=True
        )
        return outcome

    async def apply_receipts(
        self, route: str, receipts: Sequence[tuple[str, str, str | None, Sequence[str]]], now: float
    ) -> list[tuple[str, State] | Exception | None]:
        """`apply_receipt` for (carrier id, state, error code, alternate ids) of a
        group, in one writer job; an exception in place of a receipt that failed alone."""
        items = [(route, cid, state, code, now, tuple(alt)) for cid, state, code, alt in receipts]
        return await self.writer.run(
            lambda conn: group_sql.grouped(conn, receipts_many, items), lazy=True
        )

    # -- reads -------------------------------------------------------------------------

    async def events(self, message_id: str) -> list[StoredEvent]:
        """Every state of a message in order, its creation first."""
        return await self.records.events(message_id)

    async def message(self, message_id: str) -> StoredMessage | None:
        return await self.records.message(message_id)

    async def sending_counts(self) -> dict[int, int]:
        """Messages `sending`, by priority (the scheduler counts those waiting itself):
        reads the few in flight, not a queue of thousands."""
        cur = await self.reader.execute(
            "SELECT priority, count(*) FROM messages WHERE state = 'sending' GROUP BY priority"
        )
        return {int(r[0]): int(r[1]) for r in await cur.fetchall()}

    async def possible_duplicates(self) -> int:
        cur = await self.reader.execute(
            # Named: else the planner may take `messages_state` and read every
            # waiting row.
            "SELECT count(*) FROM messages INDEXED BY messages_possible_duplicate"
            " WHERE possible_duplicate = 1 AND state IN ('queued', 'sending')"
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    def encrypt(self, value: str, row_id: str, column: str) -> bytes:
        return self._crypto.encrypt(value, row_id, column)

    def decrypt(self, blob: bytes, row_id: str, column: str) -> str:
        return self._crypto.decrypt(blob, row_id, column)

    def blind_index(self, e164: str) -> bytes:
        cipher = self.cipher  # not `_crypto`: a property call on every accept
        assert cipher is not None, "store is not open"
        return cipher.blind_index(e164)

    # -- admin panel reads (gateway/usecases/status.py) ---------------------------------
    # Read-only, through the read pool. Kept together to ease merging.

    async def sending_by_route(self) -> dict[str, int]:
        cur = await self.reader.execute(
            "SELECT route, count(*) FROM messages WHERE state = 'sending' GROUP BY route"
        )
        return {str(r[0]): int(r[1]) for r in await cur.fetchall()}

    # -- end of admin panel reads ---------------------------------------------------------
