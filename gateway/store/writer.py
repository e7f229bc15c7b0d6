"""Group commit: many callers, one transaction, one fsync.

Theory of operation. Every write goes through one `GroupCommitWriter`, which owns the
only writing connection (plain `sqlite3` on a thread of its own). Callers hand it
either rows to insert (`insert`) or a job, a function run against the connection
(`run`). While a transaction is in flight, new work piles up on the event loop; when it
commits, everything that piled up goes in the next transaction. Under load batches
grow by themselves, so durability costs one fsync per batch, not per message; with no
load a write commits at once. Inserts of the same statement are sent with one
`executemany`. Each job runs inside a savepoint, so a job that raises rolls back alone
and changes nothing, while the rest of the batch commits. The hot paths (claims, sends,
receipts, accepts) are grouped jobs (`run_grouped`): every item handed to the same function
meanwhile goes to one call in one savepoint, and only if that call raises is each item
retried alone. The transaction's first step (its inserts, or else its first job or group)
has no savepoint: if it raises, the transaction is rolled back and begun again, which
spares as much, and SQLite's cost per trigger-firing statement inside a savepoint grows
with what the savepoint has kept (`_first_step`). A caller's future resolves only after
the commit returned, i.e. after the WAL is synced (`synchronous=FULL`).

Bulk work that may wait (a campaign's pass: up to 200 recipients in one job) goes
through `run_after_others`: such a job runs in a transaction of its own, never with
interactive work in it, and only when nothing else is pending or after one other
transaction went ahead of it. So an accept or a claim waits for at most the one bulk
job already running, not also for one that would share its commit; and bulk work is
never held back for longer than one transaction (`make bench-campaign`).

Lazy work (`run_grouped(..., lazy=True)`: a submit's `sent` and a receipt, whose
message is already safe as `sending` or `sent`) starts no transaction of its own: it
joins the next one something else starts (an accept, a claim), or commits after
`lazy_delay` if nothing does. Each commit writes whole pages of every table and index it
touched, so one commit carrying several messages' changes writes far fewer bytes per
message than one commit each (`bench/diskwrites.py`).

Checkpoints: SQLite's automatic one runs in this thread right after a COMMIT once the WAL
holds `wal_autocheckpoint` frames. While eager work piles up behind the commits (load)
that is every 1,000 frames, short stalls; while nothing waits (`QUIET_AFTER_COMMITS`
commits in a row found nothing behind them), every 4,000, so the hot
pages go into the file less often (`WAL_AUTOCHECKPOINT_QUIET`); and after a transaction
of many rows (`BULK_TRANSACTION_ROWS`: batch requests) every 8,000, as at 1,000 each
such commit would checkpoint (`WAL_AUTOCHECKPOINT_BULK`).

Measured here (`../shared/reference/performance.md` §3d): the batch formed on the loop
with one transaction in flight beat both a writer thread woken per item and aiosqlite's
three hops per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.store.bulk_insert import insert_rows
from gateway.store_failure import storage_failure

log = structlog.get_logger("smsgw.store")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Statement = tuple[str, Sequence[Any]]
# Handles many items of one kind in one go; returns one outcome per item, in order (an
# exception instance as the outcome fails that item alone).
GroupJob = Callable[[sqlite3.Connection, list[Any]], list[Any]]


@dataclass(slots=True)
class _Group:
    fn: GroupJob
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Batch:
    inserts: list[tuple[list[Statement], asyncio.Future[None]]] = field(default_factory=list)
    # Jobs and groups in the order they first arrived.
    steps: list[tuple[Job, asyncio.Future[Any]] | _Group] = field(default_factory=list)
    groups: dict[GroupJob, _Group] = field(default_factory=dict)
    size: int = 0
    eager: int = 0  # items that want a transaction now (not lazy ones)
    proves_room: bool = False  # a commit of it shows the store can grow (a probe's)

    def __len__(self) -> int:
        return self.size

    def futures(self) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = [fut for _, fut in self.inserts]
        for step in self.steps:
            if isinstance(step, _Group):
                futures.extend(step.futures)
            else:
                futures.append(step[1])
        return futures


class WriterClosed(RuntimeError):
    pass


# What the writer's thread hands back to the loop: (result, None) or (None, error).
Deliver = Callable[[Any, BaseException | None], None]


class _WriterThread:
    """The one thread that uses the writing connection: calls from the loop in order,
    each outcome handed back to the loop by one `call_soon_threadsafe`. A
    `ThreadPoolExecutor` did the same through two futures per transaction (the
    executor's, its asyncio wrapper) and their callbacks, a lock and a condition on
    each side: Python run once per transaction on both threads, about 140 bytecodes of
    every accept at 16 clients (groups of 5-8; bench/README.md, ninth pass)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, Callable[..., Any], tuple[Any, ...], Deliver] | None
        ] = queue.SimpleQueue()
        # A daemon: a store never closed must not hold the interpreter's exit. A commit
        # cut off there was never answered: its callers got no 202.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        deliver: Deliver,
    ) -> None:
        self._calls.put((loop, fn, args, deliver))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on this thread, awaited."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def deliver(result: Any, error: BaseException | None) -> None:
            if fut.done():  # the awaiting task was cancelled
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        self.call(loop, fn, args, deliver)
        return await fut

    def _serve(self) -> None:
        get = self._calls.get
        while (call := get()) is not None:
            loop, fn, args, deliver = call
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as e:  # handed to the caller, as an executor's future does
                error = e
            # A closed loop has nobody waiting (asyncio's `wrap_future` skips it too); it
            # may close between the check and the call, and the thread must live on.
            with contextlib.suppress(RuntimeError):
                if not loop.is_closed():
                    loop.call_soon_threadsafe(deliver, result, error)
            del call, fn, args, deliver, result, error  # no reference kept while idle

    def stop(self) -> None:
        """After every call handed in so far."""
        self._calls.put(None)
        self._thread.join()


