"""Connections whose transaction block raises when its COMMIT never ran.

psycopg ends a `transaction()` block without a word when the connection is no longer
OK at its end: it sends no COMMIT (nothing to send it on), marks the transaction
FAILED and lets the block finish as if it had committed. A server that dies between a
transaction's last statement and its COMMIT (a primary killed under load, S8) then
left a node believing a message stored that PostgreSQL never committed, and it
answered 202: an accepted message lost (`tests/pg/test_db_failover.py` found one in
about ten runs). These classes raise `OperationalError` there instead, so every block
that would have committed either did or fails like any lost connection. The node's
pool, its clinical threads' connections and the `smsgw store migrate` / `keys`
commands' connection are made of them (the LISTEN and lane-lock sessions commit
nothing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg
from psycopg import AsyncTransaction, Transaction
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

NOT_COMMITTED = "the connection was lost before the transaction's COMMIT: it did not commit"
UNANSWERED = "the connection was lost under the transaction's COMMIT: it may have committed"


class CommitUnanswered(psycopg.OperationalError):
    """The COMMIT was sent and its answer lost: committed or not is unknown."""

    outcome_unknown = True  # read by `store_failure.outcome_unknown`


class CheckedAsyncConnection(psycopg.AsyncConnection[TupleRow]):
    @asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[AsyncTransaction]:
        outer = self.pgconn.transaction_status == TransactionStatus.IDLE
        ran = False
        try:
            async with super().transaction(savepoint_name, force_rollback) as tx:
                yield tx
                ran = True
        except psycopg.OperationalError as e:
            if ran and outer and self.broken:  # the body ran: the COMMIT failed
                raise CommitUnanswered(UNANSWERED) from e
            raise
        if tx.status is tx.Status.FAILED:
            raise psycopg.OperationalError(NOT_COMMITTED)


class CheckedConnection(psycopg.Connection[TupleRow]):
    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[Transaction]:
        outer = self.pgconn.transaction_status == TransactionStatus.IDLE
        ran = False
        try:
            with super().transaction(savepoint_name, force_rollback) as tx:
                yield tx
                ran = True
        except psycopg.OperationalError as e:
            if ran and outer and self.broken:  # the body ran: the COMMIT failed
                raise CommitUnanswered(UNANSWERED) from e
            raise
        if tx.status is tx.Status.FAILED:
            raise psycopg.OperationalError(NOT_COMMITTED)
