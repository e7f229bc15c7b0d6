"""The send path's store (`gateway/store/queue_store.QueueStore`) on the shared
PostgreSQL queue: what the SQLite `Store` does for one node, for several.

Personal fields are encrypted exactly as the SQLite store does (`FieldCipher`, bound to
the message id and column), so a migrated ciphertext decrypts on either. A claim is one
transaction: the incarnation's live lease (`nodes.lock_live`, the server half of
fencing), the shared opt-out list (an opt-out committed on any node blocks the message
here), then `queued -> sending` with owner, incarnation and a new epoch, for rows no
other claimer holds (`FOR UPDATE SKIP LOCKED`). This node remembers each claim's epoch
and hands it back with the outcome (`outcomes.finish`): an outcome whose claim was lost
meanwhile is kept as a late outcome, never applied. Recovery takes back every lapsed
incarnation's `sending` rows, this node's previous ones included. Outcomes the database
could not take for the group sender's whole retry window go to the node's local journal
(`outcome_journal.py`) under their claim, and are finished from there once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import groupby
from typing import Any

import psycopg
import structlog

from gateway.cluster import (
    accept_phases,
    account_takes,
    buckets,
    critical_lane,
    queue_sql,
    reads,
    seal_guard,
)
from gateway.cluster.consent_claim import ClusterClaimCheck
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, lock_live, recover_expired
from gateway.cluster.outcome_journal import OutcomeJournal
from gateway.cluster.outcomes import claimed_outcomes, finish
from gateway.cluster.parks import ClusterParks
from gateway.cluster.queue_receipts import ClusterReceipts
from gateway.cluster.queue_sql import Conn
from gateway.cluster.shared_keys import KeyringWatch
from gateway.links.placeholders import Minted
from gateway.logs import exception_summary
from gateway.models import Priority, State
from gateway.store import crypto
from gateway.store.claim_check import ACCOUNT_BUSY, Held
from gateway.store.crypto import FieldCipher
from gateway.store.group_sql import SentItem
from gateway.store.idempotency import IdempotentAnswer, StoredIdempotent
from gateway.store.records import StoredEvent, StoredMessage
from gateway.store.store import LIVE_PAGE, ClaimedMessage, LiveMessage, NewMessage, Sealed
from gateway.store.transitions import CLAIM_UNANSWERED, Transition
from gateway.store.writer import Statement

log = structlog.get_logger("smsgw.cluster")

OPTED_OUT = "consent:opted_out"
_PRIORITIES = {int(p): p for p in Priority}


class LateOutcome(Exception):
    """An outcome whose claim was lost: kept in `late_outcomes`, not applied."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"claim of {message_id} was lost; outcome kept as late")
        self.message_id = message_id


