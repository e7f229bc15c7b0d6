"""Issue 18 on issue 13's feed: a clinical job that names what it changes locks those
keys, not every clinical write (`gateway/cluster/clinical_db.py`).

Two nodes (two pools on one PostgreSQL, one keyring): a job for patient P held open on
A makes a job for P on B wait until A commits, and B then reads A's row; a job for
another patient runs to its commit meanwhile; a job taking the lock whole waits for the
keyed one, and a keyed one waits for it. A wait is seen in `pg_locks` (an advisory lock
not granted), never timed. Each runs with the jobs over the loop's connection
(`Bridge`) and on the threads' own (`ClinicalThreads`, what a node gives HL7 jobs).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.clinical.commands import LockKey
from gateway.cluster.clinical_db import ClusterClinicalDb, key_numbers
from gateway.cluster.clinical_thread import ClinicalThreads
from gateway.cluster.lease import Pool
from gateway.store.crypto import FieldCipher

CIPHER = FieldCipher({1: os.urandom(32)}, os.urandom(32))
WAIT = 10.0


def _patient(mrn: str, appointment: str) -> list[LockKey]:
    return [("appointment", "ehr", appointment), ("patient", "ehr", "HOSP", mrn)]


@pytest.fixture
async def other(pool: Pool, pg_dsn: str) -> AsyncIterator[Pool]:
    """A second node's pool on the same database."""
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=4, open=False) as p:
        yield p


class Held:
    """A job that inserts its template name, then waits until released (a job busy
    with its statements); what it read of the other jobs' names first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = threading.Event()
        self.release = threading.Event()
        self.saw: list[str] = []

    def __call__(self, conn: Any) -> None:
        self.saw = [r[0] for r in conn.execute("SELECT name FROM template_heads ORDER BY 1")]
        conn.execute("INSERT INTO template_heads VALUES (?, 'en', 1, 0)", (self.name,))
        self.started.set()
        self.release.wait(WAIT)


async def _waiters(dsn: str, count: int) -> None:
    """Return once `count` advisory locks are waited for (not granted)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        async with asyncio.timeout(WAIT):
            while True:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                row = await cur.fetchone()
                if row is not None and row[0] >= count:
                    return


Db = Callable[[Pool], ClusterClinicalDb]


@pytest.fixture(params=["bridged", "threaded"])
async def make_db(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[Db]:
    """A node's `ClusterClinicalDb` on a pool; threaded: keyed jobs on own connections."""
    made: list[ClinicalThreads] = []

    def db(pool: Pool) -> ClusterClinicalDb:
        if request.param == "bridged":
            return ClusterClinicalDb(pool, lambda: CIPHER)
        made.append(ClinicalThreads(pg_dsn, 2))
        return ClusterClinicalDb(pool, lambda: CIPHER, threads=made[-1])

    yield db
    for threads in made:
        await asyncio.to_thread(threads.close)


async def _started(job: Held) -> None:
    assert await asyncio.to_thread(job.started.wait, WAIT)


async def _run(db: ClusterClinicalDb, job: Callable[[Any], None], keys: Any) -> asyncio.Task[None]:
    return asyncio.create_task(db.run(job, keys=keys))


async def test_one_patient_takes_turns_across_nodes_and_another_does_not_wait(
    pool: Pool, other: Pool, pg_dsn: str, make_db: Db
) -> None:
    a, b = make_db(pool), make_db(other)
    first = Held("a")
    held = await _run(a, first, _patient("P1", "K1"))
    await _started(first)

    same = Held("b")  # the same patient, another appointment, on the other node
    queued = await _run(b, same, _patient("P1", "K2"))
    await _waiters(pg_dsn, 1)
    assert not same.started.is_set()

    another = Held("c")  # another patient: runs to its commit while A still holds P1
    another.release.set()
    await asyncio.wait_for(await _run(b, another, _patient("P2", "K3")), WAIT)
    assert another.saw == []  # A's row is not committed yet

    first.release.set()
    await asyncio.wait_for(held, WAIT)
    same.release.set()
    await asyncio.wait_for(queued, WAIT)
    assert same.saw == ["a", "c"]  # B's job began after A's commit


async def test_the_whole_lock_waits_for_a_keyed_job_and_holds_keyed_ones_off(
    pool: Pool, other: Pool, pg_dsn: str, make_db: Db
) -> None:
    a, b = make_db(pool), make_db(other)
    keyed = Held("a")
    held = await _run(a, keyed, _patient("P1", "K1"))
    await _started(keyed)
    whole = Held("b")  # a rule change, a template save, a reply: keys=None
    waiting = await _run(b, whole, None)
    await _waiters(pg_dsn, 1)
    assert not whole.started.is_set()
    keyed.release.set()
    await asyncio.wait_for(held, WAIT)
    await _started(whole)
    later = Held("c")  # another patient, while the whole lock is held
    blocked = await _run(a, later, _patient("P2", "K2"))
    await _waiters(pg_dsn, 1)
    assert not later.started.is_set()
    whole.release.set()
    later.release.set()
    await asyncio.wait_for(asyncio.gather(waiting, blocked), WAIT)
    assert (whole.saw, later.saw) == (["a"], ["a", "b"])


class Cancelled(Held):
    """A job that writes, waits until it is told its transaction is abandoned (the
    bridge's and the thread connection's `abandoned`), then writes again."""

    def __call__(self, conn: Any) -> None:
        conn.execute("INSERT INTO template_heads VALUES (?, 'en', 1, 0)", (self.name,))
        self.started.set()
        assert conn.abandoned.wait(WAIT)
        conn.execute("INSERT INTO template_heads VALUES (?, 'en', 1, 0)", (self.name + "2",))


async def test_a_cancelled_keyed_job_is_rolled_back_and_frees_its_keys(
    pool: Pool, make_db: Db
) -> None:
    """The gateway stopping mid-job: the job stops at its next statement, nothing of it
    commits, and the next job for the same patient runs."""
    db = make_db(pool)
    job = Cancelled("a")
    task = await _run(db, job, _patient("P1", "K1"))
    await _started(job)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    after = Held("b")
    after.release.set()
    await asyncio.wait_for(await _run(db, after, _patient("P1", "K2")), WAIT)
    assert after.saw == []


def test_a_keys_lock_number_is_a_keyed_digest_in_one_order() -> None:
    """pg_locks shows a number no MRN can be read from (another keyring, another
    number), and every job locks its keys in ascending order (no deadlock)."""
    keys = [*_patient("MRN42", "K1"), ("contact", "+12025550123")]
    numbers = key_numbers(CIPHER, keys)
    assert numbers == sorted(numbers) and len(numbers) == 3
    assert key_numbers(CIPHER, list(reversed(keys))) == numbers
    assert key_numbers(FieldCipher({1: os.urandom(32)}, os.urandom(32)), keys) != numbers
    # A patient and a number named by a message lock what their stored rows name.
    row = [
        ("patient_row", "ehr", CIPHER.keyed_digest("mrn", "ehr", "HOSP", "MRN42").hex()),
        ("contact_row", CIPHER.blind_index("+12025550123").hex()),
    ]
    assert key_numbers(CIPHER, [keys[0], *row]) == numbers
