"""The dispatcher: from the durable queue to the drivers, in priority order.

Theory of operation. The `messages` table is the queue; this module keeps a cache of
its waiting rows: one heap per priority class ordered by due time (arrival, or the end
of a retry back-off), a heap of `scheduled` rows waiting for `send_at`, and a heap of
expiry deadlines. Each round:

1. `scheduled` rows whose time has come become `queued`;
2. waiting rows past `expires_at` become `expired` (never sent late), and `sent`
   rows whose receipt is past `receipt_deadline` are flagged `receipt_overdue` (still
   `sent`; the next sweep is due when the oldest one still waiting is);
3. classes are tried in priority order (with the `ShareGuard`'s starvation credit):
   the head of a class goes to the first usable route its rules allow, if that route
   has a token (rate) and room (at most its window + `claim_ahead` dispatched; a
   critical message one window more, its own lane past the claims made ahead, and
   with no token here the next one, taken ahead of the other classes when it comes
   within `CRITICAL_AHEAD_S`: claimed now, submitted when it comes). A route
   that is down is skipped (fail over); a route that is merely busy makes the class
   wait, so rate limits hold and the configured preference (often cost) is kept. A
   spreading class (`spread_classes`, critical by default: an emergency broadcast)
   with more than one message waiting instead goes on to the next allowed route that
   has a token and room now, so it leaves over every route at once, each at its own
   rate; a route with `spread = false` takes it only on failover.
4. the messages dispatched in one round go in groups, one per route (at most its
   `window` each), to `dispatch_group.GroupSender`: the group is claimed
   (`queued → sending`, committed) in one store call before the driver sees any of
   it, then its messages take the route's `window` slots at the carrier (the most
   urgent group first, then first come, first served: `window_turns.py`) and go to
   the driver together. Claiming ahead of the window lets the fsync of the next
   claims overlap the carrier's round trips. A slot is freed when the carrier
   answers its message; once all have answered, the group's outcomes (`sent`, a
   retry with exponential back-off and jitter honouring `retry_after`, or `failed`)
   are recorded in one store call.

At start `load` fills the cache from the store. `smsgw run` first reads only what may
fall due within `LOAD_AHEAD` (every queued row, the scheduled ones due by then) and the
rest once it serves (`load_later`); until that is done no scheduled row due past the
horizon is promoted, so the order among due messages is decided with all of them known.

The loop sleeps until the next due time, token or expiry, or until something wakes it:
a new message, a freed window slot, a route's health changing. A new message wakes it
only if the round would do something for it before the planned one (it may go now, or
falls due or expires sooner): one queued behind a due message of its class, as every
accept is under a backlog, waits for the planned round. Tests call
`run_until_idle()` instead, which runs rounds until nothing is due now and nothing is
in flight, with time moved by a `FakeClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Callable

import structlog

from drivers.clock import Clock, wait_event
from gateway.config import QueueConfig
from gateway.dispatch_group import RECORD_WINDOW, GroupSender, Journal
from gateway.logs import exception_summary
from gateway.metrics import Metrics
from gateway.models import Priority, State
from gateway.queue_depths import QueueDepths
from gateway.router import Router
from gateway.routes import RouteRuntime, note_parks, restore_parks
from gateway.scheduler_feed import ADOPT_PAGE, Claim, ClaimSoon, Entry, QueueFeeding, StagedLoad
from gateway.scheduler_feed import LOAD_AHEAD as LOAD_AHEAD
from gateway.scheduler_feed import AdoptSource as AdoptSource
from gateway.shares import ShareGuard
from gateway.store.queue_store import QueueStore
from gateway.store.transitions import Transition

log = structlog.get_logger("smsgw.scheduler")

RECEIPT_BATCH = 1000  # overdue receipts flagged per transaction
RECEIPT_SWEEP_RETRY = 60.0
# A backlog gathers its route's tokens to this much short of a full bucket (`_gathering`).
GATHER_SLACK_S = 0.05
# A critical message with no token here takes the next one ahead of the other classes
# if it comes within this long (`RouteRuntime.reserve`): its claim commits meanwhile
# (with its accept), instead of waiting a round and a commit behind the bulk that took
# the last one (S6). Longer waits (a slow route) are a round's business: a message held
# `sending` that long before its submit would come back a possible duplicate after a
# crash for nothing.
CRITICAL_AHEAD_S = 0.05
_CLASSES = tuple(Priority)  # iterating the enum itself builds a generator each time
_CRITICAL_ONLY = (Priority.CRITICAL,)
# Every class, a message's own first: under load a due message waits there, and one is
# enough to leave a claim to the round (`claim_with_accept`).
_OWN_CLASS_FIRST = {p: (p, *(q for q in _CLASSES if q is not p)) for p in _CLASSES}


class Scheduler(QueueFeeding):
    def __init__(
        self,
        store: QueueStore,
        routes: dict[str, RouteRuntime],
        router: Router,
        queue: QueueConfig,
        clock: Clock,
        metrics: Metrics,
        rng: random.Random | None = None,
        *,
        fence: Callable[[], None] | None = None,
        elsewhere: Callable[[str, bool], None] | None = None,
        journal: Journal | None = None,
        record_window: float = RECORD_WINDOW,
        staged: StagedLoad | None = None,
    ) -> None:
        self._store = store
        self._staged = staged
        self._loaded_until = math.inf
        self._added_later: set[str] | None = None
        self._elsewhere = elsewhere
        self._routes = routes
        self._router = router
        self._queue = queue
        self._clock = clock
        self._metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 - back-off jitter, not security
        self._heaps: dict[Priority, list[tuple[float, str]]] = {p: [] for p in Priority}
        self._waiting: dict[str, Entry] = {}
        self._scheduled: list[tuple[float, str, Entry]] = []
        self._expiry: list[tuple[float, str]] = []
        self._depths = QueueDepths()  # of `_waiting` and `_scheduled`, kept as they change
        self._tasks: set[asyncio.Task[None]] = set()
        self.adopt_page = ADOPT_PAGE
        self._sending = dict.fromkeys(Priority, 0)  # dispatched and not yet answered
        self._dispatched = 0  # messages in the groups under way
        self._shares = ShareGuard({p: queue.policy(p).min_share for p in Priority})
        self._spread = frozenset(Priority.parse(c) for c in queue.spread_classes)
        self._wake = asyncio.Event()
        self._sleep_until: float | None = None
        self._claiming = True
        self._stopped = asyncio.Event()
        self._receipts_due = -math.inf  # wall time of the next receipt-deadline sweep
        self._routes_changed = True  # a route's health may have changed: alert on parks
        self._fence = fence
        self._running = False  # `run` dispatches (tests may drive rounds themselves)
        self._at_accept: dict[str, asyncio.Future[list[Claim]]] = {}
        self._sender = GroupSender(
            store,
            queue,
            clock,
            metrics,
            requeue=self._requeue,
            freed=self._wake.set,
            parked=self.wake,
            backoff=self.backoff,
            fence=fence,
            journal=journal,
            record_window=record_window,
        )

    def _requeue(self, entry: Entry) -> None:
        """A dispatched message back in the queue (held, retried): always queued."""
        self._at_accept.pop(entry.id, None)
        self.add(entry)

    async def restore_parks(self) -> None:
        """Before the drivers start: routes refused before a restart stay parked."""
        await restore_parks(self._routes.values(), self._store.parks())

    def wake(self) -> None:
        """Something outside changed (a route's health, a pause): look again."""
        self._routes_changed = True
        self._wake.set()

    def claim_with_accept(self, entry: Entry, claim: ClaimSoon) -> bool:
        """At a trickle: claim a message in its accept's transaction, so `sending` commits
        with the accept (one commit and one fsync instead of two; `bench/diskwrites.py`).
        Called right after the accept was handed to the writer, before it commits (on
        a cluster: right before the accept, which runs the claim in its transaction;
        not if this node is fenced or may not send the message itself).
        Only when no message of any class is due and waiting (none is passed), every
        route it may take is idle (nothing claimed there waits for the carrier's answer;
        under load the rounds claim in groups), and a route takes it now by the round's
        own rules (health, rate token, window room: `_take_route`); a critical message
        needs only the last and no critical one waiting, so under load it is `sending`
        as its accept commits, not a round later (S6). The claim runs the send-time
        policy check as any claim does; if the message did not commit `queued` (the
        policy blocked or scheduled it), the claim changes nothing and `add` queues it."""
        now = self._clock.time()
        if not (self._running and self._claiming) or entry.due_at > now:
            return False
        if self._fence is not None:
            if not self.here(entry):
                return False
            try:
                self._fence()
            except Exception:  # the round's claim finds it fenced too
                return False
        critical = entry.priority is Priority.CRITICAL
        for p in _CRITICAL_ONLY if critical else _OWN_CLASS_FIRST[entry.priority]:
            head = self._head(p)
            if head is not None and head.due_at <= now:
                return False
        if not critical and any(self._routes[name].dispatched for name in entry.candidates):
            return False
        mono = self._clock.monotonic()
        route, ahead = self._take_route(entry, mono, {})
        if route is None:
            return False
        self._shares.served(entry.priority, [entry.priority])
        self._metrics.queue_latency_by_class[entry.priority].observe(0.0)
        claimed = claim([entry.id], route.name, now)
        self._at_accept[entry.id] = claimed
        self._start([entry], route, claimed, not_before=mono + ahead)
        return True

    # -- views ---------------------------------------------------------------------------

    # /metrics, /queue and the dashboard read these on every request, over a queue that
    # may hold a hundred thousand messages: counted as entries come and go.
    def depths(self) -> dict[str, dict[str, int]]:
        """Per class: messages held `queued` (due or backing off) and `scheduled`."""
        return self._depths.by_class()

    def depths_by_route(self) -> dict[str, dict[str, int]]:
        """Per the route they would try first: messages due (`queued`) and not yet due
        (`scheduled`), counted apart as `depths()` counts them per class."""
        return self._depths.by_first_route(self._routes)

    def sending_by_class(self) -> dict[str, int]:
        return {p.label: n for p, n in self._sending.items()}

    def oldest_waiting(self, now: float) -> dict[str, float]:
        """Per class, how long its oldest due message has waited since it fell due."""
        oldest = {p.label: 0.0 for p in Priority}
        for p in Priority:
            head = self._head(p)  # the class's earliest due, as dispatch finds it
            if head is not None:
                oldest[p.label] = max(0.0, now - head.due_at)
        return oldest

    def oldest_due(self) -> float | None:
        heads = [h[0][0] for h in self._heaps.values() if h]
        return min(heads) if heads else None

    @property
    def sender(self) -> GroupSender:
        return self._sender

    @property
    def in_flight(self) -> int:
        return self._dispatched

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch until `stop_claiming()`; sleeps only on events and deadlines."""
        self._running = True
        while self._claiming:
            self._wake.clear()
            delay = await self._round()
            # Until that round, `add` wakes one early only for what needs it.
            self._sleep_until = self._clock.time() + delay
            try:
                await wait_event(self._clock, self._wake, None if math.isinf(delay) else delay)
            finally:
                self._sleep_until = None
        self._stopped.set()

    async def run_until_idle(self) -> None:
        """Burst mode for tests: run rounds until nothing is due now and nothing is in
        flight but groups waiting for a token taken ahead (time must move for them)."""
        while True:
            await self._round()
            if not self._busy():
                return
            await self._settle()

    def _busy(self) -> set[asyncio.Task[None]]:
        """The groups under way, but those waiting for a token that is not here yet."""
        mono, early = self._clock.monotonic(), self._sender.early
        return {t for t in self._tasks if not t.done() and early.get(t, mono) <= mono}

    async def _settle(self) -> None:
        """Until every group under way has ended or waits for its token taken ahead;
        the first error of those that ended is raised (as `gather` would)."""
        ended: set[asyncio.Task[None]] = set()
        busy = self._busy()
        while busy:
            started = self._sender.early_started
            started.clear()
            waiter = asyncio.ensure_future(started.wait())
            try:
                done, _ = await asyncio.wait([*busy, waiter], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            ended |= {t for t in busy if t in done}
            busy = self._busy()
        for task in ended:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wake.set()

    async def drain(self, grace: float) -> int:
        """Wait for in-flight submits up to `grace` seconds; returns how many were cut off."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        cut = self._dispatched
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return cut if pending else 0

    async def _round(self) -> float:
        now = self._clock.time()
        if self._routes_changed:
            self._routes_changed = False
            await note_parks(self._routes.values(), self._store.parks(), self._metrics, now)
        await self._promote_scheduled(now)
        await self._expire_waiting(now)
        next_wake = min(self._dispatch_ready(now), await self._sweep_receipts(now))
        if self._scheduled and self._scheduled[0][0] <= self._loaded_until:
            next_wake = min(next_wake, self._scheduled[0][0] - now)
        if self._expiry:
            next_wake = min(next_wake, self._expiry[0][0] - now)
        return max(0.0, next_wake)

    async def _promote_scheduled(self, now: float) -> None:
        due: list[Entry] = []
        until = min(now, self._loaded_until)
        while self._scheduled and self._scheduled[0][0] <= until:
            entry = heapq.heappop(self._scheduled)[2]
            self._depths.leave(entry, True)
            due.append(entry)
        if not due:
            return
        done = await self._store.transition_many(
            [Transition(e.id, State.QUEUED, due_at=e.due_at) for e in due], now
        )
        for entry, ok in zip(due, done, strict=True):
            if ok:
                self.add(entry)

    async def _expire_waiting(self, now: float) -> None:
        expired: list[Entry] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, message_id = heapq.heappop(self._expiry)
            entry = self._waiting.pop(message_id, None)
            if entry is not None:
                self._depths.leave(entry, False)
                expired.append(entry)
        if expired:
            await self._store.transition_many(
                [Transition(e.id, State.EXPIRED, error_code="gateway:expired") for e in expired],
                now,
            )
            self._metrics.final.labels("expired").inc(len(expired))
            log.info("messages_expired", count=len(expired))

    async def _sweep_receipts(self, now: float) -> float:
        """Flag `sent` messages whose receipt is overdue, when the oldest one falls due;
        returns the seconds until the next sweep (inf with no deadline configured)."""
        deadline = self._queue.receipt_deadline
        if deadline <= 0:
            return math.inf
        if now < self._receipts_due:
            return self._receipts_due - now
        wanting = [int(p) for p in Priority if self._queue.policy(p).want_receipt]
        try:
            swept = await self._store.sweep_receipts(now - deadline, wanting, now, RECEIPT_BATCH)
        except Exception as e:  # the store is struggling: try again later, not never
            log.error("receipt_sweep_failed", error=exception_summary(e))
            self._receipts_due = now + RECEIPT_SWEEP_RETRY
            return RECEIPT_SWEEP_RETRY
        by_route: dict[str, int] = {}
        for _, route in swept.overdue:
            by_route[route or ""] = by_route.get(route or "", 0) + 1
        for route, count in by_route.items():
            self._metrics.receipts_overdue.labels(route).inc(count)
            log.warning("receipts_overdue", route=route, count=count)
        if swept.more:
            self._receipts_due = now
        elif swept.oldest_waiting is not None:
            self._receipts_due = swept.oldest_waiting + deadline
        else:  # nothing waits: what is sent from now on falls due a deadline from now
            self._receipts_due = now + deadline
        return max(0.0, self._receipts_due - now)

    def _head(self, priority: Priority) -> Entry | None:
        heap = self._heaps[priority]
        while heap:
            due, message_id = heap[0]
            entry = self._waiting.get(message_id)
            if entry is not None and entry.due_at == due:
                return entry
            heapq.heappop(heap)
        return None

    def _dispatch_ready(self, now: float) -> float:
        """Start every submit the queue, rates and windows allow, in groups per route (up
        to its window each); return the next wake-up."""
        groups: dict[str, list[Entry]] = {}
        not_before: dict[str, float] = {}  # per route: its group's last token (reserved)
        try:
            return self._take_ready(now, groups, not_before)
        finally:
            for name, group in groups.items():
                self._start(group, self._routes[name], not_before=not_before.get(name, 0.0))

    def _take_ready(
        self, now: float, groups: dict[str, list[Entry]], not_before: dict[str, float]
    ) -> float:
        mono = self._clock.monotonic()
        next_wake = math.inf
        # A route's health cannot change while this runs (no await): asked once a round
        # per route, not once per message (an SMPP route's `health()` builds a record).
        usable: dict[str, bool] = {}
        opened: set[str] = set()  # routes that took a token this round: no more gathering
        ready: list[Priority] = []
        heads: dict[Priority, Entry] = {}  # the ready classes' heads, as the scan found them
        while self._claiming:
            if (
                len(ready) == 1
                and (head := self._head(ready[0])) is not None
                and (head.due_at <= now)
            ):
                # The only class with due work was served: the others' heads cannot
                # change in this loop (no await), so the scan and the share guard's
                # order would find this class alone again. Its next head is all there
                # is to look at, once per message instead of once per class.
                order: list[Priority] = ready
                heads[ready[0]] = head
            else:
                ready = []
                heads.clear()
                for p in _CLASSES:
                    head = self._head(p)
                    if head is None:
                        continue
                    if head.due_at <= now:
                        ready.append(p)
                        heads[p] = head
                    else:
                        next_wake = min(next_wake, head.due_at - now)
                order = self._shares.order(ready)
            started = False
            for p in order:
                entry = heads[p]
                route, wait = self._take_route(entry, mono, usable, opened)
                if route is None:
                    next_wake = min(next_wake, wait)
                    continue
                if wait > 0:  # a critical took the route's next token ahead
                    not_before[route.name] = max(not_before.get(route.name, 0.0), mono + wait)
                heapq.heappop(self._heaps[p])
                del self._waiting[entry.id]
                self._depths.leave(entry, False)
                self._shares.served(p, ready)
                self._metrics.queue_latency_by_class[entry.priority].observe(
                    max(0.0, now - entry.due_at)
                )
                group = groups.setdefault(route.name, [])
                group.append(entry)
                if len(group) >= route.config.window:
                    ahead = not_before.pop(route.name, 0.0)
                    self._start(groups.pop(route.name), route, not_before=ahead)
                started = True
                break
            if not started:
                return next_wake
        return next_wake

    def _take_route(
        self,
        entry: Entry,
        mono: float,
        usable: dict[str, bool],
        opened: set[str] | None = None,
    ) -> tuple[RouteRuntime | None, float]:
        """The route to use and the seconds until its token is here (0: now), or None
        and how long until one of them may be. `opened`: a round's routes that took a
        token in it (given by the rounds only, so a route may gather tokens for a
        backlog: `_gathering`). A critical message no route takes by the usual rules
        tries again in the routes' critical lanes (`RouteRuntime._limit`): past the
        claims made ahead for other classes, and with the next token taken ahead of
        them when it comes within `CRITICAL_AHEAD_S` (`RouteRuntime.reserve`): the
        message is claimed now and submitted when the token is here."""
        route, wait = self._pick_route(entry, mono, usable, opened, lane=False)
        if route is None and entry.priority is Priority.CRITICAL:
            return self._pick_route(entry, mono, usable, opened, lane=True)
        return route, wait

    def _pick_route(
        self,
        entry: Entry,
        mono: float,
        usable: dict[str, bool],
        opened: set[str] | None,
        *,
        lane: bool,
    ) -> tuple[RouteRuntime | None, float]:
        cooling = math.inf
        busy = False  # a usable route came first but could not take it now
        critical = entry.priority is Priority.CRITICAL
        for name in entry.candidates:
            route = self._routes[name]
            ok = usable.get(name)
            if ok is None:
                ok = usable[name] = route.usable(mono)
            if not ok:
                if route.cool_until > mono:
                    cooling = min(cooling, route.cool_until - mono)
                continue
            if busy and not route.config.spread:
                continue  # kept for failover, not for overflow
            wait = route.wait_time(mono, lane=lane)
            if wait <= 0 and opened is not None:
                wait = self._gathering(entry, route, mono, opened)
            if wait <= 0 and route.take(mono, critical=critical, lane=lane):
                if opened is not None:
                    opened.add(name)
                return route, 0.0
            if lane and wait < math.inf:
                ahead = route.reserve(mono, CRITICAL_AHEAD_S)
                if ahead is not None:
                    if opened is not None:
                        opened.add(name)
                    return route, ahead
            wait = max(wait, 1e-3)
            # Asked only on this path (a busy route): does the message move on? A spreading
            # class with a backlog does; one message alone waits for a token of this route
            # (it comes within 1/rate) rather than go to a slower one, unless the window
            # is full and no one can say when it frees.
            if entry.priority not in self._spread or (
                wait < math.inf and len(self._heaps[entry.priority]) <= 1
            ):
                return None, wait
            busy = True
            cooling = min(cooling, wait)
        return None, cooling

    def _gathering(self, entry: Entry, route: RouteRuntime, mono: float, opened: set[str]) -> float:
        """Seconds a backlog waits for the route to save up most of its burst, so that
        one round claims them together: one commit of `sending` for several messages
        instead of one each (each commit writes whole pages of every b-tree it touches:
        `bench/diskwrites.py`, saturation). The rate holds (the tokens are the bucket's
        own, never lent), and the route's burst is what its carrier takes at once; the
        wait ends `GATHER_SLACK_S` of tokens short of a full bucket, so that a wake-up
        that late loses none. A critical message, a class that spreads, and a route
        whose rate the carrier's throttles set (none configured) or that sends on a
        cluster's carrier account (its shared rate claims per node) never wait for it, nor
        does anything while fewer messages wait than would be gathered (`_waiting`: due
        or not). At most a window is gathered (a group holds no more)."""
        rate = route.config.rate
        if (
            rate is None
            or route.config.account is not None  # a cluster's shared rate decides there
            or route.name in opened
            or entry.priority is Priority.CRITICAL
            or entry.priority in self._spread
        ):
            return 0.0
        slack = max(1, math.ceil(rate * GATHER_SLACK_S))
        gather = min(route.bucket.burst - slack, route.config.window)  # a group's most
        if gather <= 1 or len(self._waiting) < gather:
            return 0.0
        return route.bucket.wait_for(gather, mono)

    def _start(
        self,
        group: list[Entry],
        route: RouteRuntime,
        claims: asyncio.Future[list[Claim]] | None = None,
        *,
        not_before: float = 0.0,
    ) -> None:
        """Claim and send `group` on its own task; its submit waits until `not_before`
        (monotonic) when a critical message in it took a token ahead."""
        task = asyncio.create_task(self._send_group(group, route, claims, not_before))
        self._tasks.add(task)
        for entry in group:
            self._sending[entry.priority] += 1
        self._dispatched += len(group)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._sent_group(group))

    def _sent_group(self, group: list[Entry]) -> None:
        for entry in group:
            self._sending[entry.priority] -= 1
        self._dispatched -= len(group)

    async def _send_group(
        self,
        group: list[Entry],
        route: RouteRuntime,
        claims: asyncio.Future[list[Claim]] | None,
        not_before: float,
    ) -> None:
        try:
            await self._sender.send(group, route, claims, not_before=not_before)
        finally:
            if claims is not None:  # the accept failed and never handed it over
                self._at_accept.pop(group[0].id, None)

    def backoff(self, attempts: int) -> float:
        """Exponential back-off with equal jitter: half fixed, half random."""
        ceiling = min(self._queue.retry_cap, self._queue.retry_base * 2.0 ** max(0, attempts - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)