class ClusterQueue(ClusterReceipts):
    """`QueueStore` on PostgreSQL for one node. `me` is this node's incarnation now
    (`Membership.me`: it changes when the node rejoins after a lost lease)."""

    def __init__(self, pool: Pool, cipher: FieldCipher, me: Callable[[], Incarnation]) -> None:
        self._pool = pool
        self.pool = pool
        self._cipher = cipher
        self._me = me
        # Each message this node claimed and has not finished: its claim (the
        # incarnation then, and the epoch).
        self._claims: dict[str, tuple[Incarnation, int]] = {}
        self.late = 0  # outcomes recorded after their claim was lost (a metric)
        # Seconds each claim's transaction took, connection wait included (a metric's
        # `observe`, set by `ClusterNode.register_metrics`; S9's "claim p99").
        self.claim_observer: Callable[[float], None] | None = None
        self.master_key = b""  # set by the wiring: route credentials' MAC key derives from it
        self.keys: KeyringWatch | None = None  # set by the wiring: takes up a rotation
        # Route -> carrier account, and this node's takes from each (`account_takes.py`).
        self.takes = account_takes.AccountTakes()
        self.accounts, self.grants, self.starved = (
            self.takes.accounts,
            self.takes.grants,
            self.takes.starved,
        )
        # Set by the wiring with `[consent] enabled`: the send policy's check in each claim.
        self.claim_check: ClusterClaimCheck | None = None
        # Set by the wiring: outcomes past the retry window wait there for the database.
        self.journal: OutcomeJournal | None = None
        # Set by the wiring: retries a replay queued again (the schedulers take them in).
        self.on_requeued: Callable[[], None] | None = None
        # A claim to run in the next accept's transaction (`claim_group_soon`).
        self._soon: tuple[list[str], str, float, asyncio.Future[Any]] | None = None
        # Set by the wiring: connections kept for critical accepts (`critical_lane.py`).
        self.lane: Pool | None = None

    # -- accept ------------------------------------------------------------------------

    def seal(
        self,
        message_id: str,
        to: str,
        body: str,
        reference: str | None,
        callback_url: str | None,
    ) -> Sealed:
        fields = [(to, "to"), (body, "body")]
        if reference is not None:
            fields.append((reference, "reference"))
        if callback_url is not None:
            fields.append((callback_url, "callback"))
        sealed = self._cipher.encrypt_row(message_id, fields)
        return (
            sealed[0],
            sealed[1],
            None if reference is None else sealed[2],
            None if callback_url is None else sealed[-1],
        )

    def blind_index(self, e164: str) -> bytes:
        return self._cipher.blind_index(e164)

    @property
    def cipher(self) -> FieldCipher:
        return self._cipher

    def decrypt(self, blob: bytes, row_id: str, column: str) -> str:
        return self._cipher.decrypt(blob, row_id, column)

    def _row(self, m: NewMessage) -> tuple[Any, ...]:
        state = m.state
        due = m.send_at if state is State.SCHEDULED and m.send_at is not None else m.created_at
        to_ct, body_ct, reference_ct, callback_ct = m.sealed or self.seal(
            m.id, m.to, m.body, m.reference, m.callback_url
        )
        return (
            m.id,
            m.token_id,
            int(m.priority),
            state.value,
            m.route_hint or "",
            to_ct,
            m.to_index or self.blind_index(m.to),
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
            m.quiet_override,
            m.held_for,
        )

    async def accept(
        self,
        messages: Sequence[NewMessage],
        answer: IdempotentAnswer | None = None,
        links: Sequence[Minted] = (),
        extra: Sequence[Statement] = (),
    ) -> None:
        """The messages, their creation events, their short links' tokens, the
        idempotent answer and `extra` rows (a Kannel dlr-url: `cluster/dlr_wishes.py`),
        in one transaction. A key answered meanwhile (by another node too) raises the
        primary key's `UniqueViolation`: nothing of this accept is kept. A claim handed
        over just before (`claim_group_soon`) runs in the same transaction, after the
        insert. A value sealed under a retired key raises `KeyRetired` (`seal_guard`)."""
        try:
            await self._accept(messages, answer, links, extra)
        except psycopg.errors.CheckViolation as e:
            await seal_guard.refused(e, self.keys)
            raise

    async def _accept(
        self,
        messages: Sequence[NewMessage],
        answer: IdempotentAnswer | None,
        links: Sequence[Minted],
        extra: Sequence[Statement],
    ) -> None:
        soon, self._soon = self._soon, None
        pool = critical_lane.for_accept(self._pool, self.lane, messages)
        if soon is None:
            async with pool.connection() as conn, conn.transaction():
                await self.insert_within(conn, messages, answer, links, extra)
            return
        ids, route, now, future = soon
        me = self._me()
        account = self.accounts.get(route)
        claimed = None
        busy = False
        phases = accept_phases.start()
        try:
            async with pool.connection() as conn:
                if phases is not None:
                    phases.mark("conn")
                grant = None
                if account is not None:  # never waits on the account's row (S6)
                    critical = any(m.priority is Priority.CRITICAL for m in messages if m.id in ids)
                    grant, busy = await self.takes.take_for_accept(
                        conn, account, me, len(ids), critical, future
                    )
                    if phases is not None:
                        phases.mark("busy" if busy else "take")
                committed = False
                try:
                    async with conn.transaction():
                        await self.insert_within(conn, messages, answer, links, extra)
                        if phases is not None:
                            phases.mark("insert")
                        if not (busy or future.done()):
                            # A savepoint: a claim that fails leaves the accept whole.
                            try:
                                async with conn.transaction():
                                    claimed = await self._claim_in(
                                        conn, me, ids, route, now, None, grant
                                    )
                            except Exception as e:
                                future.set_exception(e)
                            if phases is not None:
                                phases.mark("claim")
                    committed = True
                    if phases is not None:
                        phases.mark("commit")
                finally:
                    wait = 0.0
                    if grant is not None and account is not None:
                        got, asked = 0, len(ids)  # a failed accept claimed none: all back
                        if committed and claimed is not None:
                            got, asked = len(claimed[0]), claimed[4]
                        wait = await self.takes.settle(conn, me, account, grant, got, asked)
                        if phases is not None:
                            phases.mark("settle")
        except BaseException:
            if not future.done():
                # Committed or not is unknown here (a COMMIT whose answer was lost): the
                # dispatcher gives the claim back either way (`GroupSender._give_back`).
                future.set_exception(RuntimeError("the accept's claim has no answer"))
            raise
        if busy:  # left to the next round, now that the accept committed
            future.set_result([Held(now, ACCOUNT_BUSY)] * len(ids))
        if future.done():
            if phases is not None:
                phases.write()
            return
        assert claimed is not None
        try:  # committed: the accept stands whatever happens to the opening
            found = await self._opened(claimed[0], claimed[1], me)
        except Exception as e:  # the row waits `sending` for the lease's recovery
            future.set_exception(e)
            return
        future.set_result(account_takes.answers(ids, found, claimed[3], wait, now))
        if phases is not None:
            phases.mark("opened")
            phases.write()

    def claim_group_soon(
        self, message_ids: Sequence[str], route: str, now: float
    ) -> asyncio.Future[list[ClaimedMessage | Held | Exception | None]]:
        """`claim_group` in the transaction of the accept called next, with no step
        between (`Scheduler.claim_with_accept`), so `queued` and `sending` commit
        together: one commit and fsync instead of two, and no wake-up of the scheduler
        between them (S6). Resolved once that accept committed (or failed)."""
        future: asyncio.Future[list[ClaimedMessage | Held | Exception | None]]
        future = asyncio.get_running_loop().create_future()
        self._soon = (list(message_ids), route, now, future)
        return future

    async def insert_within(
        self,
        conn: Conn,
        messages: Sequence[NewMessage],
        answer: IdempotentAnswer | None,
        links: Sequence[Minted] = (),
        extra: Sequence[Statement] = (),
    ) -> None:
        """`accept`'s rows in the caller's transaction (the judged accept's)."""
        me = self._me()
        async with conn.cursor() as cur:
            # Held by this node's scheduler (`Scheduler.add`); others adopt it only once
            # this incarnation is gone, or it gives the row up (`adoption.release`).
            await cur.executemany(
                queue_sql.INSERT_MESSAGE, [(*self._row(m), me.incarnation) for m in messages]
            )
            await cur.executemany(
                queue_sql.INSERT_EVENT,
                [
                    (
                        m.id,
                        m.created_at,
                        m.state.value,
                        None,
                        None,
                        m.blocked or m.held_for,
                        0,
                        me.node_id,
                        me.incarnation,
                    )
                    for m in messages
                ],
            )
            if links:
                await cur.executemany(
                    queue_sql.INSERT_MINTED,
                    [
                        (m.token_hash, m.link_id, m.message_id, m.created_at, m.expires_at)
                        for m in links
                    ],
                )
        if answer is not None:
            await conn.execute(
                "INSERT INTO idempotency VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    answer.token_id,
                    answer.key_hash,
                    answer.request_hash,
                    answer.status,
                    answer.response,
                    answer.at,
                ),
            )
        for sql, params in extra:  # after the messages: a row may refer to its message
            await conn.execute(sql.encode(), params)

    async def find_idempotent(self, token_id: str, key_hash: bytes) -> StoredIdempotent | None:
        row = await self._one(
            "SELECT request_hash, status, response FROM idempotency"
            " WHERE token_id = %s AND key_hash = %s",
            (token_id, key_hash),
        )
        return None if row is None else StoredIdempotent(bytes(row[0]), int(row[1]), bytes(row[2]))

    async def prune_idempotency(self, before: float) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("DELETE FROM idempotency WHERE created_at < %s", (before,))
            return cur.rowcount

    async def withdraw(
        self, message_id: str, now: float, *, owner: str | None = None
    ) -> tuple[State, bool] | None:
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT state, token_id FROM messages WHERE id = %s FOR UPDATE", (message_id,)
                )
            ).fetchone()
            if row is None or (owner is not None and row[1] != owner):
                return None
            state = State(row[0])
            if state in (State.QUEUED, State.SCHEDULED):
                await queue_sql.apply(
                    conn, Transition(message_id, State.CANCELLED), now, self._me()
                )
                return State.CANCELLED, True
            return state, False

    async def events(self, message_id: str) -> list[StoredEvent]:
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT at, state, route, carrier_id, error_code, attempt FROM message_events"
                    " WHERE message_id = %s ORDER BY seq",
                    (message_id,),
                )
            ).fetchall()
        return [StoredEvent(*r) for r in rows]

    async def message(self, message_id: str) -> StoredMessage | None:
        row = await self._one(
            f"SELECT {reads.COLUMNS} FROM messages WHERE id = %s",  # noqa: S608 - fixed columns
            (message_id,),
        )
        return None if row is None else reads.stored_message(self._cipher, row)

    # -- consent -----------------------------------------------------------------------

    async def opt_out(self, contact_idx: bytes, scope: str, now: float, source: str) -> None:
        """Record an opt-out on the shared list: every node's next claim sees it."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO opt_outs VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (contact_idx, scope, now, source),
            )

    async def opt_in(self, contact_idx: bytes, scope: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM opt_outs WHERE contact_idx = %s AND scope = %s", (contact_idx, scope)
            )

    # -- queue -------------------------------------------------------------------------

    async def recover_in_flight(self, now: float) -> int:
        """Take back every lapsed incarnation's `sending` rows (flagged as possible
        duplicates); this node's previous incarnations lapsed when it registered."""
        async with self._pool.connection() as conn:
            recovered = await recover_expired(conn, self._me())
        return sum(r.requeued for r in recovered)

    async def live_messages(self, *, numbers: bool = True) -> AsyncIterator[LiveMessage]:
        for state in (State.QUEUED, State.SCHEDULED):
            after = ""
            while True:
                async with self._pool.connection() as conn:
                    rows = await (
                        await conn.execute(
                            "SELECT id, priority, to_ct, due_at, expires_at, attempts,"
                            " route_hint FROM messages WHERE state = %s AND id > %s"
                            " ORDER BY id LIMIT %s",
                            (state.value, after, LIVE_PAGE),
                        )
                    ).fetchall()
                for r in rows:
                    yield LiveMessage(
                        r[0],
                        _PRIORITIES[r[1]],
                        state,
                        self._cipher.decrypt(bytes(r[2]), r[0], "to") if numbers else "",
                        r[3],
                        r[4],
                        r[5],
                        r[6],
                    )
                if len(rows) < LIVE_PAGE:
                    break
                after = rows[-1][0]

    async def claim_group(
        self, message_ids: Sequence[str], route: str, now: float
    ) -> list[ClaimedMessage | Held | Exception | None]:
        """`queued -> sending` for those of `message_ids` still queued, unexpired and not
        held by another claimer, in one transaction; None for the others (a recipient
        who opted out: now `blocked`). Raises `LeaseLost` once this node may not claim."""
        ids = list(message_ids)
        found, _, short, wait = await self._claim(ids, route, now, None)
        return account_takes.answers(ids, found, short, wait, now)

    async def claim_due(self, route: str, want: int, now: float) -> list[ClaimedMessage]:
        """The first `want` due, unexpired queued messages no other claimer holds, in
        class, due-time and id order, claimed in the same transaction."""
        if want < 1:
            return []
        found, order, _, _ = await self._claim([], route, now, want)
        return [c for i in order if isinstance(c := found.get(i), ClaimedMessage)]

    async def _claim(
        self, ids: list[str], route: str, now: float, want: int | None
    ) -> tuple[dict[str, ClaimedMessage | Held | str], list[str], set[str], float]:
        """Claim `ids`, or with `want` the first due ones: the claims (and the claim
        check's verdicts: held, or a reason they were blocked), the ids looked at in
        their order, those left for want of a rate account's tokens, and the seconds
        until its next token."""
        me = self._me()
        started = time.perf_counter()
        account = self.accounts.get(route)
        async with contextlib.AsyncExitStack() as stack:
            grant = None
            if account is None:
                conn = await stack.enter_async_context(self._pool.connection())
            else:  # the connection once the account's row gave the tokens (S6)
                conn, grant = await stack.enter_async_context(
                    self.takes.claim_turn(
                        self._pool, account, me, want or max(1, len(ids)), ids or None
                    )
                )
            got, asked = 0, want or len(ids)  # none claimed if the claim fails: all back
            try:
                async with conn.transaction():
                    rows, judged, ids, short, asked = await self._claim_in(
                        conn, me, ids, route, now, want, grant
                    )
                got = len(rows)
            finally:
                wait = 0.0
                if grant is not None and account is not None:
                    wait = await self.takes.settle(conn, me, account, grant, got, asked)
        if self.claim_observer is not None:
            self.claim_observer(time.perf_counter() - started)
        return await self._opened(rows, judged, me), ids, short, wait

    async def _claim_in(
        self,
        conn: Conn,
        me: Incarnation,
        ids: list[str],
        route: str,
        now: float,
        want: int | None,
        grant: buckets.Grant | None,
    ) -> tuple[list[Any], dict[str, Held | str], list[str], set[str], int]:
        """`_claim`'s statements in the caller's transaction, with the account's tokens
        taken before (`grant`; None: no account): the rows claimed, the claim check's
        verdicts, the ids looked at, those left for want of tokens, and how many it would
        have claimed (what it asked the account for, for `_settle`)."""
        short = set[str]()
        await lock_live(conn, me)
        if want is not None:
            n = want if grant is None else grant.n
            due = await (await conn.execute(queue_sql.CLAIM_DUE, {"now": now, "n": n})).fetchall()
            ids = [r[0] for r in due]
        params = {"ids": ids, "route": route, "now": now, "node": me.node_id}
        opted = await (await conn.execute(queue_sql.OPTED_OUT_ROWS, params)).fetchall()
        for (message_id,) in opted:
            blocked = Transition(message_id, State.BLOCKED, route=route, error_code=OPTED_OUT)
            await queue_sql.apply(conn, blocked, now, me)
        judged: dict[str, Held | str] = {}
        if self.claim_check is not None:
            judged = await self.claim_check.apply(conn, ids, route, now, me)
        blocked_ids = {r[0] for r in opted}
        candidates = [i for i in ids if i not in judged and i not in blocked_ids]
        params["ids"] = candidates
        if grant is not None and want is None:  # the first as many as there are tokens
            params["ids"], short = candidates[: grant.n], set(candidates[grant.n :])
        rows = await (
            await conn.execute(queue_sql.CLAIM_IDS, {**params, "inc": me.incarnation})
        ).fetchall()
        return rows, judged, ids, short, want or len(candidates)

    async def _opened(
        self, rows: list[Any], judged: dict[str, Held | str], me: Incarnation
    ) -> dict[str, ClaimedMessage | Held | str]:
        """Committed claims, decrypted and remembered with their epochs, and the claim
        check's verdicts."""
        found: dict[str, ClaimedMessage | Held | str] = dict(judged)
        c = self._cipher
        if self.keys is not None and any(
            crypto.header_generation(bytes(r[2])) not in c.generations for r in rows
        ):  # sealed by a rotation this node has not taken up yet: now, before opening
            await self.keys.check()
        for r in rows:
            message_id = r[0]
            self._claims[message_id] = (me, int(r[1]))
            found[message_id] = ClaimedMessage(
                message_id,
                c.decrypt(bytes(r[2]), message_id, "to"),
                c.decrypt(bytes(r[3]), message_id, "body"),
                r[4],
                Priority(r[5]),
                r[6],
                bool(r[7]),
            )
        return found

    async def record_outcomes(
        self, sent: list[SentItem], changes: list[tuple[Transition, float]]
    ) -> tuple[list[State | Exception], list[bool | Exception]]:
        """A group's answers in one transaction, each applied only if its claim still
        holds (else kept as a late outcome: `LateOutcome` / False in its place); a sent
        message's receipts that overtook the answer are applied after it. Then, if
        the journal holds outcomes of an earlier outage, they are replayed."""
        claimed = claimed_outcomes(sent, changes, self._claims, self._me())
        if not claimed:
            return [], []
        now = max([s[3] for s in sent] + [n for _, n in changes])
        states: list[State | Exception] = []
        applied: set[str] = set()
        late = 0
        async with self._pool.connection() as conn, conn.transaction():
            await queue_sql.lock_carrier_ids(conn, [(r, c) for _, r, cids, _ in sent for c in cids])
            # Claims made under an earlier incarnation (this node rejoined meanwhile)
            # are finished under theirs.
            for me, same in groupby(claimed, key=lambda c: c[0]):
                done = await finish(conn, me, [o for _, o in same], now)
                applied.update(done.applied)
                late += len(done.late)
            me = self._me()
            for message_id, route, cids, _ in sent:
                if message_id not in applied:
                    states.append(LateOutcome(message_id))
                    continue
                after = await queue_sql.early_receipts(conn, route, tuple(cids), now, me)
                states.append(after or State.SENT)
        self.late += late
        if late:  # answers that came after this node lost its claims (S7)
            log.warning("late_outcomes", node=self._me().node_id, count=late)
        # Only once committed: a write lost with the database is tried again (the group
        # sender retries it on a cluster) under the same claims.
        for _, outcome in claimed:
            self._claims.pop(outcome.message_id, None)
        if self.journal is not None and self.journal.pending:
            try:
                await self.replay_journal()
            except Exception as e:  # this round is recorded; the journal waits for the next
                log.warning("outcome_journal_replay_failed", error=exception_summary(e))
        return states, [t.message_id in applied for t, _ in changes]

    async def journal_outcomes(
        self, sent: list[SentItem], changes: list[tuple[Transition, float]]
    ) -> None:
        """Keep a group's answers in the local journal (the database stayed away for the
        group sender's whole retry window), each with its claim, for a later replay."""
        if self.journal is None:
            raise RuntimeError("no outcome journal on this node")
        claimed = claimed_outcomes(sent, changes, self._claims, self._me())
        now = max([s[3] for s in sent] + [n for _, n in changes], default=0.0)
        await self.journal.append(claimed, now)
        for _, outcome in claimed:
            self._claims.pop(outcome.message_id, None)

    async def replay_journal(self) -> int:
        """Finish what the journal holds (`OutcomeJournal.replay`); how many it applied.
        Raises while the database is away."""
        if self.journal is None or not self.journal.pending:
            return 0
        done = await self.journal.replay(self._pool)
        self.late += done.late
        log.info(
            "outcome_journal_replayed", applied=done.applied, late=done.late, requeued=done.requeued
        )
        if done.requeued and self.on_requeued is not None:
            self.on_requeued()
        return done.applied

    async def give_back(self, claims: Sequence[tuple[str, int]], route: str, now: float) -> int:
        """Only rows still `sending` for this incarnation: one recovered meanwhile (this
        node's lease lapsed during the outage) is another node's to send."""
        if not claims:
            return 0
        me = self._me()
        params = {
            "ids": [i for i, _ in claims],
            "attempts": [a for _, a in claims],
            "now": now,
            "route": route,
            "code": CLAIM_UNANSWERED,
            "node": me.node_id,
            "inc": me.incarnation,
        }
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(queue_sql.GIVE_BACK_SQL, params)).fetchall()
        for message_id, _ in claims:
            self._claims.pop(message_id, None)
        return len(rows)

    async def transition_many(self, ts: Sequence[Transition], now: float) -> list[bool]:
        done = []
        me = self._me()
        async with self._pool.connection() as conn, conn.transaction():
            for t in ts:
                try:
                    async with conn.transaction():
                        await queue_sql.apply(conn, t, now, me)
                except (LookupError, ValueError):
                    done.append(False)
                else:
                    done.append(True)
        return done

    async def expire_due(self, now: float, limit: int = 1000) -> list[str]:
        """Expire queued and scheduled messages past their expiry (any node's): the
        claim skips them, this sweep makes them final."""
        me = self._me()
        params = {"now": now, "n": limit, "node": me.node_id, "inc": me.incarnation}
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(queue_sql.EXPIRE_SQL, params)).fetchall()
        return [r[0] for r in rows]

    # -- parked routes -----------------------------------------------------------------

    def parks(self) -> ClusterParks:
        return ClusterParks(self._pool, self.master_key)

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchone()
