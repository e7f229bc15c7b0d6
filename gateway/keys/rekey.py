"""Re-encryption after a rotation, in the background, at a bounded rate.

Theory of operation. `keys.rotate` adds field key generation N+1 and makes it current
at once (`Store.reload_keys`); every new ciphertext is sealed under it from then on. It
also writes one `key_rekey` row per table of the catalog with target N+1. The job then
takes one batch at a time, each ONE job on the writer thread (so it is atomic with
every other write): the next rows of the first unfinished table after its cursor, in
key order; every ciphertext of a generation below the target is opened and sealed
again under the current key, and the cursor moves past the batch in the same
transaction. A kill -9 loses at most the batch in flight, which is done again. Between
batches the job sleeps so it reads at most `store.rekey_rows_per_second` rows a
second: the writer stays free for sending. When every table is through, the ciphertexts
left of each older generation are counted (on a reader); a generation with none is
retired (its wrapped key deleted, audited), the cipher forgets it, and the job rows go.

The daemon runs `RekeyJob.run` from start: it resumes an unfinished job, and it reads
the keyring every `POLL_SECONDS`, so a rotation made by another process (the console
with no admin socket) is taken up without a restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.clock import Clock
from gateway.keys.catalog import BY_TABLE, CATALOG
from gateway.store import crypto, keyring_sql
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store

log = structlog.get_logger("smsgw.keys")

POLL_SECONDS = 5.0
MAX_BATCH = 200


@dataclass(frozen=True, slots=True)
class Step:
    table: str
    scanned: int
    rewritten: int
    unreadable: int
    table_done: bool


class StaleCipher(Exception):
    """The job's target is not the cipher's current generation: reload the keyring."""


def start(conn: sqlite3.Connection, target: int) -> None:
    """(Re)start the job: every table from its first row, towards `target`."""
    conn.execute("DELETE FROM key_rekey")
    conn.executemany(
        "INSERT INTO key_rekey (table_name, target) VALUES (?, ?)",
        [(s.table, target) for s in CATALOG],
    )


def step(conn: sqlite3.Connection, cipher: crypto.FieldCipher, limit: int) -> Step | None:
    """One batch of the first unfinished table; None when no job is left."""
    row = conn.execute(
        "SELECT table_name, target, after, until FROM key_rekey WHERE done = 0"
        " ORDER BY table_name LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    table, target, after, until = row
    if cipher.generation != target:
        raise StaleCipher(f"job target {target}, cipher at {cipher.generation}")
    s = BY_TABLE[table]
    if until is None:  # the walk reaches this table: later rows are sealed under target
        (until,) = conn.execute(f"SELECT max({s.key}) FROM {s.table}").fetchone()  # noqa: S608  # catalog
        conn.execute("UPDATE key_rekey SET until = ? WHERE table_name = ?", (until, table))
    columns = ", ".join(c for c, _ in s.columns)
    where, params = f" WHERE {s.key} <= ?", [until]
    if after is not None:
        where, params = where + f" AND {s.key} > ?", [until, after]
    rows = conn.execute(
        f"SELECT {s.key}, {s.row_id}, {columns} FROM {s.table}{where}"  # noqa: S608  # names from the catalog
        f" ORDER BY {s.key} LIMIT ?",
        (*params, limit),
    ).fetchall()
    rewritten = unreadable = 0
    for key, row_id, *blobs in rows:
        sets: list[str] = []
        values: list[bytes] = []
        for (column, name), blob in zip(s.columns, blobs, strict=True):
            gen = None if blob is None else crypto.header_generation(blob)
            if gen is None or gen >= target:
                continue
            try:
                plain = cipher.decrypt(blob, row_id, name)
            except crypto.DecryptError:
                unreadable += 1  # left as it is: its generation is then never retired
                continue
            sets.append(f"{column} = ?")
            values.append(cipher.encrypt(plain, row_id, name))
        if sets:
            conn.execute(
                f"UPDATE {s.table} SET {', '.join(sets)} WHERE {s.key} = ?",  # noqa: S608  # catalog names
                (*values, key),
            )
            rewritten += 1
    done = len(rows) < limit
    conn.execute(
        "UPDATE key_rekey SET after = ?, rewritten = rewritten + ?, unreadable = unreadable + ?,"
        " done = ? WHERE table_name = ?",
        (rows[-1][0] if rows else after, rewritten, unreadable, int(done), table),
    )
    return Step(table, len(rows), rewritten, unreadable, done)


def _counts_sql() -> str:
    head = "SELECT substr({c}, 1, 3) AS h, count(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY h"
    parts = [head.format(c=column, t=s.table) for s in CATALOG for column, _ in s.columns]
    return f"SELECT h, sum(n) FROM ({' UNION ALL '.join(parts)}) GROUP BY h"  # noqa: S608  # catalog names


COUNTS_SQL = _counts_sql()


async def generation_counts(store: Store) -> dict[int, int]:
    """Ciphertexts per key generation over every encrypted column (a full scan, on a
    reader: the writer goes on)."""
    counts: dict[int, int] = {}
    for head, n in await store.reader.all(COUNTS_SQL):
        gen = crypto.header_generation(bytes(head) + bytes(crypto.NONCE_BYTES + 16))
        if gen is not None:
            counts[gen] = counts.get(gen, 0) + int(n)
    return counts


@dataclass(frozen=True, slots=True)
class Progress:
    target: int | None
    tables_done: int
    tables: int
    rewritten: int
    current_table: str | None


def progress(conn: sqlite3.Connection) -> Progress:
    rows = conn.execute(
        "SELECT table_name, target, done, rewritten FROM key_rekey ORDER BY table_name"
    ).fetchall()
    if not rows:
        return Progress(None, 0, 0, 0, None)
    pending = [r[0] for r in rows if not r[2]]
    return Progress(
        int(rows[0][1]),
        sum(1 for r in rows if r[2]),
        len(rows),
        sum(int(r[3]) for r in rows),
        pending[0] if pending else None,
    )


class RekeyJob:
    """The daemon's re-encryption loop (and the console's, run to the end offline)."""

    def __init__(
        self, store: Store, clock: Clock, rate: float, audit: AuditTrail, actor: str = "system"
    ) -> None:
        self._store = store
        self._clock = clock
        self._rate = rate
        self._audit = audit
        self._actor = actor
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A rotation was made: start at once rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                pause = await self.run_once()
            except Exception:  # a failed pass is logged; the next poll retries
                log.exception("rekey_failed")
                pause = None
            if pause is None:
                await self._idle()
            else:
                await self._clock.sleep(pause)

    async def _idle(self) -> None:
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(POLL_SECONDS))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    async def run_to_end(self, report: Callable[[Step], None] | None = None) -> None:
        """Every batch with no pause, then the retirement (offline: nothing else writes)."""
        while await self.run_once(report) is not None:
            pass

    async def run_once(self, report: Callable[[Step], None] | None = None) -> float | None:
        """One batch; the pause before the next that keeps to the rate, or None when no
        job is left (the retirement done)."""
        store = self._store
        cipher = store.cipher
        assert cipher is not None, "store is not open"
        # Reads, not writer jobs: an idle poll writes nothing to the disk.
        gens = await store.reader.all("SELECT generation FROM keyring WHERE purpose = 'field'")
        if {int(g[0]) for g in gens} != cipher.generations:
            await store.reload_keys()
            log.info("keyring_reloaded", generation=cipher.generation)
        if await store.reader.one("SELECT 1 FROM key_rekey LIMIT 1") is None:
            return None
        limit = max(1, min(MAX_BATCH, int(self._rate)))
        while True:
            try:
                done = await store.writer.run(lambda conn: step(conn, cipher, limit))
            except StaleCipher:
                await store.reload_keys()
                continue
            break
        if done is None:
            await self.retire()
            again = await store.reader.one("SELECT 1 FROM key_rekey LIMIT 1")
            return None if again is None else 0.0
        if done.rewritten or done.unreadable:
            log.info(
                "rekey_batch",
                table=done.table,
                rewritten=done.rewritten,
                unreadable=done.unreadable,
            )
        if report is not None:
            report(done)
        return done.scanned / self._rate

    async def retire(self) -> list[int]:
        """After a pass: retire every older field generation no ciphertext is left of.
        If some are left that the pass could open (written under an older key by a
        process that had not taken the rotation up yet), walk again; if the pass met
        ciphertexts it could not open, stop and leave them (and their generation) for
        an operator (`smsgw keys status`). The generations retired."""
        store = self._store
        cipher = store.cipher
        assert cipher is not None, "store is not open"
        current = cipher.generation
        old = sorted(g for g in cipher.generations if g < current)
        counts = await generation_counts(store) if old else {}
        retired = [g for g in old if counts.get(g, 0) == 0]
        left = {g: counts[g] for g in old if counts.get(g, 0)}
        row = await store.reader.one("SELECT coalesce(sum(unreadable), 0) FROM key_rekey")
        unreadable = int(row[0]) if row is not None else 0

        def finish(conn: sqlite3.Connection) -> None:
            for g in retired:
                keyring_sql.retire_field(conn, g)
            if left and not unreadable:
                start(conn, current)
            else:
                conn.execute("DELETE FROM key_rekey")

        await store.writer.run(finish)
        for g in retired:
            await self._audit.record(self._actor, "key_generation_retired", "key", f"field:{g}")
            log.info("key_generation_retired", generation=g)
        if left:
            log.warning(
                "rekey_left_behind",
                ciphertexts=sum(left.values()),
                unreadable=unreadable,
                walking_again=not unreadable,
            )
        if retired:
            await store.reload_keys()
        return retired