# A new store's page size (an existing one keeps its own). Every commit writes each page
# it touched whole; at one message's changes per commit, 2 KiB pages write about a third
# less than 4 KiB ones (bench/diskwrites.py). A row of a one-segment message fits one.
PAGE_SIZE = 2048
# WAL frames between automatic checkpoints while work piles up behind the commits (the
# last commit found eager work waiting when it returned): SQLite's default, 1,000. A
# checkpoint writes each page changed since the last one into the file once; every
# 4,000 frames wrote the hot pages a quarter as often (41.9 -> 36.2 KiB per message at
# saturation), but the checkpoint runs in the committing writer thread, and under load
# its longer stalls put the accept p99 at 64 clients at 29 ms, the ceiling's at 28,
# against 23-30 and 18-21 at 1,000 (`bench/accept.py --only accept`, alternating, quiet
# machine; target p99 <= 25 ms).
WAL_AUTOCHECKPOINT = 1000
# ... and while nothing waits behind them (a trickle, a paced route: what the write
# budget is about): a checkpoint stalls no waiting caller, and the hot pages (index
# tails, the newest rows) go into the file a quarter as often (bench/wal_pages.py
# --trickle: 1.13 -> 0.72 checkpoint pages per message). A WAL of up to about 8 MB.
WAL_AUTOCHECKPOINT_QUIET = 4000
# Commits in a row that found nothing waiting before the writer counts as quiet. Under
# load at 16 clients a third of the commits return to find nothing waiting yet (the
# answered clients' next requests still on their way), and switching at each cost two
# `PRAGMA wal_autocheckpoint` statements per flip, about 40 us of the writer's CPU,
# 1.7 us per accept (`profile_accept.py -c 16 --sql 8`); a trickle stays quiet as before.
QUIET_AFTER_COMMITS = 4
# ... and after a transaction that changed this many rows (a batch request's messages:
# about a WAL frame each, the recipients' index pages being random): at 1,000 frames
# every such commit would checkpoint, each stall as long as the transaction. At 4,000
# one commit in three or four does, and a page hit by several of them is written into
# the file once: 12.6 -> 9.9 and 10.4 -> 7.8 us of the writer thread's CPU per row of
# 1,000-row transactions, wall time per row 187 -> 154 and 136 -> 99 us (the fsyncs;
# alternating in one process, busy machine: bench/README.md, batch accepts). At 8,000
# (`WAL_AUTOCHECKPOINT_BULK`) more of a checkpoint's pages were hit more than once:
# `COMMIT` 10.0 -> 8.8 us a row, 16,000 only 8.6 (bench/README.md, tenth pass). A WAL
# of up to about 16-20 MB; a single send's commit after such a batch checkpoints what the
# batches left, a stall twice as long as at 4,000 at most.
BULK_TRANSACTION_ROWS = 500
WAL_AUTOCHECKPOINT_BULK = 8000
# The writing connection's page cache, KiB (SQLite's default is 2,000). A message's row
# lands on a random leaf of the recipients' index (`messages_to`: about 5,000 pages of
# 2 KiB at 150,000 rows); once that index outgrows the cache most rows read their leaf
# back from the WAL or the file. Rows 75,000-150,000 of 1,000-row transactions,
# alternating in one process: insert 24.6 -> 20.5 us a row at 8 MiB (19.8 at 16 MiB);
# rows 50,000-100,000: 23.8 -> 19.8 at 16 MiB (bench/README.md, batch accepts). The
# cache fills only as the writer touches pages: at most 6 MiB more resident memory.
WRITER_CACHE_KIB = 8192


