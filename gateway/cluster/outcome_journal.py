"""A node's local journal of the outcomes it could not record in PostgreSQL.

A node that sent messages records what the carrier answered with `outcomes.finish`;
while the database is away the group sender tries again for `outcome_retry_seconds`
(`dispatch_group.py`). Past that the outcomes are not dropped (their rows would stay
`sending` until recovery flags them `possible_duplicate`, the carrier ids lost): they
are appended here, in the node's own SQLite store (`outcome_journal`, SQLite migration
37), each with the claim it answers (node, incarnation, epoch) and the time it came.

Replay, in append order, once the database answers again: before this node's recovery
sweep (so its own rows are finished rather than taken back), after its next successful
round of outcomes, and at start for what a previous incarnation left. Each batch goes
through `finish` under the incarnation that claimed it: a row still `sending` for that
claim becomes `sent` (with its carrier ids, then the receipts that came early for them,
as a live finish does) or queued for a retry; one a peer recovered meanwhile becomes a
late outcome, overwriting nothing. A batch leaves the journal once its transaction
committed; a crash in between replays it again, which then only adds late outcomes.

Nothing here is personal: message ids, states, routes, error codes, carrier ids and
the claim, never a number or a text, so the journal needs no encryption.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.cluster import queue_sql
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.cluster.outcomes import Outcome, finish
from gateway.models import State
from gateway.store.store import Store

_INSERT = (
    "INSERT INTO outcome_journal (node_id, incarnation, claim_epoch, message_id, state, route,"
    " carrier_ids, error_code, due_at, attempts, possible_duplicate, at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_SELECT = (
    "SELECT seq, node_id, incarnation, claim_epoch, message_id, state, route, carrier_ids,"
    " error_code, due_at, attempts, possible_duplicate, at FROM outcome_journal ORDER BY seq"
)


@dataclass(frozen=True, slots=True)
class Journaled:
    """One outcome waiting in the journal, with the claim it answers."""

    seq: int
    owner: Incarnation
    outcome: Outcome
    at: float  # when the carrier (or the driver) answered


@dataclass(frozen=True, slots=True)
class Replayed:
    applied: int
    late: int  # their claim was lost meanwhile: kept in `late_outcomes`
    requeued: int  # retries applied: queued again, for the schedulers to take in


class OutcomeJournal:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()  # one replay at a time: an entry is finished once
        self.pending = 0

    async def load(self) -> int:
        """How many outcomes wait (a previous run's too)."""
        row = await self._store.reader.one("SELECT count(*) FROM outcome_journal")
        self.pending = 0 if row is None else int(row[0])
        return self.pending

    async def append(self, claimed: Sequence[tuple[Incarnation, Outcome]], at: float) -> None:
        """Keep `claimed` durably, in order, until a replay records them."""
        rows = [
            (
                me.node_id,
                me.incarnation,
                o.epoch,
                o.message_id,
                o.state.value,
                o.route,
                json.dumps(list(o.carrier_ids)),
                o.error_code,
                o.due_at,
                o.attempts,
                int(o.possible_duplicate),
                at,
            )
            for me, o in claimed
        ]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(_INSERT, rows)

        await self._store.writer.run(write)
        self.pending += len(rows)

    async def entries(self) -> list[Journaled]:
        rows = await self._store.reader.all(_SELECT)
        return [
            Journaled(
                int(r[0]),
                Incarnation(str(r[1]), int(r[2])),
                Outcome(
                    str(r[4]),
                    int(r[3]),
                    State(r[5]),
                    str(r[6]),
                    tuple(json.loads(r[7])),
                    r[8],
                    r[9],
                    r[10],
                    bool(r[11]),
                ),
                float(r[12]),
            )
            for r in rows
        ]

    async def replay(self, pool: Pool) -> Replayed:
        """Finish every journaled outcome in order, batch by batch (one incarnation, one
        outcome per message each), each batch removed once committed. Raises (keeping
        what is left) if the database is away."""
        applied = late = requeued = 0
        async with self._lock:
            if not self.pending:
                return Replayed(0, 0, 0)
            for batch in _batches(await self.entries()):
                owner = batch[0].owner
                now = max(j.at for j in batch)
                async with pool.connection() as conn, conn.transaction():
                    await queue_sql.lock_carrier_ids(
                        conn, [(j.outcome.route, c) for j in batch for c in j.outcome.carrier_ids]
                    )
                    done = await finish(conn, owner, [j.outcome for j in batch], now)
                    kept = set(done.applied)
                    for j in batch:
                        o = j.outcome
                        if o.message_id in kept and o.state is State.SENT:
                            await queue_sql.early_receipts(conn, o.route, o.carrier_ids, now, owner)
                    retried = [
                        j.outcome.message_id
                        for j in batch
                        if j.outcome.message_id in kept and j.outcome.state is State.QUEUED
                    ]
                    # No scheduler holds a retry the replay requeued (the group sender
                    # let go of it): nobody's, so a node's adoption takes it in.
                    await conn.execute(
                        "UPDATE messages SET held_by = NULL WHERE id = ANY(%s)", (retried,)
                    )
                applied += len(kept)
                late += len(done.late)
                requeued += len(retried)
                await self._remove([j.seq for j in batch])
        return Replayed(applied, late, requeued)

    async def _remove(self, seqs: list[int]) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM outcome_journal WHERE seq = ?", [(s,) for s in seqs])

        await self._store.writer.run(delete)
        self.pending = max(0, self.pending - len(seqs))


def _batches(entries: list[Journaled]) -> list[list[Journaled]]:
    """Consecutive runs of one incarnation's outcomes, a message at most once in each
    (`finish` takes one outcome per message: a later claim of the same message comes
    after, in its own batch)."""
    batches: list[list[Journaled]] = []
    seen: set[str] = set()
    for j in entries:
        if not batches or batches[-1][0].owner != j.owner or j.outcome.message_id in seen:
            batches.append([])
            seen = set()
        batches[-1].append(j)
        seen.add(j.outcome.message_id)
    return batches
