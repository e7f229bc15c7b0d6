"""One dispatched group, from its claim to its recorded outcomes.

The scheduler hands a route a group of due messages it has tokens and window room for
(`scheduler.py`). Here the group is claimed in one store call (all `sending` in one
commit, before any byte leaves), what was claimed goes to the driver together
(`drivers.base.submit_group`: SMPP writes the group's submit_sm at once) as the route's
window lets it, and once every message has its answer the outcomes are recorded in one
store call: `sent`, a retry with back-off, `failed` or `expired`, mapped from the
driver's errors as for a single message. A message's window slot is freed when the
carrier answers it, not when its outcome is on disk.

On a cluster the outcomes' write is tried again while the database is away, for
`[cluster] outcome_retry_seconds`; past that they go to the node's local journal
(`cluster/outcome_journal.py`), finished from there once the database is back.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import structlog

from drivers.base import (
    DriverAuthFailed,
    DriverNotReady,
    OutboundSms,
    PermanentSendError,
    SubmitResult,
    TransientSendError,
    submit_group,
)
from drivers.clock import Clock
from drivers.text import Encoding, split
from gateway.config import QueueConfig
from gateway.logs import exception_summary
from gateway.metrics import Metrics
from gateway.models import Priority, State
from gateway.routes import RouteRuntime
from gateway.store.claim_check import ACCOUNT_EMPTY, Held
from gateway.store.group_sql import SentItem
from gateway.store.queue_store import QueueStore
from gateway.store.store import ClaimedMessage
from gateway.store.transitions import Transition
from gateway.window_turns import WindowTurns

if TYPE_CHECKING:
    from gateway.scheduler_feed import Entry

log = structlog.get_logger("smsgw.scheduler")

NOT_READY_COOL_DOWN = 1.0
# A cluster's outcome writes: 0.25 s, doubling to 5 s, for `[cluster]
# outcome_retry_seconds` (a minute by default).
RECORD_RETRY_FIRST, RECORD_RETRY_MAX, RECORD_WINDOW = 0.25, 5.0, 60.0
T = TypeVar("T")
# Where a cluster node keeps outcomes the database would not take within the window.
Journal = Callable[[list[SentItem], list[tuple[Transition, float]]], Awaitable[None]]
# A claimed row's encoding without an enum call per message (EnumType.__call__).
_ENCODING_OF = {e.value: e for e in Encoding}
JOURNALED = State.SENDING  # a sent message's state while its outcome waits in the journal


class GroupSender:
    def __init__(
        self,
        store: QueueStore,
        queue: QueueConfig,
        clock: Clock,
        metrics: Metrics,
        *,
        requeue: Callable[[Entry], None],
        freed: Callable[[], None],
        parked: Callable[[], None],
        backoff: Callable[[int], float],
        fence: Callable[[], None] | None = None,
        journal: Journal | None = None,
        record_window: float = RECORD_WINDOW,
    ) -> None:
        self._store = store
        self._journal = journal
        self._record_window = record_window
        # On a cluster: raises once this node's lease may have lapsed (`lease.Fence`);
        # nothing is claimed or handed to a driver after that.
        self._fence = fence
        self._queue = queue
        self._clock = clock
        self._metrics = metrics
        self._requeue = requeue  # a message back in the cache (held, retried)
        self._freed = freed  # a dispatch slot freed: the scheduler looks again
        self._parked = parked  # the driver parked the route
        self._backoff = backoff
        self._turns: dict[str, WindowTurns] = {}  # per route: the group taking window slots
        # Groups whose submit waits for a token taken ahead (`not_before`), with that
        # time (monotonic); `early_started` is set when one starts waiting. For
        # `Scheduler.run_until_idle`: such a group waits for time to move.
        self.early: dict[asyncio.Task[None], float] = {}
        self.early_started = asyncio.Event()

    async def send(
        self,
        group: list[Entry],
        route: RouteRuntime,
        claims: Awaitable[list[ClaimedMessage | Held | Exception | None]] | None = None,
        *,
        not_before: float = 0.0,
    ) -> None:
        """Claim the group in one commit, hand what was claimed to the driver together,
        record the answers in one commit. Each message holds a dispatch slot of the
        route until the carrier answered it (or it was not sent). `claims`: the group's
        claim already handed to the store (`Scheduler.claim_with_accept`). `not_before`
        (monotonic): a critical message in the group took the route's next token before
        it was there (`RouteRuntime.reserve`); the claim commits meanwhile, the submit
        waits for it."""
        metrics = self._metrics.route(route.name)
        metrics.in_flight.inc(len(group))
        held = [True] * len(group)

        def release(i: int) -> None:
            """Free message i's slot once: as soon as the carrier answered, not after the
            outcome is on disk, so the window counts submits, not our fsyncs."""
            if held[i]:
                held[i] = False
                route.release(critical=group[i].priority is Priority.CRITICAL)
                metrics.in_flight.dec()
                self._freed()

        try:
            if claims is None:
                if self._fence is not None:
                    self._fence()
                claims = self._store.claim_group(
                    [e.id for e in group], route.name, self._clock.time()
                )
            try:
                answers = await claims
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error(
                    "dispatch_failed",
                    route=route.name,
                    count=len(group),
                    error=exception_summary(e),
                )
                # Given back even when the claim rode in its accept: on a cluster that
                # accept may have committed all the same (the database went away between
                # its COMMIT and the answer) and been answered on the client's retry by
                # its idempotency key, leaving the row `sending` here under a live lease
                # (S8). A row the accept never stored is skipped by its next claim.
                await self._give_back(group, route)
                return
            ready: list[tuple[int, ClaimedMessage]] = []
            for i, (entry, claimed) in enumerate(zip(group, answers, strict=True)):
                if isinstance(claimed, ClaimedMessage):
                    ready.append((i, claimed))
                    continue
                if isinstance(claimed, Held):  # the send policy: not now (quiet hours)
                    entry.due_at = claimed.until
                    if claimed.reason == ACCOUNT_EMPTY:  # a cluster's shared rate: no token
                        wait = claimed.until - self._clock.time()
                        route.held_until = self._clock.monotonic() + wait
                    self._requeue(entry)
                elif isinstance(claimed, Exception):
                    log.error(
                        "dispatch_failed",
                        message_id=entry.id,
                        route=route.name,
                        error=exception_summary(claimed),
                    )
                release(i)
            if ready:
                await self._until(not_before)
                await self._submit_group(group, route, ready, release)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error(
                "dispatch_failed", route=route.name, count=len(group), error=exception_summary(e)
            )
        finally:
            for i in range(len(group)):
                release(i)

    async def _until(self, not_before: float) -> None:
        early = not_before - self._clock.monotonic()
        task = asyncio.current_task()
        if early <= 0 or task is None:
            return
        self.early[task] = not_before
        self.early_started.set()
        try:
            await self._clock.sleep(early)
        finally:
            self.early.pop(task, None)

    def turns(self, route: str) -> WindowTurns:
        """Whose turn it is at `route`'s carrier window."""
        return self._turns.setdefault(route, WindowTurns())

    async def _give_back(self, group: list[Entry], route: RouteRuntime) -> None:
        """After a claim that raised: it may have committed all the same (on a cluster
        the database can go away between the commit and its answer), leaving rows
        `sending` for this node with nothing in flight, which no one would take back
        while this node lives. They return to `queued`, untried, once the store answers
        again; then the group is back in the cache (a row that never left `queued` is
        claimed as before; one no longer queued is skipped by its next claim)."""
        claims = [(e.id, e.attempts) for e in group]
        try:
            given = await self._retrying(
                lambda: self._store.give_back(claims, route.name, self._clock.time()),
                "claim_give_back_retry",
            )
        except Exception as e:  # the rows are left to the lease's recovery
            log.error("claim_give_back_failed", route=route.name, error=exception_summary(e))
            return
        if given:
            log.warning("claims_given_back", route=route.name, count=given)
        for entry in group:
            self._requeue(entry)

    async def _submit_group(
        self,
        group: list[Entry],
        route: RouteRuntime,
        ready: list[tuple[int, ClaimedMessage]],
        release: Callable[[int], None],
    ) -> None:
        monotonic = self._clock.monotonic
        started = monotonic()
        observe = self._metrics.route(route.name).submit_latency.observe
        futures: list[asyncio.Future[SubmitResult]] = []
        # Each answer's slot is freed by one shared callback, and the group waits on one
        # future set by the last answer: no closure per message, and none of
        # `asyncio.wait`'s per-future callbacks and sets.
        slot_of: dict[asyncio.Future[SubmitResult], int] = {}
        all_answered = asyncio.get_running_loop().create_future()

        def done(future: asyncio.Future[SubmitResult]) -> None:
            route.in_flight -= 1
            route.slots.release()
            release(slot_of.pop(future))
            observe(monotonic() - started)
            if not slot_of and not pending and not all_answered.done():
                all_answered.set_result(None)

        pending: list[tuple[int, OutboundSms]] = []
        try:
            pending = [(i, self._outbound(claimed)) for i, claimed in ready]
            # The route's window at the carrier, group after group, the most urgent class
            # first (`window_turns.py`): wait for one slot, then take every other one free
            # by then and send that many together. A more urgent group waiting by then
            # takes the slot and the turn first.
            turns = self.turns(route.name)
            ticket = turns.ticket(min(group[i].priority for i, _ in ready))
            await turns.acquire(ticket)
            holding = True
            try:
                while pending and self._unfenced(route):
                    await route.slots.acquire()
                    if turns.more_urgent(ticket):
                        route.slots.release()
                        turns.passed += 1
                        holding = False
                        turns.release()
                        await turns.acquire(ticket)
                        holding = True
                        continue
                    take = 1 + route.slots.take_free(len(pending) - 1)
                    chunk, pending = pending[:take], pending[take:]
                    route.in_flight += take
                    handed = self._hand_over(route, chunk)
                    for (i, _), future in zip(chunk, handed, strict=True):
                        slot_of[future] = i
                        future.add_done_callback(done)
                    futures += handed
            finally:
                if holding:
                    turns.release()
            pending = []  # a fenced node hands over no more: the last answer ends the wait
            if slot_of:
                await all_answered
        except asyncio.CancelledError:
            # Shutdown cut the group short: what was not answered may have reached the carrier.
            for future in futures:
                future.cancel()
            await asyncio.shield(self._record(group, route, ready, futures, cancelled=True))
            raise
        await self._record(group, route, ready, futures, cancelled=False)

    def _unfenced(self, route: RouteRuntime) -> bool:
        """False once this node is fenced: what it has not handed over yet goes back
        to the queue (as if the driver had not taken it), none of it to the carrier."""
        if self._fence is None:
            return True
        try:
            self._fence()
        except Exception as e:
            log.warning("dispatch_fenced", route=route.name, error=exception_summary(e))
            return False
        return True

    @staticmethod
    def _hand_over(
        route: RouteRuntime, chunk: list[tuple[int, OutboundSms]]
    ) -> list[asyncio.Future[SubmitResult]]:
        try:
            return submit_group(route.driver, [sms for _, sms in chunk])
        except Exception as e:  # a driver bug: each message's outcome is the error
            futures: list[asyncio.Future[SubmitResult]] = []
            for _ in chunk:
                futures.append(asyncio.get_running_loop().create_future())
                futures[-1].set_exception(e)
            return futures

    def _outbound(self, claimed: ClaimedMessage) -> OutboundSms:
        encoding = _ENCODING_OF.get(claimed.encoding) or Encoding(claimed.encoding)
        plan = split(claimed.body, encoding=encoding)
        return OutboundSms(
            message_id=claimed.id,
            to=claimed.to,
            parts=plan.parts,
            encoding=plan.encoding.value,
            want_receipt=self._queue.policy(claimed.priority).want_receipt,
            reference=_concat_reference(claimed.id),
            possible_duplicate=claimed.possible_duplicate,
        )

    async def _record(
        self,
        group: list[Entry],
        route: RouteRuntime,
        ready: list[tuple[int, ClaimedMessage]],
        futures: list[asyncio.Future[SubmitResult]],
        *,
        cancelled: bool,
    ) -> None:
        """Every claimed message's outcome, as the driver's answer or error says, in one
        store call; then per message its metrics, log line and (for a retry) its place
        back in the queue."""
        now = self._clock.time()
        plan = _Plan()
        accepted = 0
        for n, (i, _) in enumerate(ready):
            entry = group[i]
            future = futures[n] if n < len(futures) else None
            if future is None and not cancelled:  # the node was fenced before handing it over
                self._retry(plan, entry, route, "cluster:fenced", now, consume_attempt=False)
                continue
            if future is None or future.cancelled():
                code = "gateway:shutdown" if cancelled else "driver:crash"
                self._retry(plan, entry, route, code, now, consume_attempt=False, maybe_sent=True)
                continue
            error = future.exception()
            if error is None:
                plan.sent.append((entry, future.result()))
                accepted += 1
                continue
            if accepted:  # the accepts before a throttle count before it, as they came
                route.succeeded(self._clock.monotonic(), accepted)
                accepted = 0
            self._failure(plan, entry, route, error, now)
        if accepted:  # the carrier's accepts, for the rate it allows: once per run of them
            route.succeeded(self._clock.monotonic(), accepted)
        states, done = await self._record_outcomes(
            [(e.id, route.name, r.carrier_ids, now) for e, r in plan.sent],
            [(t, now) for t, _ in plan.changes],
        )
        if plan.sent:
            route.counters["sent"] = route.counters.get("sent", 0) + len(plan.sent)
            self._metrics.route(route.name).sends["sent"].inc(len(plan.sent))
        debug = log.debug  # looked up once: the logger is a lazy proxy
        for (entry, result), state in zip(plan.sent, states, strict=True):
            if isinstance(state, Exception):
                log.error(
                    "dispatch_failed",
                    message_id=entry.id,
                    route=route.name,
                    error=exception_summary(state),
                )
            elif state is not State.SENT and state is not JOURNALED:
                self._metrics.final.labels(state.value).inc()
            # Per-message success is in `message_events`; the log keeps it at debug level.
            debug(
                "message_sent",
                message_id=entry.id,
                route=route.name,
                parts=len(result.carrier_ids),
            )
        for (_, after), ok in zip(plan.changes, done, strict=True):
            if ok is True:
                after()
            elif isinstance(ok, Exception):
                log.error("dispatch_failed", route=route.name, error=exception_summary(ok))

    async def _record_outcomes(
        self, sent: list[SentItem], changes: list[tuple[Transition, float]]
    ) -> tuple[list[State | Exception], list[bool | Exception]]:
        """On a cluster the database can be away for a moment (a failover, a cut link):
        what the carrier answered is written again, with a growing pause, rather than
        left `sending` until this node's lease lapses (a write that did land unseen is
        kept as a late outcome the second time, overwriting nothing). Away longer than
        the window, it goes to the node's journal, to be finished once the database is
        back; none of it counts as applied meanwhile (a retry is not queued here: the
        replay queues it, and the schedulers take it in)."""
        try:
            return await self._retrying(
                lambda: self._store.record_outcomes(sent, changes), "outcomes_retry"
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self._journal is None:
                raise
            await self._journal(sent, changes)
            log.error(
                "outcomes_journaled",
                sent=len(sent),
                changes=len(changes),
                error=exception_summary(e),
            )
            return [JOURNALED] * len(sent), [False] * len(changes)

    async def _retrying(self, call: Callable[[], Awaitable[T]], event: str) -> T:
        """`call()`, and on a cluster again after a growing pause while it raises (for
        `record_window` seconds, each try logged as `event`); on one node, once."""
        pause, attempt = RECORD_RETRY_FIRST, 1
        until = self._clock.monotonic() + self._record_window
        while True:
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                left = until - self._clock.monotonic()
                if self._fence is None or left <= 0:
                    raise
                log.warning(event, attempt=attempt, error=exception_summary(e))
            await self._clock.sleep(min(pause, left))
            pause, attempt = min(pause * 2, RECORD_RETRY_MAX), attempt + 1

    def _failure(
        self, plan: _Plan, entry: Entry, route: RouteRuntime, error: BaseException, now: float
    ) -> None:
        """Today's outcome for a driver error, for one message of a group."""
        if isinstance(error, PermanentSendError):
            self._fail(plan, entry, route, error.code, now)
        elif isinstance(error, DriverAuthFailed):
            self._parked()  # the driver parked the route: the next round alerts
            self._retry(plan, entry, route, error.code, now, consume_attempt=False)
        elif isinstance(error, DriverNotReady):
            route.cool_until = self._clock.monotonic() + (error.retry_after or NOT_READY_COOL_DOWN)
            if error.throttled:
                route.throttled(self._clock.monotonic())
                self._metrics.route_throttled.labels(route.name).inc()
            self._retry(plan, entry, route, error.code, now, consume_attempt=False)
        elif isinstance(error, TransientSendError):
            self._retry(
                plan,
                entry,
                route,
                error.code,
                now,
                retry_after=error.retry_after,
                maybe_sent=error.maybe_sent,
            )
        else:
            log.error(
                "driver_crashed",
                route=route.name,
                message_id=entry.id,
                error=exception_summary(error),
            )
            self._retry(plan, entry, route, "driver:crash", now, maybe_sent=True)

    def _fail(self, plan: _Plan, entry: Entry, route: RouteRuntime, code: str, now: float) -> None:
        def after() -> None:
            self._metrics.final.labels("failed").inc()
            log.info("message_failed", message_id=entry.id, route=route.name, code=code)

        route.count("failed")
        self._metrics.route(route.name).sends["failed"].inc()
        plan.changes.append(
            (Transition(entry.id, State.FAILED, route=route.name, error_code=code), after)
        )

    def _retry(
        self,
        plan: _Plan,
        entry: Entry,
        route: RouteRuntime,
        code: str,
        now: float,
        *,
        retry_after: float | None = None,
        consume_attempt: bool = True,
        maybe_sent: bool = False,
    ) -> None:
        # The claim counted this try; one that cost nothing (the route could not take
        # the message) is given back by writing the count from before the claim.
        attempts = entry.attempts + (1 if consume_attempt else 0)
        route.count("retry")
        self._metrics.route(route.name).sends["retry"].inc()
        if attempts >= self._queue.policy(entry.priority).max_attempts:
            self._fail(plan, entry, route, code, now)
            return
        delay = self._backoff(attempts) if consume_attempt else 0.0
        if retry_after is not None:
            delay = max(delay, retry_after)
        # A message the route could not take (not ready, throttled, shutdown) keeps its
        # place in its class; one the carrier refused waits out its back-off.
        due = now + delay if consume_attempt or retry_after else min(entry.due_at, now)
        if max(due, now) >= entry.expires_at:
            expired = Transition(
                entry.id, State.EXPIRED, route=route.name, error_code=code, attempts=attempts
            )
            plan.changes.append((expired, lambda: self._metrics.final.labels("expired").inc()))
            return

        def after() -> None:
            if maybe_sent:
                self._metrics.possible_duplicates.labels("link").inc()
            log.info(
                "message_retry",
                message_id=entry.id,
                route=route.name,
                code=code,
                attempt=attempts,
                delay=round(delay, 3),
            )
            entry.attempts, entry.due_at = attempts, due
            self._requeue(entry)

        retry = Transition(
            entry.id,
            State.QUEUED,
            route=route.name,
            error_code=code,
            due_at=due,
            attempts=attempts,
            possible_duplicate=True if maybe_sent else None,
        )
        plan.changes.append((retry, after))


@dataclass(slots=True)
class _Plan:
    """A group's outcomes before they are recorded: the accepted messages, and the other
    changes each with what to do once it is committed."""

    sent: list[tuple[Entry, SubmitResult]] = field(default_factory=list)
    changes: list[tuple[Transition, Callable[[], None]]] = field(default_factory=list)


def _concat_reference(message_id: str) -> int:
    """A stable 16-bit concatenation reference, the same on every resend."""
    return zlib.crc32(message_id.encode()) & 0xFFFF
