"""The cluster queue's receipts (`ClusterQueue` inherits them): a carrier's receipt
applied to the message it names, a batch of them under one lock order, and the sweep
that flags the messages whose receipt is overdue. Split from `queue_store.py`, which
holds the rest of the shared queue's statements."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from gateway.cluster import queue_sql
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.models import State
from gateway.store.receipt_deadline import ERROR_CODE, EVENT, NOT_EXPECTED, OVERDUE, Sweep


class ClusterReceipts:
    _pool: Pool
    _me: Callable[[], Incarnation]

    async def apply_receipt(
        self,
        route: str,
        carrier_id: str,
        state: str,
        error_code: str | None,
        now: float,
        alternate_ids: Sequence[str] = (),
    ) -> tuple[str, State] | None:
        async with self._pool.connection() as conn, conn.transaction():
            return await queue_sql.receipt(
                conn, route, (carrier_id, *alternate_ids), state, error_code, now, self._me()
            )

    async def apply_receipts(
        self, route: str, receipts: Sequence[tuple[str, str, str | None, Sequence[str]]], now: float
    ) -> list[tuple[str, State] | Exception | None]:
        me = self._me()
        out: list[tuple[str, State] | Exception | None] = []
        async with self._pool.connection() as conn, conn.transaction():
            # The batch's locks in one order first (receipts one by one would not be).
            await queue_sql.lock_carrier_ids(
                conn, [(route, c) for cid, _, _, alts in receipts for c in (cid, *alts)]
            )
            for cid, state, code, alternates in receipts:
                try:
                    async with conn.transaction():
                        out.append(
                            await queue_sql.receipt(
                                conn, route, (cid, *alternates), state, code, now, me
                            )
                        )
                except Exception as e:  # one bad receipt fails alone (its savepoint)
                    out.append(e)
        return out

    async def sweep_receipts(
        self, sent_before: float, wanting_receipts: Collection[int], now: float, limit: int
    ) -> Sweep:
        me = self._me()
        async with self._pool.connection() as conn, conn.transaction():
            due = await (
                await conn.execute(
                    "SELECT id, priority, route, attempts FROM messages"
                    " WHERE state = 'sent' AND receipt_overdue = 0 AND updated_at <= %s"
                    " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (sent_before, limit),
                )
            ).fetchall()
            async with conn.cursor() as cur:
                marks = [(OVERDUE if r[1] in wanting_receipts else NOT_EXPECTED, r[0]) for r in due]
                if marks:
                    await cur.executemany(
                        "UPDATE messages SET receipt_overdue = %s WHERE id = %s", marks
                    )
                overdue = [r for r in due if r[1] in wanting_receipts]
                if overdue:
                    await cur.executemany(
                        queue_sql.INSERT_EVENT,
                        [
                            (i, now, EVENT, route, None, ERROR_CODE, n, me.node_id, me.incarnation)
                            for i, _, route, n in overdue
                        ],
                    )
            oldest = await (
                await conn.execute(
                    "SELECT min(updated_at) FROM messages"
                    " WHERE state = 'sent' AND receipt_overdue = 0"
                )
            ).fetchone()
        first = None if oldest is None or oldest[0] is None else float(oldest[0])
        return Sweep([(r[0], r[2]) for r in overdue], len(due) == limit, first)
