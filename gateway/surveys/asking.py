"""Sending one survey text through the accept path, inside the caller's writer job.

Every text a survey sends (the first question with its intro, a re-ask, the next
question, the thanks) is a message accepted by `Messages.accept_within`, so the send
policy judges it in the same transaction as the session's change: purpose, consent,
quiet hours and caps decide as for any message (a blocked first question leaves the
session `blocked`). The message is `category` `survey`, its `reference` the session's
id; after the job commits the caller hands the messages to the scheduler. On a
cluster the job runs on the shared PostgreSQL (`ClinicalDb`'s bridge) and the message
is accepted into the shared queue in its transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.errors import ApiError
from gateway.intake import Prepared, SendRequest
from gateway.usecases.caller import Caller
from gateway.usecases.messages import Messages

CATEGORY = "survey"
SYSTEM = Caller(
    actor="system:surveys", token_id=None, sees_all=True, may_send=True, may_read_phi=False
)


@dataclass(frozen=True, slots=True)
class Asked:
    prepared: Prepared
    status: str  # queued, scheduled, blocked
    reason: str | None
    goes_at: float  # when it may go: now, or when the policy holds it until

    @property
    def blocked(self) -> bool:
        return self.status == "blocked"


def ask(
    conn: sqlite3.Connection,
    messages: Messages,
    caller: Caller,
    *,
    number: str,
    body: str,
    purpose: str,
    priority: str,
    session_id: str,
    now: float,
) -> Asked:
    """Accept `body` for `number` in this transaction (raises the accept path's
    `ApiError`s: `invalid_number`, `no_route`, `shutting_down`, ...)."""
    request = SendRequest(
        to=number,
        body=body,
        priority=priority,  # type: ignore[arg-type]  # the spec's Literal, a subset
        category=CATEGORY,
        reference=session_id,
        purpose=purpose,  # type: ignore[arg-type]  # a client purpose, checked by the spec
    )
    prepared = _accept(conn, messages, caller, request)
    answer = prepared.answer()
    send_at = prepared.message.send_at
    return Asked(prepared, answer.status, answer.reason, max(now, send_at or now))


def _accept(
    conn: sqlite3.Connection, messages: Messages, caller: Caller, request: SendRequest
) -> Prepared:
    """`accept_within` on SQLite; on a cluster (the job's connection is the clinical
    tables' bridge to PostgreSQL) the shared accept, in the job's transaction."""
    within_shared = getattr(conn, "within_shared", None)
    if within_shared is None:
        return messages.accept_within(conn, caller, request)
    [got] = within_shared(
        lambda pg: messages.accept_many_within_shared(pg, caller, [(request, None)])
    )
    if isinstance(got, ApiError):
        raise got
    assert isinstance(got, Prepared)
    return got