def connect(path: Path, synchronous: str, *, read_only: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    if not read_only:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {path} to WAL (got {mode})")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


# How long lazy work waits for a transaction to join before it starts one: far below
# what a carrier waits for a receipt's answer, about one message's gap at 10/s.
LAZY_DELAY = 0.2


class GroupCommitWriter:
    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        max_batch: int = 2000,
        lazy_delay: float = LAZY_DELAY,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._max_batch = max_batch
        self.lazy_delay = lazy_delay
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._lazy_due = False
        self._draining = 0
        self._thread: _WriterThread | None = None  # started by `open`
        self._conn: sqlite3.Connection | None = None
        self._pending = _Batch()
        self._later: list[tuple[Job, asyncio.Future[Any]]] = []  # `run_after_others`
        self._later_waited = False  # a transaction went ahead of `_later[0]`
        self._busy = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self.items = 0
        # Why the last transaction could not be written (`store_failure.storage_failure`: the
        # disk is full or failing), until one that needed room commits (new rows, or the
        # store's probe for room).
        self.failure: str | None = None
        # Called on the loop after each commit (the outbox dispatcher's wake): cheap,
        # never blocking.
        self.after_commit: list[Callable[[], None]] = []
        self.failed_batches = 0  # transactions that failed to commit (for /metrics)
        # Commits in a row that found nothing waiting: under QUIET_AFTER_COMMITS, eager
        # work was waiting after one of the last few, so checkpoint often and short.
        self._lone_commits = 0
        self._checkpoint_every = WAL_AUTOCHECKPOINT  # the connection's, on the writer thread

    async def open(self) -> None:
        thread = _WriterThread("smsgw-db-writer")
        try:
            self._conn = await thread.run(connect, self._path, self._synchronous)
        except BaseException:
            thread.stop()  # idle: its one call was delivered
            raise
        self._thread = thread

    async def call_outside_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread with no transaction open (migrations, checkpoints)."""
        await self.drain()
        conn = self._conn
        if conn is None or self._thread is None:
            raise WriterClosed("the store is closed")
        return await self._thread.run(fn, conn)

    def insert(self, statements: list[Statement]) -> asyncio.Future[None]:
        """Insert rows that commit together (e.g. a message and its first event)."""
        fut: asyncio.Future[None] = self._loop().create_future()
        self._enqueue()
        self._pending.inserts.append((statements, fut))
        self._pending.size += 1
        self._pending.eager += 1
        return fut

    def run(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        lazy: bool = False,
        proves_room: bool = False,
    ) -> asyncio.Future[T]:
        """Run `job` in the writer's next transaction, in its own savepoint (`lazy`: see
        `run_grouped`; `proves_room`: its commit clears a failing store, see `failure`)."""
        fut: asyncio.Future[T] = self._loop().create_future()
        self._enqueue(lazy)
        self._pending.steps.append((job, fut))
        self._pending.proves_room |= proves_room
        self._pending.size += 1
        self._pending.eager += not lazy
        return fut

    def run_after_others(self, job: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run bulk `job` in a transaction of its own, after the work already pending
        (at most one transaction after it), in its own savepoint as `run`."""
        fut: asyncio.Future[T] = self._loop().create_future()
        self._enqueue()
        self._later.append((job, fut))
        return fut

    def run_grouped(self, fn: GroupJob, item: Any, *, lazy: bool = False) -> asyncio.Future[Any]:
        """Hand `item` to `fn` in the next transaction, together with every other item
        given to the same `fn` meanwhile: one call and one savepoint for all of them (the
        hot paths: claims, sends, receipts). If the call raises, each item is retried on
        its own so that one bad item rolls back alone. A `lazy` item waits up to
        `lazy_delay` for a transaction started by other work."""
        # `_loop` and `_enqueue` written out: every accept, claim and send comes here,
        # and under load a transaction is in flight, so `_enqueue` would do nothing.
        if self._closed or self._conn is None:
            raise WriterClosed("the store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._busy:
            self._enqueue(lazy)
        batch = self._pending
        group = batch.groups.get(fn)
        if group is None:
            group = batch.groups[fn] = _Group(fn)
            batch.steps.append(group)
        group.items.append(item)
        group.futures.append(fut)
        batch.size += 1
        batch.eager += not lazy
        return fut

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._closed or self._conn is None:
            raise WriterClosed("the store is closed")
        return asyncio.get_running_loop()

    def _enqueue(self, lazy: bool = False) -> None:
        if self._busy:  # a transaction is due or in flight: its successor takes this
            return
        self._idle.clear()
        if lazy:
            self._lazy_soon()
            return
        # Let every request that is already runnable join this batch.
        asyncio.get_running_loop().call_soon(self._flush)
        self._busy = True

    def _lazy_soon(self) -> None:
        if self._lazy_timer is None:
            loop = asyncio.get_running_loop()
            self._lazy_timer = loop.call_later(self.lazy_delay, self._lazy_expired)

    def _lazy_expired(self) -> None:
        self._lazy_timer = None
        self._lazy_due = True
        if not self._busy:
            self._busy = True
            self._flush()

    def _flush(self) -> None:
        if self._later and (self._later_waited or not self._pending.eager):
            # Bulk work alone; lazy work pending waits for the next transaction.
            self._later_waited = False
            self._commit_soon(_Batch(steps=[self._later.pop(0)], size=1, eager=1))
            return
        batch, self._pending = self._pending, _Batch()
        if not batch:
            self._busy = False
            self._idle.set()
            return
        if not batch.eager and not self._lazy_due and not self._draining:
            # Only lazy work: it waits for the next transaction (or its timer).
            self._pending = batch
            self._busy = False
            self._lazy_soon()
            return
        self._later_waited = bool(self._later)
        self._lazy_due = False
        if self._lazy_timer is not None:  # every lazy item goes in this transaction
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if len(batch.inserts) > self._max_batch:
            # Inserts beyond the cap wait for the next transaction; the rest goes now.
            self._pending.inserts = batch.inserts[self._max_batch :]
            self._pending.size = self._pending.eager = len(self._pending.inserts)
            batch.inserts = batch.inserts[: self._max_batch]
            batch.size -= self._pending.size
            batch.eager -= self._pending.size
        self._commit_soon(batch)

    def _commit_soon(self, batch: _Batch) -> None:
        backlog = self._lone_commits < QUIET_AFTER_COMMITS
        every = WAL_AUTOCHECKPOINT if backlog else WAL_AUTOCHECKPOINT_QUIET
        thread = self._thread
        assert thread is not None
        settle = partial(self._settle, batch)  # no frame of its own, as a lambda's
        thread.call(asyncio.get_running_loop(), self._commit, (batch, every), settle)

    def _settle(
        self, batch: _Batch, outcomes: list[Any] | None, error: BaseException | None
    ) -> None:
        self.batches += 1
        self.items += batch.size
        self.failed_batches += error is not None
        futures = batch.futures()
        self._note_failure(error, outcomes, proves_room=batch.proves_room or bool(batch.inserts))
        if error is not None or outcomes is None:
            failed = error if error is not None else RuntimeError("the commit gave no outcomes")
            for fut in futures:
                if not fut.done():
                    fut.set_exception(failed)
        else:
            for fut, outcome in zip(futures, outcomes, strict=True):
                if fut.done():
                    continue
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
            for callback in self.after_commit:
                callback()
        if self._pending.eager > 0 or self._later:
            self._lone_commits = 0
        else:
            self._lone_commits += 1
        self._flush()

    def _note_failure(
        self, error: BaseException | None, outcomes: list[Any] | None, *, proves_room: bool
    ) -> None:
        failed = (error,) if error is not None else (outcomes or ())
        for e in failed:
            if isinstance(e, BaseException) and (why := storage_failure(e)) is not None:
                if self.failure is None:
                    log.error("store_failing", reason=why)
                self.failure = why
                return
        # Only new rows, or the probe's check for room, clear it: a full disk still lets
        # an update that fits the pages it has commit (a send's state), and readiness
        # would flap back while every accept still fails.
        if error is None and self.failure is not None and proves_room:
            log.info("store_recovered", was=self.failure)
            self.failure = None

    def _commit(self, batch: _Batch, checkpoint_every: int = WAL_AUTOCHECKPOINT) -> list[Any]:
        conn = self._conn
        assert conn is not None
        changed_before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            steps = batch.steps
            if batch.inserts:
                outcomes: list[Any] = self._insert_all(conn, batch.inserts)
            elif steps:  # the first step alone: its own savepoint would guard nothing
                outcomes = self._first_step(conn, steps[0])
                steps = steps[1:]
            else:
                outcomes = []
            for step in steps:
                if isinstance(step, _Group):
                    outcomes.extend(self._group(conn, step))
                else:
                    outcomes.append(self._savepoint(conn, step[0]))
            if conn.total_changes - changed_before >= BULK_TRANSACTION_ROWS:
                checkpoint_every = WAL_AUTOCHECKPOINT_BULK
            if checkpoint_every != self._checkpoint_every:  # read by SQLite after the COMMIT
                conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_every}")
                self._checkpoint_every = checkpoint_every
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    @staticmethod
    def _insert_all(
        conn: sqlite3.Connection, inserts: list[tuple[list[Statement], Any]]
    ) -> list[Any]:
        """The inserts, first in their transaction: no savepoint (see `_first_step`)."""
        by_sql: dict[str, list[Sequence[Any]]] = {}
        for statements, _ in inserts:
            for sql, params in statements:
                by_sql.setdefault(sql, []).append(params)
        try:
            for sql, rows in by_sql.items():
                insert_rows(conn, sql, rows)
            return [None] * len(inserts)
        except sqlite3.Error:
            if not conn.in_transaction:  # SQLite rolled it all back (disk full): no retry
                raise
            _begin_again(conn)
        # One bad row must not sink its neighbours: retry each group on its own.
        return [GroupCommitWriter._savepoint(conn, _statements_job(s)) for s, _ in inserts]

    def _first_step(self, conn: sqlite3.Connection, step: _Group | tuple[Job, Any]) -> list[Any]:
        """The transaction's first step, with no savepoint of its own: nothing before it
        in the transaction for one to spare, so if it raises, the transaction is rolled
        back and begun again, and it fails as a step in a savepoint does (a group's items
        retried one by one, a job's error its outcome). Why not one anyway: every
        statement that fires a trigger (a message's insert, an event's) keeps a statement
        journal, and SQLite, ending each such statement inside a savepoint, walks the
        in-memory journal of every page that savepoint has kept so far: a cost per
        statement that grows with the group: 61 -> 28-30 us per message row of 500-message
        batches (`bench/README.md`, fifth pass)."""
        try:
            if isinstance(step, _Group):
                return step.fn(conn, step.items)
            return [step[0](conn)]
        except Exception as e:
            if not conn.in_transaction:  # the whole transaction is gone: fail the batch
                raise
            _begin_again(conn)
            if isinstance(step, _Group):
                return [self._savepoint(conn, _one_item(step.fn, item)) for item in step.items]
            return [e]

    def _group(self, conn: sqlite3.Connection, group: _Group) -> list[Any]:
        conn.execute("SAVEPOINT grouped")
        try:
            outcomes = group.fn(conn, group.items)
        except Exception:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO grouped")
            conn.execute("RELEASE grouped")
            return [self._savepoint(conn, _one_item(group.fn, item)) for item in group.items]
        conn.execute("RELEASE grouped")
        return outcomes

    @staticmethod
    def _savepoint(conn: sqlite3.Connection, job: Job) -> Any:
        conn.execute("SAVEPOINT job")
        try:
            result = job(conn)
        except Exception as e:
            if not conn.in_transaction:  # the whole transaction is gone: fail the batch
                raise
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return e
        conn.execute("RELEASE job")
        return result

    async def drain(self) -> None:
        """Until everything handed in so far is committed (lazy work too, at once)."""
        self._draining += 1
        try:
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_expired()
            await self._idle.wait()
        finally:
            self._draining -= 1

    async def close(self) -> None:
        if self._closed:
            return
        await self.drain()
        self._closed = True
        conn, thread = self._conn, self._thread
        if thread is None:
            return
        if conn is not None:
            await thread.run(_checkpoint_and_close, conn)
        thread.stop()  # idle by now: its last call was delivered


def _begin_again(conn: sqlite3.Connection) -> None:
    """The transaction whose first step failed, rolled back and begun again, empty."""
    conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")


def _statements_job(statements: list[Statement]) -> Job:
    def job(conn: sqlite3.Connection) -> None:
        for sql, params in statements:
            conn.execute(sql, params)

    return job


def _one_item(fn: GroupJob, item: Any) -> Job:
    def job(conn: sqlite3.Connection) -> Any:
        outcome = fn(conn, [item])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return job


def _checkpoint_and_close(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
