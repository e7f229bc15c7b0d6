"""The clinical tables in the cluster's PostgreSQL (cluster migration 17): the
`ClinicalDb` of `gateway/clinical/db.py` on a cluster node.

The clinical jobs (the appointment state machine, the reminder planner, the notices,
the templates) are synchronous functions over a DB-API connection, written once for
SQLite. Here a job runs in a worker thread against `Bridge`, which hands each
statement to the event loop's psycopg connection (`run_coroutine_threadsafe`) and
waits for its rows: the job's statements are that connection's, in the transaction
the loop opened around it, so its rows commit with whatever else the caller adds
(the notice runner's accepts, through `accept_many_within_shared`), or not at all.

`?` placeholders become `%s` (and a literal `%` becomes `%%`); rows come back as
tuples. A serial job first takes one advisory transaction lock, as SQLite's single
writer serialises every clinical write: two nodes upserting one external key, or
saving one template name, take turns instead of racing to a unique-key error.

A job that names what it changes (`keys`: an HL7 message's control id, appointment,
patient and number) takes that lock shared and one exclusive lock per key, in one
order: jobs with no key in common run at once on any node (each job is some 30
statement round trips, so one lock for all held a site to one job at a time), jobs
sharing a key take turns, and a job taking the lock whole waits for every keyed one
and holds them all off. A key's lock is the two-int form, so it never meets the
one-bigint CLINICAL_LOCK; its number is a keyed digest of the key (pg_locks shows no
MRN or number), and two keys that collide only take turns.

On a node a keyed job (an HL7 message's) runs instead on a connection of its own
thread (`clinical_thread.py`, given as `threads`): the same locks, none of the bridge's
waits for the loop. Every other job stays on the bridge.

A key rotation made on another node since this node's last heartbeat is taken up
before a read returns a ciphertext of the new generation, and a job that met one runs
again once it has been taken up (as the shared inbound's reads do).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from psycopg import AsyncConnection

from gateway.clinical.commands import LockKey
from gateway.clinical.db import Row
from gateway.clinical.lock_names import canonical_set
from gateway.cluster import seal_guard
from gateway.cluster.lease import Pool
from gateway.cluster.shared_keys import KeyringWatch
from gateway.store.crypto import DecryptError, FieldCipher, header_generation

if TYPE_CHECKING:
    from gateway.cluster.clinical_thread import ClinicalThreads

T = TypeVar("T")

CLINICAL_LOCK = 0x736D7367_77000017  # pg_advisory_xact_lock key: "smsgw" + its migration, 17
KEY_SPACE = 0x736D7367  # the keys' locks: pg_advisory_xact_lock(KEY_SPACE, digest), "smsg"


def key_numbers(cipher: FieldCipher, keys: Collection[LockKey]) -> list[int]:
    """The keys' lock numbers, sorted (every job locks in one order: no deadlock). A
    patient or number is locked as the row it names (`lock_names.canonical`), so a
    message's key and the stored row's are one lock."""
    return sorted(
        {
            int.from_bytes(cipher.keyed_digest("clinical_lock", *key)[:4], "big", signed=True)
            for key in canonical_set(cipher, keys)
        }
    )


def statement(sql: str, params: Sequence[Any] | None) -> tuple[bytes, Sequence[Any] | None]:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal `%` doubled); without
    parameters psycopg sends the text as it is."""
    if not params:
        return sql.encode(), None
    return sql.replace("%", "%%").replace("?", "%s").encode(), params


class BridgedCursor:
    """The rows of one statement, fetched whole (clinical statements return few)."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class Bridge:
    """A DB-API shaped connection for a job in a worker thread, over the loop's
    psycopg connection (never called from the loop's own thread: it would wait on
    itself)."""

    def __init__(self, conn: AsyncConnection[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self.abandoned = threading.Event()  # set: the transaction is being rolled back

    def close(self) -> None:
        """No statement after this one (the transaction is being abandoned)."""
        self.abandoned.set()

    async def _execute(self, sql: str, params: Sequence[Any] | None) -> BridgedCursor:
        cur = await self._conn.execute(*statement(sql, params))
        rows = await cur.fetchall() if cur.description is not None else []
        return BridgedCursor(rows, cur.rowcount)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> BridgedCursor:
        if self.abandoned.is_set():
            raise RuntimeError("the bridged transaction was abandoned")
        future = asyncio.run_coroutine_threadsafe(self._execute(sql, params), self._loop)
        return future.result()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for params in rows:
            self.execute(sql, params)

    def within_shared(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`work` on the loop with this job's psycopg connection, in its transaction (a
        job accepting a message: `Messages.accept_many_within_shared`)."""
        if self.abandoned.is_set():
            raise RuntimeError("the bridged transaction was abandoned")
        return asyncio.run_coroutine_threadsafe(_awaited(work(self._conn)), self._loop).result()


