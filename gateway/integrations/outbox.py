"""The outbox dispatcher: delivers committed events to every consumer, at least once.

Theory of operation. Writers put an outbox row in the transaction of the change it
reports (`gateway/store/outbox_sql.py`). Each registered consumer has a lane: a task
that reads rows in order and delivers them **strictly in order per message** (one
consumer's backlog never waits on another's): up to the consumer's `concurrency`
events at once (a webhook endpoint's key; others one at a time), each message's (or
route's) events of a batch in sequence by one worker, different messages side by side.
A batch ends when all its events are delivered or held. A failed delivery
(`DeliveryFailed`) holds only its own message's events on that lane (route health
events are held per route): they wait behind it in a queue of their own, retried by a
task of their own after an exponential back-off with full jitter (`uniform(0,
min(backoff_max, backoff_initial * 2**n))`) until `retry_for` seconds have passed since
the first attempt; then it becomes a dead letter and its message's next event goes.
The lane goes on with every other message meanwhile. The stored position is the last
event below which everything is finished (delivered or dead): the first held event
keeps it back. Every attempt's outcome is stored, so after a restart a lane re-reads
from its position, skips what it finished out of order, and resumes a held event's
back-off from its first attempt. Deliveries that went through at the first try are
recorded together, one write per batch (or before any retry or dead letter is
recorded): one write per event per consumer took the writer from the sends. Reads are
batched the same way: a round reads its rows with this lane's earlier attempts at them
in one statement, the personal fields of a `phi` endpoint's batch in one read per event
type, and looks for an admin's redeliveries only at start and after `redeliver()`. A crash
before that write delivers them again, which at-least-once allows (receivers drop
duplicates by id). A dead letter an admin redelivers is tried again out of order,
ahead of the lane's next event.

Lanes wake when the writer commits (debounced by `debounce` seconds so a burst of
commits costs one read), with a slow safety poll. The store is an `OutboxRepo`: the
node's SQLite, or on a cluster the shared PostgreSQL outbox
(`gateway/cluster/outbox_store.py`), where other nodes' commits wake nothing here and
the lanes poll at the repo's `poll`. Before each round a lane asks the repo whether
this node leads it (`lead`; alone, always): on a cluster one node delivers a consumer's
events; a lane taken over resumes from the stored position and attempts, one given up
drops what it held for the next leader to retry (at least once across a handover).
Network waits hold no store connection and no writer slot, and all lanes together keep
at most `concurrency` requests in flight, so a slow or dead receiver delays only its own
lane, never a send.
Delivered history is pruned after `retention_days`.

Sends come first. While the scheduler has submits in flight (`busy`), a lane delivers
at most `BUSY_BATCH` events per `yield_to_sends` seconds and catches up once sends
pause: on one core every delivery (JSON, a POST, a publish) is CPU taken from the sends,
and events are not time-critical. Under load an event so waits at most `yield_to_sends`
seconds for each `BUSY_BATCH` events ahead of it in its lane. Only consumed events are
written at all: `start()` tells the store which types some consumer accepts, and which
message states (an endpoint's `states`) (`outbox_sql.keep_only`). At shutdown,
`stop(grace)` lets the lanes deliver what is pending for up to `grace` seconds; the rest
stays in the store and goes after restart.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from drivers.clock import Clock, wait_event
from gateway.config import OutboxConfig
from gateway.integrations.events import (
    EVENT_TYPES,
    MESSAGE_STATUS,
    DeliveryFailed,
    EventConsumer,
    OutboxEvent,
)
from gateway.integrations.outbox_repo import OutboxRepo
from gateway.logs import exception_summary
from gateway.store import outbox_sql
from gateway.store.outbox_sql import Attempt, OutboxRow, OutboxStore
from gateway.store.store import Store

log = structlog.get_logger("smsgw.outbox")

BATCH = 200
BUSY_BATCH = 50  # events a lane delivers per `yield_to_sends` while sends are in flight
BUSY_POLL = 0.05  # seconds between looks at whether sends are still in flight
PRUNE_INTERVAL = 3600.0
STORE_RETRY = 5.0  # seconds before a lane tries again after the store failed it


@runtime_checkable
class Selective(Protocol):
    """A consumer that takes only some messages' events of an accepted type (callbacks:
    only messages that asked for one), asked once per batch; skipped events leave no
    delivery record."""

    async def wanted_messages(self, message_ids: Collection[str]) -> Collection[str]: ...


@runtime_checkable
class Tuned(Protocol):
    """A consumer with settings of its own (a webhook endpoint): events it may have in
    flight at once, and the message states it takes (None: all)."""

    @property
    def concurrency(self) -> int: ...

    @property
    def states(self) -> frozenset[str] | None: ...


@runtime_checkable
class Closable(Protocol):
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Held:
    row: OutboxRow
    event: OutboxEvent
    previous: Attempt | None  # its stored attempt (a resumed back-off), if any
    failed: str | None = None  # the reason its first attempt just failed, if it did


def _hold_key(row: OutboxRow) -> str:
    return row.message_id if row.message_id is not None else f"route:{row.route}"


@dataclass(slots=True)
class _Lane:
    consumer: EventConsumer
    concurrency: int = 1  # events in flight at once (different messages)
    states: frozenset[str] | None = None  # status events of these states only
    position: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    dead: int = 0
    last_run: float = float("-inf")  # monotonic start of the lane's last non-empty batch
    # First-try deliveries not yet recorded: written together, with the position
    # past them, at the end of a batch or before anything else is recorded.
    unrecorded: list[Attempt] = field(default_factory=list)
    cursor: int = 0  # the last event read (`position` may lag behind held events)
    # Whether an admin's redelivery may be waiting: at start, and after `redeliver()`
    # (the only writer of one), so a round does not look for them every time.
    look_for_redeliveries: bool = True
    # Whether this node leads the lane (`OutboxRepo.lead`): on a cluster one node does;
    # and whether another node does (its backlog and grace are that node's to report).
    leading: bool = False
    elsewhere: bool = False
    look_again: float = float("-inf")  # monotonic: when to look for redeliveries anyway
    # Per held message (or route): its failed event first, then its later ones, in order;
    # and the task retrying them.
    held: dict[str, deque[_Held]] = field(default_factory=dict)
    retrying: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def safe_position(self) -> int:
        """Everything up to here is finished: just below the first held event."""
        if self.held:
            return min(queue[0].row.seq for queue in self.held.values()) - 1
        return self.cursor

    @property
    def name(self) -> str:
        return self.consumer.name


class Outbox:
    """Register consumers with `register()` before `start()`."""

    def __init__(
        self,
        store: Store,
        config: OutboxConfig,
        clock: Clock,
        *,
        jitter: Callable[[float], float] | None = None,
        busy: Callable[[], bool] | None = None,
        repo: OutboxRepo | None = None,
    ) -> None:
        """`busy` says whether sends are in flight now (the lanes give way to them);
        `repo` where the events are (default: the node's own store)."""
        self._repo: OutboxRepo = repo if repo is not None else OutboxStore(store)
        self._config = config
        self._clock = clock
        # Full jitter: a draw from [0, ceiling); tests may set a chosen one.
        self.jitter = jitter or (lambda ceiling: random.uniform(0.0, ceiling))  # noqa: S311 - not a secret
        self._lanes: dict[str, _Lane] = {}
        self._limit = asyncio.Semaphore(config.concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._busy = busy
        self._progress = asyncio.Event()  # set after every lane's batch (`stop`'s grace)
        self._unwatch: Callable[[], None] | None = None

    @property
    def repo(self) -> OutboxRepo:
        return self._repo

    @property
    def consumers(self) -> list[EventConsumer]:
        return [lane.consumer for lane in self._lanes.values()]

    def register(self, consumer: EventConsumer) -> None:
        """Add a consumer (webhook endpoint, MQTT); before `start()`."""
        if self._started:
            raise RuntimeError("register consumers before the outbox starts")
        if consumer.name in self._lanes:
            raise ValueError(f"two outbox consumers named {consumer.name!r}")
        lane = _Lane(consumer)
        if isinstance(consumer, Tuned):
            lane.concurrency, lane.states = consumer.concurrency, consumer.states
        self._lanes[consumer.name] = lane

    async def start(self, *, run: bool = True) -> None:
        """Load positions; with `run`, start a task per lane and the pruner (tests
        pass False and call `run_once()`)."""
        self._started = True
        consumers = [lane.consumer for lane in self._lanes.values()]
        types = {t for t in EVENT_TYPES for c in consumers if c.accepts(t)}
        status = [lane for lane in self._lanes.values() if lane.consumer.accepts(MESSAGE_STATUS)]
        states: set[str] | None = set()
        for lane in status:
            states = None if states is None or lane.states is None else states | lane.states
        await self._repo.keep_only(types, states)
        positions = await self._repo.join(list(self._lanes))
        for name, lane in self._lanes.items():
            lane.position = lane.cursor = positions[name]
        self._unwatch = self._repo.watch(self.wake)
        if run:
            for lane in self._lanes.values():
                self._tasks.append(asyncio.create_task(self._run(lane)))
            self._tasks.append(asyncio.create_task(self._prune_loop()))

    def wake(self) -> None:
        for lane in self._lanes.values():
            lane.wake.set()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop the lanes, after up to `grace` seconds in which they deliver what is
        pending now (what is left goes after the next start)."""
        if grace > 0 and self._tasks:
            left = await self._settle(grace)
            if left:
                log.warning("outbox_shutdown_pending", consumers=left)
        retrying = [t for lane in self._lanes.values() for t in lane.retrying.values()]
        for task in self._tasks + retrying:
            task.cancel()
        await asyncio.gather(*self._tasks, *retrying, return_exceptions=True)
        self._tasks.clear()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        await self._repo.close()
        for lane in self._lanes.values():
            if isinstance(lane.consumer, Closable):
                await lane.consumer.close()

    async def _settle(self, grace: float) -> list[str]:
        """Wait up to `grace` seconds until every lane has finished (and recorded)
        each event committed before now; the names of the lanes that have not."""
        target = await self._repo.last_seq()
        deadline = self._clock.monotonic() + grace
        self.wake()

        def behind() -> list[str]:
            return [
                lane.name
                for lane in self._lanes.values()
                if not lane.elsewhere and (lane.position < target or lane.unrecorded or lane.held)
            ]

        while (late := behind()) and (left := deadline - self._clock.monotonic()) > 0:
            self._progress.clear()
            await wait_event(self._clock, self._progress, left)
        return late

    def lanes_state(self, last_seq: int) -> list[tuple[str, int, int, int, int]]:
        """Per consumer, for /metrics: backlog up to event `last_seq` (none here when
        another node leads the lane), messages held, and events delivered and dead since
        start."""
        return [
            (
                name,
                0 if lane.elsewhere else max(0, last_seq - lane.position),
                len(lane.held),
                lane.delivered,
                lane.dead,
            )
            for name, lane in self._lanes.items()
        ]

    async def redeliver(self, consumer: str, seq: int) -> bool:
        """Put a dead letter back in line (the panel's button); False if none."""
        done = await self._repo.redeliver(consumer, seq)
        lane = self._lanes.get(consumer)
        if done and lane is not None:
            lane.look_for_redeliveries = True
            lane.wake.set()
        return done

    # -- a lane ----------------------------------------------------------------------

    async def _run(self, lane: _Lane) -> None:
        poll = min(self._repo.poll or self._config.safety_poll, self._config.safety_poll)
        while True:
            lane.wake.clear()
            try:
                if not await self._lead(lane):
                    await self._clock.sleep(poll)
                    continue
                if (now := self._clock.monotonic()) >= lane.look_again:
                    # An admin's redelivery on another node wakes nothing here.
                    lane.look_for_redeliveries, lane.look_again = True, now + poll
                limit = await self._give_way(lane)
                worked = await self.run_once(lane.name, limit, finish=False)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store: try again later, never give up
                log.error("outbox_lane_failed", consumer=lane.name, error=exception_summary(e))
                await self._clock.sleep(STORE_RETRY)
                continue
            finally:
                self._progress.set()
            if worked:
                continue
            if not await wait_event(self._clock, lane.wake, poll):
                continue  # the poll: another node's commit or a lost wake costs this long
            # Real time, not the injected clock: this only lets a burst of commits
            # land before one read picks them all up.
            await asyncio.sleep(self._config.debounce)

    async def _lead(self, lane: _Lane) -> bool:
        """Whether this node delivers the lane's events now. A lane taken over resumes
        from the stored position (another node may have moved it); one given up drops
        what it held (the next leader retries it from the stored attempts)."""
        leading = await self._repo.lead(lane.name)
        if leading and not lane.leading:
            lane.position = lane.cursor = await self._repo.position(lane.name)
            lane.look_for_redeliveries = True
            log.info("outbox_lane_taken", consumer=lane.name, position=lane.position)
        elif lane.leading and not leading:
            for task in lane.retrying.values():
                task.cancel()
            await asyncio.gather(*lane.retrying.values(), return_exceptions=True)
            lane.retrying.clear()
            lane.held.clear()
            lane.unrecorded.clear()
            log.warning("outbox_lane_given_up", consumer=lane.name)
        lane.leading, lane.elsewhere = leading, not leading
        return leading

    async def _give_way(self, lane: _Lane) -> int:
        """While sends are in flight, wait until they pause or `yield_to_sends` has
        passed since this lane's last batch; the size of the batch it may run now."""
        hold = self._config.yield_to_sends
        if self._busy is None or hold <= 0:
            return BATCH
        until = lane.last_run + hold
        while self._busy():
            now = self._clock.monotonic()
            if now >= until:
                return BUSY_BATCH
            await self._clock.sleep(min(BUSY_POLL, until - now))
        return BATCH

    async def run_once(self, name: str, limit: int = BATCH, *, finish: bool = True) -> bool:
        """Deliver what is due for one lane: redeliveries (one attempt each), then up
        to `limit` events in order, each tried once; a failed one holds its message's
        later events, retried by a task of its own. With `finish` (burst mode for
        tests), wait for those retries too. True if it did anything."""
        lane = self._lanes[name]
        started = self._clock.monotonic()
        worked = await self._redeliveries(lane) if lane.look_for_redeliveries else False
        rows, tried = await self._repo.after_with_attempts(lane.name, lane.cursor, limit)
        # Not one finished out of order before a restart, nor one this lane skips:
        due = [
            row
            for row in rows
            if self._takes(lane, row)
            and ((p := tried.get(row.seq)) is None or p.state == outbox_sql.PENDING)
        ]
        open_ = {row.seq for row in due}  # removed as each is delivered or held
        try:
            chosen = await self._selected(lane, due)
            open_.intersection_update(row.seq for row in chosen)
            phis = await self._repo.phi_many(chosen) if lane.consumer.wants_phi else {}
            await self._deliver_rows(lane, chosen, tried, open_, phis)
        finally:
            # Past every row read up to the first unfinished one (a store failure or a
            # stop re-reads from there; what finished after it is skipped then).
            first_open = min(open_, default=None)
            for row in rows:
                if first_open is not None and row.seq >= first_open:
                    break
                lane.cursor = row.seq
                worked = True
            await self._record_unrecorded(lane)
        if lane.safe_position() > lane.position:
            await self._advance(lane)
        if finish:
            while lane.retrying:
                await asyncio.gather(*lane.retrying.values())
        if worked:
            lane.last_run = started
        return worked

    async def _redeliveries(self, lane: _Lane) -> bool:
        """The redeliveries an admin asked for, one attempt each; True if any."""
        lane.look_for_redeliveries = False  # (a `redeliver()` from now on sets it again)
        worked = False
        try:
            for seq in await self._repo.due_redeliveries(lane.name, self._clock.time()):
                row = await self._repo.row(seq)
                if row is not None:
                    previous = await self._repo.attempt(lane.name, seq)
                    event = await self._event(lane, row)
                    await self._until_done(lane, row, event, previous, redelivery=True)
                    worked = True
        except BaseException:
            lane.look_for_redeliveries = True  # not all done: look again next round
            raise
        return worked

    @staticmethod
    def _takes(lane: _Lane, row: OutboxRow) -> bool:
        if not lane.consumer.accepts(row.type):
            return False
        return row.type != MESSAGE_STATUS or lane.states is None or row.state in lane.states

    async def _selected(self, lane: _Lane, rows: list[OutboxRow]) -> list[OutboxRow]:
        """The rows a selective consumer wants (one question for the whole batch); the
        rows it skips count as finished."""
        if not rows or not isinstance(lane.consumer, Selective):
            return rows
        asked = {row.message_id for row in rows if row.message_id is not None}
        wanted = await lane.consumer.wanted_messages(asked) if asked else ()
        return [row for row in rows if row.message_id in wanted]

    async def _deliver_rows(
        self,
        lane: _Lane,
        rows: Sequence[OutboxRow],
        tried: dict[int, Attempt],
        open_: set[int],
        phis: dict[int, dict[str, Any]],
    ) -> None:
        """Deliver a batch's rows, up to `lane.concurrency` at once: each message's (or
        route's) rows in order by one worker, different messages side by side. A row
        leaves `open_` once delivered or held."""
        chains: dict[str, list[OutboxRow]] = {}
        for row in rows:
            chains.setdefault(_hold_key(row), []).append(row)
        queue = deque(chains.values())

        async def work() -> None:
            while queue:
                for row in queue.popleft():
                    event = await self._event(lane, row, phis)
                    await self._deliver_in_turn(lane, row, event, tried.get(row.seq))
                    open_.discard(row.seq)

        workers = min(lane.concurrency, len(queue))
        if workers <= 1:
            await work()
            return
        outcomes = await asyncio.gather(*(work() for _ in range(workers)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _deliver_in_turn(
        self, lane: _Lane, row: OutboxRow, event: OutboxEvent, previous: Attempt | None
    ) -> None:
        """One try now, unless its message is held (then it queues behind) or it is a
        resumed back-off; a failure holds its message."""
        key = _hold_key(row)
        if key in lane.held:
            lane.held[key].append(_Held(row, event, previous))
            return
        if previous is not None:
            self._hold(lane, key, _Held(row, event, previous))
            return
        now = self._clock.time()
        reason = await self._attempt(lane, event)
        if reason is None:
            lane.unrecorded.append(
                Attempt(lane.name, row.seq, outbox_sql.DELIVERED, 1, now, now, None, None)
            )
            lane.delivered += 1
        else:
            self._hold(lane, key, _Held(row, event, None, failed=reason))

    def _hold(self, lane: _Lane, key: str, first: _Held) -> None:
        lane.held[key] = deque([first])
        lane.retrying[key] = asyncio.create_task(self._retry_held(lane, key))

    async def _retry_held(self, lane: _Lane, key: str) -> None:
        """Finish a held message's events in order, then let its later ones through."""
        queue = lane.held[key]
        try:
            while queue:
                item = queue[0]
                try:
                    await self._until_done(lane, item.row, item.event, item.previous, item.failed)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the store: try again later, never give up
                    log.error("outbox_lane_failed", consumer=lane.name, error=exception_summary(e))
                    queue[0] = _Held(item.row, item.event, item.previous)  # tried afresh
                    await self._clock.sleep(STORE_RETRY)
                    continue
                queue.popleft()
                if not queue:
                    del lane.held[key]
                await self._advance(lane)
        finally:
            if lane.retrying.get(key) is asyncio.current_task():
                del lane.retrying[key]  # (a new hold of the same key has its own task)
            self._progress.set()

    async def _advance(self, lane: _Lane) -> None:
        """Store the position (everything below the first held event is finished)."""
        await self._record_unrecorded(lane)
        position = lane.safe_position()
        if position > lane.position:
            lane.position = position
            await self._repo.set_position(lane.name, position)

    async def _record_unrecorded(self, lane: _Lane) -> None:
        """One write for a run of first-try deliveries. Until it commits, a crash
        delivers them again (at least once; receivers drop duplicates by id)."""
        if lane.unrecorded:
            done, lane.unrecorded = lane.unrecorded, []
            position = max(lane.position, lane.safe_position())
            await self._repo.record_delivered(done, position)
            lane.position = position

    async def _event(
        self, lane: _Lane, row: OutboxRow, phis: dict[int, dict[str, Any]] | None = None
    ) -> OutboxEvent:
        """The event of `row`, with its personal fields for a consumer that takes them
        (from `phis`, the batch's, read together; else read now)."""
        phi = None
        if lane.consumer.wants_phi:
            phi = phis.get(row.seq) if phis is not None else await self._repo.phi(row)
        return OutboxEvent(
            id=row.id,
            seq=row.seq,
            type=row.type,
            at=row.at,
            message_id=row.message_id,
            route=row.route,
            data=row.data(),
            phi=phi,
        )

    async def _until_done(
        self,
        lane: _Lane,
        row: OutboxRow,
        event: OutboxEvent,
        previous: Attempt | None,
        failed: str | None = None,
        *,
        redelivery: bool = False,
    ) -> None:
        """Deliver one event, retrying, until it is delivered or dead (each outcome
        stored; the position is the caller's). `previous` is its stored attempt (a
        back-off to resume), `failed` the reason a first attempt just failed. A
        redelivery gets one attempt and stays dead if that fails."""
        attempts = 0 if previous is None else previous.attempts
        first_at = self._clock.time() if previous is None else previous.first_at
        if not redelivery and previous is not None and previous.next_at is not None:
            await self._clock.sleep(previous.next_at - self._clock.time())  # resumed back-off
        while True:
            attempts += 1
            reason, failed = (failed, None) if failed is not None else (None, None)
            if reason is None:
                reason = await self._attempt(lane, event)
            now = self._clock.time()
            if reason is None:
                done = Attempt(
                    lane.name, row.seq, outbox_sql.DELIVERED, attempts, first_at, now, None, None
                )
                await self._repo.record(done, advance=False)
                lane.delivered += 1
                return
            if redelivery or now - first_at >= self._config.retry_for:
                dead = Attempt(
                    lane.name, row.seq, outbox_sql.DEAD, attempts, first_at, now, None, reason
                )
                await self._repo.record(dead, advance=False)
                lane.dead += 1
                log.error(
                    "outbox_dead_letter",
                    consumer=lane.name,
                    event_id=event.id,
                    attempts=attempts,
                    reason=reason,
                )
                return
            ceiling = min(
                self._config.backoff_max, self._config.backoff_initial * 2 ** (attempts - 1)
            )
            delay = min(self.jitter(ceiling), first_at + self._config.retry_for - now)
            pending = Attempt(
                lane.name, row.seq, outbox_sql.PENDING, attempts, first_at, now, now + delay, reason
            )
            await self._repo.record(pending, advance=False)
            log.warning(
                "outbox_retry",
                consumer=lane.name,
                event_id=event.id,
                attempts=attempts,
                reason=reason,
                delay=round(delay, 3),
            )
            await self._clock.sleep(delay)

    async def _attempt(self, lane: _Lane, event: OutboxEvent) -> str | None:
        """One delivery; None if it went through, else the reason it did not."""
        try:
            async with self._limit:
                await lane.consumer.deliver(event)
        except DeliveryFailed as e:
            return e.reason
        except Exception as e:  # a consumer's bug: retried like any failure, and logged
            log.error("outbox_consumer_error", consumer=lane.name, error=exception_summary(e))
            return "consumer_error"
        return None

    async def _prune_loop(self) -> None:
        while True:
            await self.prune_once()
            await self._clock.sleep(PRUNE_INTERVAL)

    async def prune_once(self) -> int:
        before = self._clock.time() - self._config.retention_days * 86400
        try:
            removed = await self._repo.prune(before)
        except Exception as e:
            log.error("outbox_prune_failed", error=exception_summary(e))
            return 0
        if removed:
            log.info("outbox_pruned", events_removed=removed)
        return removed
