"""The scheduler's cache and what feeds it: the waiting messages read from the store at
start (`load`, `load_later`), taken over from dead nodes (`adopt`, `rehold`) and added as
they are accepted (`add`). `Scheduler` (`gateway/scheduler.py`) dispatches from it."""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Protocol

import structlog

from drivers.clock import Clock
from gateway.metrics import Metrics
from gateway.models import Priority, State
from gateway.queue_depths import QueueDepths
from gateway.router import Router
from gateway.routes import RouteRuntime
from gateway.store.claim_check import Held
from gateway.store.queue_store import QueueStore
from gateway.store.store import ClaimedMessage, LiveMessage
from gateway.store.transitions import Transition

log = structlog.get_logger("smsgw.scheduler")


@dataclass(slots=True)
class Entry:
    id: str
    priority: Priority
    due_at: float
    expires_at: float
    candidates: tuple[str, ...]
    attempts: int = 0


_ENTRY = itemgetter(0)  # of an (entry, scheduled) pair
_ID = attrgetter("id")
ADOPT_PAGE = 500  # rows taken into the heaps per adoption read (a cluster's)
# `load(later=True)`: scheduled rows due within this many seconds are read before the
# gateway serves, the rest just after (`load_later`: about a second per 100,000).
LOAD_AHEAD = 600.0


class StagedLoad(Protocol):
    """A store that can leave the scheduled rows due after a time for later (SQLite's)."""

    def live_messages(
        self, *, numbers: bool = True, scheduled_until: float = math.inf
    ) -> AsyncIterator[LiveMessage]: ...

    def scheduled_later(
        self, after: float, *, numbers: bool = True
    ) -> AsyncIterator[LiveMessage]: ...


class AdoptSource(Protocol):
    """Queued rows no live node holds, a page at a time (`cluster/adoption.py`)."""

    async def page(
        self,
        due_before: float,
        limit: int,
        servable: Sequence[tuple[str, Priority]] | None,
        numbers: bool,
    ) -> list[LiveMessage]: ...

    async def release(self, message_ids: Sequence[str]) -> None: ...

    async def take_back(self, message_ids: Sequence[str]) -> list[str]: ...


Claim = ClaimedMessage | Held | Exception | None
# Hands a group's claim to the store at once (`Store.claim_group_soon`).
ClaimSoon = Callable[[list[str], str, float], "asyncio.Future[list[Claim]]"]


def _claimed_now(claim: asyncio.Future[list[Claim]]) -> bool:
    """The claim committed with the accept and took the message (`sending`)."""
    if not claim.done() or claim.cancelled() or claim.exception() is not None:
        return False
    return isinstance(claim.result()[0], ClaimedMessage)