async def _awaited(pending: Awaitable[T]) -> T:
    return await pending


async def run_bridged(conn: AsyncConnection[Any], job: Callable[[sqlite3.Connection], T]) -> T:
    """`job` against `conn` (in the caller's transaction), from a worker thread.

    Cancelled (the gateway stopping), it still waits for the thread, with the bridge
    closed: a statement the job sends after its transaction ended would otherwise run
    on the connection once the pool has lent it to someone else."""
    bridge = Bridge(conn, asyncio.get_running_loop())
    # The jobs are typed for sqlite3's connection; Bridge offers the part they use
    # (execute, executemany, fetchone/fetchall/iteration, rowcount).
    thread = asyncio.ensure_future(asyncio.to_thread(job, cast(sqlite3.Connection, bridge)))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        bridge.close()
        await asyncio.wait({thread})  # its exception (the closed bridge's) is dropped
        if not thread.cancelled():
            thread.exception()  # retrieved: never "exception was never retrieved"
        raise


class ClusterClinicalDb:
    """`ClinicalDb` on the shared PostgreSQL."""

    shared = True

    def __init__(
        self,
        pool: Pool,
        cipher: Callable[[], FieldCipher],
        keys: KeyringWatch | None = None,
        threads: ClinicalThreads | None = None,
    ) -> None:
        """`pool`: the shared queue's; `cipher`: the shared keyring's current cipher;
        `keys`: what takes up a generation another node's rotation added; `threads`:
        where a keyed job runs on a connection of its own (`clinical_thread.py`)."""
        self._pool = pool
        self._cipher = cipher
        self._keys = keys
        self._threads = threads
        self.after_commit: list[Callable[[], None]] = []

    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def cipher(self) -> FieldCipher:
        return self._cipher()

    @property
    def keys(self) -> KeyringWatch | None:
        return self._keys

    async def run(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        serial: bool = True,
        keys: Collection[LockKey] | None = None,
    ) -> T:
        # A job refused for sealing under a retired key runs once more under the key
        # taken up (an HL7 message whose retry is refused too is answered AR: resend).
        return await seal_guard.retried(self._keys, lambda: self._run_opening(job, serial, keys))

    async def _run_opening(
        self, job: Callable[[sqlite3.Connection], T], serial: bool, keys: Collection[LockKey] | None
    ) -> T:
        try:
            return await self._run(job, serial, keys)
        except DecryptError:  # rolled back; sealed by a rotation this node has not seen?
            if not await self.took_up_keys():
                raise
            return await self._run(job, serial, keys)

    async def took_up_keys(self) -> bool:
        """Whether the cipher took up generations another node's rotation added."""
        return self._keys is not None and await self._keys.check() is not None

    async def _run(
        self, job: Callable[[sqlite3.Connection], T], serial: bool, keys: Collection[LockKey] | None
    ) -> T:
        if serial and keys is not None and self._threads is not None:
            done = await self._threads.run(job, key_numbers(self.cipher, keys))
            self.committed()
            return done
        async with self._pool.connection() as conn:
            async with conn.transaction():
                if serial and keys is None:
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLINICAL_LOCK,))
                elif serial and keys is not None:
                    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (CLINICAL_LOCK,))
                    for number in key_numbers(self.cipher, keys):
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(%s, %s)", (KEY_SPACE, number)
                        )
                done = await run_bridged(conn, job)
            self.committed()
            return done

    def committed(self) -> None:
        for callback in self.after_commit:
            callback()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(*statement(sql, params))
            rows: list[Row] = list(await cur.fetchall())
        if self._keys is not None and self._unknown_generation(rows):
            await self._keys.check()
        return rows

    def _unknown_generation(self, rows: Sequence[Row]) -> bool:
        known = self.cipher.generations
        for row in rows:
            for value in row:
                if isinstance(value, bytes):
                    generation = header_generation(value)
                    if generation is not None and generation not in known:
                        return True
        return False

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None
