"""The send policy's say at claim time, in the claim's own transaction.

`_claim_many` (store.py) asks the policy's `ClaimCheck` about each queued message before
making it `sending`: a reason blocks it (an opt-out committed since its accept never
lets it leave, MSG-5), a `Held` keeps it `queued` until its sending window opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.models import Priority, State
from gateway.store.event_seqs import next_seq


@dataclass(frozen=True, slots=True)
class ClaimSubject:
    """What the send policy looks at when a queued message is about to be claimed."""

    message_id: str
    to_index: bytes
    to_ct: bytes
    purpose: str | None
    priority: Priority
    quiet_override: bool
    route: str
    now: float


ACCOUNT_EMPTY = "rate:account"  # a Held's reason: a carrier account's shared bucket is empty
# A Held's reason: a cluster's claim at accept found the account's bucket row locked by
# another node's take, and left the message to the next round (`buckets.BucketBusy`).
ACCOUNT_BUSY = "rate:account_busy"


@dataclass(frozen=True, slots=True)
class Held:
    """The policy's answer to a claim: not now, wait (still `queued`) until `until`."""

    until: float
    reason: str


# Returns a reason to block the message (it becomes `blocked`), a `Held`, or None.
ClaimCheck = Callable[[sqlite3.Connection, ClaimSubject], "str | Held | None"]


def claim_verdict(
    conn: sqlite3.Connection, check: ClaimCheck, message_id: str, route: str, now: float
) -> str | Held | None:
    row = conn.execute(
        "SELECT to_index, to_ct, purpose, priority, quiet_override FROM messages"
        " WHERE id = ? AND state = 'queued'",
        (message_id,),
    ).fetchone()
    if row is None:
        return None  # the claim itself reports it
    if not row[0]:  # its number was erased while it was sending (i14-retention)
        return "erased"
    subject = ClaimSubject(
        message_id, row[0], row[1], row[2], Priority(row[3]), bool(row[4]), route, now
    )
    return check(conn, subject)


def hold(
    conn: sqlite3.Connection, message_id: str, held: Held, now: float, events: list[Any]
) -> None:
    """Keep a queued message waiting until `held.until` (its due time moves; an event
    with the reason says why)."""
    conn.execute(
        "UPDATE messages SET due_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
        (held.until, now, message_id),
    )
    seq = next_seq(conn, events)  # listed on the row by the trigger (no UPDATE of state)
    events.append((message_id, now, State.QUEUED.value, None, None, held.reason, None, seq, None))
