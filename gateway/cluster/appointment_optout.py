"""An opt-out of one appointment's texts (`appointment:<id>`: `STOP 1234`, an import,
the API) on a cluster: its pending notices cancelled and its messages still waiting
blocked, in the opt-out's transaction, as SQLite's `consent/withdraw.py` does on its
writer. The panel and `GET /appointments/...` on every node read them cancelled as
soon as the opt-out commits; a notice planned afterwards is cancelled by the shared
table's trigger (cluster migration 24), as SQLite's migration 19 does.

Lock order. A notice runner's pass locks the notices it claims, then (for a capped
purpose) the contacts' advisory locks. An opt-out holds its contact's lock before it
writes, so it first takes the appointment's pending notices (`hold_notices`, before
`lock_contacts`): it waits for a pass that holds them to commit (their messages are
then queued, and blocked here), and the two never wait on each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.cluster import queue_sql
from gateway.cluster.nodes import Incarnation
from gateway.consent.ledger import Entry
from gateway.consent.purposes import APPOINTMENT_SCOPE_PREFIX, SCOPE_ALL
from gateway.models import State
from gateway.store.transitions import Transition

Conn = Any  # psycopg.AsyncConnection: a pooled connection in its transaction

_IN_FORCE = (
    "SELECT 1 FROM consent_state s WHERE s.contact_idx = %s AND s.scope = %s"
    " AND s.opted = 'out' AND s.seq > (SELECT coalesce(max(a.seq), 0) FROM consent_state a"
    " WHERE a.contact_idx = %s AND a.scope = %s AND a.opted = 'in')"
)


def _appointment_of(entry: Entry) -> str | None:
    if entry.decision != "opt_out" or not entry.scope.startswith(APPOINTMENT_SCOPE_PREFIX):
        return None
    return entry.scope.removeprefix(APPOINTMENT_SCOPE_PREFIX)


def appointments_of(entries: Iterable[Entry]) -> list[tuple[str, bytes]]:
    """(appointment id, contact) of each appointment opt-out among `entries`."""
    return [(a, e.contact_idx) for e in entries if (a := _appointment_of(e)) is not None]


async def hold_notices(conn: Conn, pairs: Sequence[tuple[str, bytes]]) -> None:
    """Lock the pending notices of each (appointment id, contact) an opt-out is about
    to cancel; called before the contacts' advisory locks (the module's lock order)."""
    if not pairs:
        return
    await conn.execute(
        "SELECT n.id FROM clinical_notices n"
        " JOIN unnest(%s::text[], %s::bytea[]) AS w(appointment_id, contact_idx)"
        " ON n.appointment_id = w.appointment_id AND n.contact_idx = w.contact_idx"
        " WHERE n.state = 'pending' ORDER BY n.id FOR UPDATE OF n",
        ([a for a, _ in pairs], [i for _, i in pairs]),
    )


async def withdraw(conn: Conn, entry: Entry, me: Incarnation) -> list[str]:
    """If `entry` is an appointment's opt-out and in force (no newer opt-in of
    everything): cancel that appointment's pending notices to the contact and block
    their messages still waiting. The ids of the messages blocked."""
    appointment_id = _appointment_of(entry)
    if appointment_id is None:
        return []
    idx = entry.contact_idx
    found = await conn.execute(_IN_FORCE, (idx, entry.scope, idx, SCOPE_ALL))
    if await found.fetchone() is None:
        return []
    await conn.execute(
        "UPDATE clinical_notices SET state = 'cancelled', reason = 'opted_out', updated_at = %s"
        " WHERE appointment_id = %s AND contact_idx = %s AND state = 'pending'",
        (entry.at, appointment_id, idx),
    )
    rows = await (
        await conn.execute(
            "SELECT m.id FROM messages m JOIN clinical_notices n ON n.message_id = m.id"
            " WHERE n.appointment_id = %s AND n.contact_idx = %s AND n.state = 'queued'"
            " AND m.state IN ('queued', 'scheduled') ORDER BY m.id FOR UPDATE OF m",
            (appointment_id, idx),
        )
    ).fetchall()
    for (message_id,) in rows:
        t = Transition(message_id, State.BLOCKED, error_code="opted_out")
        await queue_sql.apply(conn, t, entry.at, me)
    return [r[0] for r in rows]
