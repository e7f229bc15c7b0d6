"""The send policy's verdict at accept on a cluster, in the accept's PostgreSQL
transaction, as `_judged_jobs` (gateway/usecases/messages.py) reaches it on SQLite's
writer: the same `Policy`, the same `Intake.judge`, the same stable reasons
(`opted_out`, `no_consent`, `frequency_cap`, `quiet_hours`); only the reads differ.

A frequency cap's count and the insert it allowed must be one step across nodes too:
the accept holds each capped recipient's advisory lock (`consent_store.lock_contacts`)
from before it reads their recent messages until it commits, so two accepts for one
recipient on any nodes take turns and the second counts the first's message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection

from gateway.cluster import consent_store, seal_guard
from gateway.cluster.queue_store import ClusterQueue
from gateway.consent.policy import BLOCKING, GroupView
from gateway.intake import Intake, Prepared
from gateway.store.idempotency import IdempotentAnswer
from gateway.store.queue_store import AcceptStore
from gateway.store.writer import Statement

T = TypeVar("T")

# A counted message goes at its send_at (a deferred one's is when it was allowed), else
# when it was accepted; blocked, cancelled and expired ones are not counted.
_SENT = f"""
SELECT to_index, purpose, greatest(coalesce(send_at, created_at), created_at) AS at
FROM messages WHERE to_index = ANY(%s) AND purpose = ANY(%s)
    AND state NOT IN ({", ".join(f"'{s}'" for s in BLOCKING)})
    AND greatest(coalesce(send_at, created_at), created_at) > %s
"""  # noqa: S608 - fixed state names


async def accept_judged(
    cluster: AcceptStore,
    intake: Intake,
    prepared: Sequence[Prepared],
    now: float,
    answer_of: Callable[[list[Prepared]], tuple[T, IdempotentAnswer | None]],
    extra: Sequence[Statement] = (),
) -> tuple[list[Prepared], T]:
    """Judge `prepared` and insert them as judged, with the idempotent answer
    `answer_of` gives for them and `extra` rows, in one transaction: (the judged
    messages, the answer)."""
    if not isinstance(cluster, ClusterQueue):
        raise TypeError("the policy's accept runs on the cluster queue")
    try:
        async with cluster.pool.connection() as conn, conn.transaction():
            judged = await judge_within(conn, intake, prepared, now)
            answer, kept = answer_of(judged)
            links = [m for p in judged for m in p.links]
            await cluster.insert_within(conn, [p.message for p in judged], kept, links, extra)
    except psycopg.errors.CheckViolation as e:
        await seal_guard.refused(e, cluster.keys)  # `KeyRetired`
        raise
    return judged, answer


async def judge_within(
    conn: AsyncConnection[Any], intake: Intake, prepared: Sequence[Prepared], now: float
) -> list[Prepared]:
    """The policy's verdict on each of `prepared` in the caller's transaction, which
    must insert them before it commits: the capped recipients stay locked until then."""
    policy = intake.policy
    recipients = [(p.message.to_index, p.purpose) for p in prepared if p.message.to_index]
    idxs = [idx for idx, _ in recipients]
    capped = [idx for idx, purpose in recipients if policy.has_caps(purpose)]
    sent: list[tuple[bytes, str, float]] = []
    if capped:
        await consent_store.lock_contacts(conn, capped)
        rows = await (
            await conn.execute(_SENT, (capped, policy.capped, policy.counted_since(now)))
        ).fetchall()
        sent = [(bytes(r[0]), r[1], float(r[2])) for r in rows]
    state = await consent_store.state_rows(conn, idxs)
    zones = await consent_store.time_zones(conn, idxs)
    view = GroupView.of_reads(state, sent, zones)
    return [intake.judge(view, p) for p in prepared]