class QueueFeeding:
    """The cache's state and its feeding half (`Scheduler` sets the state up)."""

    _store: QueueStore
    _staged: StagedLoad | None
    # `load(later=True)`: scheduled rows due after this are not read yet, and the ids
    # of the scheduled messages added since (so `load_later` does not add them twice).
    _loaded_until: float
    _added_later: set[str] | None
    # On a cluster: a message none of whose routes this node may use is not held
    # here (it would wait at its class's head); `elsewhere(id, critical)` gives it up
    # to the nodes that can.
    _elsewhere: Callable[[str, bool], None] | None
    _routes: dict[str, RouteRuntime]
    _router: Router
    _clock: Clock
    _metrics: Metrics
    _heaps: dict[Priority, list[tuple[float, str]]]
    _waiting: dict[str, Entry]
    _scheduled: list[tuple[float, str, Entry]]
    _expiry: list[tuple[float, str]]
    # Counts of `_waiting` and `_scheduled`: whatever changes them changes these too.
    _depths: QueueDepths
    _wake: asyncio.Event
    # While `run` sleeps: the wall time its next round is planned for (inf: none).
    _sleep_until: float | None
    # Claims made with their accept (`claim_with_accept`), until the accept hands the
    # message over (`add`) or the send ends.
    _at_accept: dict[str, asyncio.Future[list[Claim]]]
    adopt_page: int

    async def load(self, shared: AdoptSource | None = None, *, later: bool = False) -> int:
        """Rebuild the cache from the store; `sending` rows come back as possible duplicates.
        On a cluster (`shared`) only the rows no live node holds are taken, as adoption
        takes them: the peers' own queues stay theirs.

        `later` (a store that can, `StagedLoad`): the scheduled rows due more than
        `LOAD_AHEAD` seconds from now are left for `load_later`, which `smsgw run` starts
        once it serves (a month of reminders need not delay the start). Until it is
        done no scheduled message due past that horizon is promoted, so one it has
        not read yet is never passed over by a later or lesser one."""
        now = self._clock.time()
        recovered = await self._store.recover_in_flight(now)
        if recovered:
            self._metrics.possible_duplicates.labels("restart").inc(recovered)
            log.warning("requeued_in_flight_after_restart", count=recovered)
        if shared is not None:
            await self.adopt(shared, math.inf)
            return len(self._waiting) + len(self._scheduled)
        numbers = self._router.routes_by_number
        if later and self._staged is not None:
            self._loaded_until = now + LOAD_AHEAD
            self._added_later = set()
            rows = self._staged.live_messages(numbers=numbers, scheduled_until=self._loaded_until)
        else:
            rows = self._store.live_messages(numbers=numbers)
        orphans: list[Transition] = []
        here: dict[tuple[str, ...], bool] = {}
        waiting = []
        scheduled = []
        async for m in rows:
            entry = self._loaded(m, here, orphans)
            if entry is None:
                continue
            if m.state is State.SCHEDULED:  # nothing runs a round yet: heapified below
                self._scheduled.append((m.due_at, m.id, entry))
                scheduled.append(entry)
            else:
                waiting.append(entry)
        # In bulk (a hundred thousand rows): the heaps built once (heapify is linear).
        if self._waiting:  # held already (a test's load into a used scheduler): replaced
            for entry in waiting:
                if (held := self._waiting.get(entry.id)) is not None:
                    self._depths.leave(held, False)
        for entry in waiting:
            self._waiting[entry.id] = entry
            self._heaps[entry.priority].append((entry.due_at, entry.id))
            self._expiry.append((entry.expires_at, entry.id))
        self._depths.enter_all(waiting, False)
        self._depths.enter_all(scheduled, True)
        for heap in (*self._heaps.values(), self._expiry):
            heapq.heapify(heap)
        heapq.heapify(self._scheduled)
        self._wake.set()
        await self._fail_orphans(orphans, now)
        return len(self._waiting) + len(self._scheduled)

    async def load_later(self) -> int:
        """Read the scheduled rows `load(later=True)` left out, while the gateway serves;
        how many it took. Then promotion past the horizon resumes."""
        if self._staged is None or self._added_later is None:
            return 0
        orphans: list[Transition] = []
        here: dict[tuple[str, ...], bool] = {}
        taken = 0
        numbers = self._router.routes_by_number
        async for m in self._staged.scheduled_later(self._loaded_until, numbers=numbers):
            if m.id in self._added_later:  # accepted since the start, and added then
                continue
            entry = self._loaded(m, here, orphans)
            if entry is not None:
                heapq.heappush(self._scheduled, (m.due_at, m.id, entry))
                self._depths.enter(entry, True)
                taken += 1
        self._loaded_until, self._added_later = math.inf, None
        self._wake.set()
        await self._fail_orphans(orphans, self._clock.time())
        return taken

    def _loaded(
        self, m: LiveMessage, here: dict[tuple[str, ...], bool], orphans: list[Transition]
    ) -> Entry | None:
        """The entry of a row read at load, None if not this node's; one no route may
        take goes to `orphans`. `here` remembers each route set's answer."""
        routes = self._router.candidates(m.to, m.priority, m.route_hint)
        if not routes:
            orphans.append(Transition(m.id, State.FAILED, error_code="route:none"))
            return None
        ours = here.get(routes)
        if ours is None:
            ours = here[routes] = any(self._routes[name].here for name in routes)
        return Entry(m.id, m.priority, m.due_at, m.expires_at, routes, m.attempts) if ours else None

    async def _fail_orphans(self, orphans: list[Transition], now: float) -> None:
        if orphans:
            await self._store.transition_many(orphans, now)
            log.warning("failed_messages_without_route", count=len(orphans))

    async def adopt(self, source: AdoptSource, due_before: float) -> int:
        """Take in the queued and scheduled messages due before `due_before` that no
        live node holds (on a cluster: a dead node's, requeued by recovery, or nobody's),
        `adopt_page` at a time in claim order (critical first), each page marked as held
        here by the store; how many it took. Between pages the loop runs the sends (each
        page is a round trip), so a survivor keeps its rate while it adopts."""
        numbers = self._router.routes_by_number
        servable = None if numbers else self.servable()
        taken = 0
        scheduled: set[str] | None = None  # built once a page holds a scheduled row
        while True:
            page = await source.page(due_before, self.adopt_page, servable, numbers)
            elsewhere = []
            for m in page:
                # Held here already (by this node's previous incarnation, before it rejoined).
                if m.id in self._waiting:
                    continue
                if m.state is State.SCHEDULED:
                    if scheduled is None:
                        scheduled = {entry.id for _, _, entry in self._scheduled}
                    if m.id in scheduled:
                        continue
                entry = self.entry_for(m)
                if entry.candidates and self.here(entry):
                    self.add(entry, scheduled=m.state is State.SCHEDULED)
                    taken += 1
                else:
                    elsewhere.append(m.id)
            await source.release(elsewhere)
            if len(page) < self.adopt_page:
                return taken

    async def rehold(self, source: AdoptSource) -> int:
        """After this node rejoined under a new incarnation (a cluster's, after a lost
        lease): keep the waiting messages it still holds in the store, taken back under
        the new incarnation, and drop those a peer adopted meanwhile; how many dropped."""
        held = self.held()
        mine = set(await source.take_back(held))
        gone = [message_id for message_id in held if message_id not in mine]
        self.drop(gone)
        return len(gone)

    def held(self) -> list[str]:
        """The ids of the messages waiting here, queued or scheduled."""
        return [*self._waiting, *(entry.id for _, _, entry in self._scheduled)]

    def drop(self, message_ids: Sequence[str]) -> None:
        """Stop holding these (another node holds them now): neither sent nor promoted."""
        gone = set(message_ids)
        for message_id in gone:
            entry = self._waiting.pop(message_id, None)  # its heap entries are skipped lazily
            if entry is not None:
                self._depths.leave(entry, False)
        if any(entry.id in gone for _, _, entry in self._scheduled):
            self._scheduled = [item for item in self._scheduled if item[2].id not in gone]
            heapq.heapify(self._scheduled)
            self._depths.recount_scheduled(entry for _, _, entry in self._scheduled)

    def servable(self) -> list[tuple[str, Priority]]:
        """The (route group, class) pairs this node may send by a route of its own,
        when routes do not look at the number; the group is the message's route hint
        ('' for none)."""
        hints: list[str | None] = [None, *self._routes]
        return [
            (hint or "", p)
            for hint in hints
            for p in Priority
            if any(self._routes[name].here for name in self._router.candidates("", p, hint))
        ]

    def entry_for(self, m: LiveMessage) -> Entry:
        return Entry(
            m.id,
            m.priority,
            m.due_at,
            m.expires_at,
            self._router.candidates(m.to, m.priority, m.route_hint),
            m.attempts,
        )

    def here(self, entry: Entry) -> bool:
        """May this node send `entry` by one of its routes (not another node's only)?"""
        return any(self._routes[name].here for name in entry.candidates)

    def add(self, entry: Entry, *, scheduled: bool = False) -> None:
        """Queue a message already committed to the store (unless it was claimed with
        its accept, in the same transaction: then it is on its way already)."""
        claim = self._at_accept.pop(entry.id, None)
        if claim is not None and _claimed_now(claim):
            return
        if self._elsewhere is not None and not self.here(entry):
            # Still queued in the shared store, for a node that may (a critical: at once).
            self._elsewhere(entry.id, entry.priority is Priority.CRITICAL)
            return
        if scheduled:
            if self._added_later is not None:
                self._added_later.add(entry.id)
            heapq.heappush(self._scheduled, (entry.due_at, entry.id, entry))
        else:
            if (held := self._waiting.get(entry.id)) is not None:  # one entry per id
                self._depths.leave(held, False)
            self._waiting[entry.id] = entry
            heapq.heappush(self._heaps[entry.priority], (entry.due_at, entry.id))
            heapq.heappush(self._expiry, (entry.expires_at, entry.id))
        self._depths.enter(entry, scheduled)
        if self._sleep_until is None or self._round_needed(entry, scheduled, self._sleep_until):
            self._wake.set()

    def _round_needed(self, entry: Entry, scheduled: bool, planned: float) -> bool:
        """Would a round now, rather than the one planned, do anything for `entry`?
        Not when it cannot fall due or expire before the planned round, nor when it is
        queued behind a due message of its class: a round looks only at each class's
        head, and the head still there is one the last round could not send (what would
        let it go, a freed slot or a route's health, wakes a round itself) or one due
        since, whose round is the planned one. Under a backlog that is every accept."""
        if entry.expires_at < planned:
            return True
        if entry.due_at >= planned:
            return False
        if scheduled:
            return True
        due, head_id = self._heaps[entry.priority][0]
        if head_id == entry.id or due > self._clock.time():
            return True
        head = self._waiting.get(head_id)
        return head is None or head.due_at != due  # a stale top: let a round sort it out

    def add_many(self, added: Sequence[tuple[Entry, bool]]) -> None:
        """`add` of each (entry, scheduled): a batch's messages, with the checks that
        hold for all of them made once, and one wake."""
        if self._at_accept or self._elsewhere is not None or self._added_later is not None:
            for entry, scheduled in added:
                self.add(entry, scheduled=scheduled)
            return
        waiting, heaps, expiry, later = self._waiting, self._heaps, self._expiry, self._scheduled
        push, depths = heapq.heappush, self._depths
        if not waiting.keys().isdisjoint(map(_ID, map(_ENTRY, added))):  # one entry per id
            for entry, scheduled in added:
                if not scheduled and (held := waiting.get(entry.id)) is not None:
                    depths.leave(held, False)
        queued: list[Entry] = []
        later_ones: list[Entry] = []
        for entry, scheduled in added:
            if scheduled:
                push(later, (entry.due_at, entry.id, entry))
                later_ones.append(entry)
            else:
                waiting[entry.id] = entry
                push(heaps[entry.priority], (entry.due_at, entry.id))
                push(expiry, (entry.expires_at, entry.id))
                queued.append(entry)
        depths.enter_all(queued, False)  # counted in C, not a call per message
        depths.enter_all(later_ones, True)
        planned = self._sleep_until
        if added and (planned is None or self._any_round_needed(added, planned)):
            self._wake.set()

    def _any_round_needed(self, added: Sequence[tuple[Entry, bool]], planned: float) -> bool:
        """`_round_needed` of any of a batch's entries (all in the queue already), the
        full check only for the first that is due before `planned` in each class: the
        class's head is the same for the others, and the clock only moves on, so its
        head holds them back too unless one of them is that head. Under a backlog that
        was a call and a clock read per message."""
        heads: dict[Priority, str] = {}  # a class's head, seen to hold back its entries
        for entry, scheduled in added:
            if entry.expires_at < planned:
                return True
            if entry.due_at >= planned:
                continue
            if scheduled:
                return True
            head_id = heads.get(entry.priority)
            if head_id is None:
                if self._round_needed(entry, False, planned):
                    return True
                heads[entry.priority] = self._heaps[entry.priority][0][1]
            elif head_id == entry.id:
                return True
        return False

    def forget(self, message_id: str) -> None:
        """Drop a message that left the queue by other means (cancelled)."""
        entry = self._waiting.pop(message_id, None)
        if entry is not None:
            self._depths.leave(entry, False)
