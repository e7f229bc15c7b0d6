"""A dispatched group's writes, each one writer job: its claims, then its outcomes.

The scheduler hands the store a whole group at once (one future, one job in the next
transaction), not one call per message; inside the job the group goes through the same
hot-path functions as single messages (`claim_many`, `mark_sent_many`, `apply`). If one
of them raises for the group, each message is tried again alone in its own savepoint,
so one bad row fails only its message (its outcome is then the exception).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from gateway.lifecycle import IllegalTransition
from gateway.models import State
from gateway.store.claim_check import ClaimCheck
from gateway.store.transitions import (
    Transition,
    apply,
    claim_many,
    mark_sent_many,
    write_events,
)

SentItem = tuple[str, str, Sequence[str], float]  # message id, route, carrier ids, time


def grouped(
    conn: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection, list[Any]], list[Any]],
    items: list[Any],
) -> list[Any]:
    """`fn(conn, items)` in one savepoint; if it raises, each item alone."""
    conn.execute("SAVEPOINT dispatch_group")
    try:
        outcomes = fn(conn, items)
    except Exception:
        if not conn.in_transaction:  # the transaction is gone (disk full): fail the batch
            raise
        conn.execute("ROLLBACK TO dispatch_group")
        conn.execute("RELEASE dispatch_group")
        return [_alone(conn, fn, item) for item in items]
    conn.execute("RELEASE dispatch_group")
    return outcomes


def _alone(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection, list[Any]], list[Any]], item: Any
) -> Any:
    conn.execute("SAVEPOINT dispatch_one")
    try:
        outcome = fn(conn, [item])[0]
    except Exception as e:
        if not conn.in_transaction:
            raise
        conn.execute("ROLLBACK TO dispatch_one")
        conn.execute("RELEASE dispatch_one")
        return e
    conn.execute("RELEASE dispatch_one")
    return outcome


def due(
    conn: sqlite3.Connection, route: str, want: int, now: float, check: ClaimCheck | None
) -> list[tuple[str, Any]]:
    """Claim the first `want` due, unexpired queued messages in class, due-time and id
    order: (id, its `claim_many` row) for each looked at."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM messages WHERE state = 'queued' AND due_at <= ?"
            " AND expires_at > ? ORDER BY priority, due_at, id LIMIT ?",
            (now, now, want),
        )
    ]
    claimed = grouped(conn, claim_many, [(m, route, now, check) for m in ids])
    return list(zip(ids, claimed, strict=True))


def transitions_many(conn: sqlite3.Connection, items: list[tuple[Transition, float]]) -> list[bool]:
    """Each change applied if legal (True), else skipped (False); events written as a group."""
    done = []
    events: list[tuple[Any, ...]] = []
    for t, now in items:
        try:
            apply(conn, t, now, events=events)
        except IllegalTransition:
            done.append(False)
        else:
            done.append(True)
    write_events(conn, events)
    return done


def outcomes(
    conn: sqlite3.Connection, sent: list[SentItem], changes: list[tuple[Transition, float]]
) -> tuple[list[State | Exception], list[bool | Exception]]:
    """A group's answers in one job: the accepted ones `sent` (and any receipts that
    overtook them), the others retried, failed or expired."""
    states = grouped(conn, mark_sent_many, sent) if sent else []
    done = grouped(conn, transitions_many, changes) if changes else []
    return states, done
