"""An opt-out stops the messages already waiting for that number, in its transaction.

The claim re-checks consent anyway (MSG-5), so nothing in the opt-out's scope could
leave after it; this makes the waiting ones `blocked` (`opted_out`) at once, so the
calling system hears it (a `message.status` event) now rather than when each would
have been due. An appointment's opt-out (`appointment:<id>`, imported from a CSV
export) cancels that appointment's pending notices to the number, as `STOP 1234`
does; notices planned later are cancelled by the store's trigger (migration 19).
"""

from __future__ import annotations

import sqlite3

from gateway.consent import ledger
from gateway.consent.purposes import APPOINTMENT_SCOPE_PREFIX, SCOPE_ALL, Purpose
from gateway.consent.settings import DEFAULT_PROGRAM, ConsentConfig, policy_table
from gateway.store.transitions import block_waiting


class Withdrawal:
    def __init__(self, config: ConsentConfig) -> None:
        self._config = config
        self._table = policy_table(config)

    def after(self, conn: sqlite3.Connection, entry: ledger.Entry) -> list[str]:
        """Block the waiting messages to `entry`'s contact that the ledger now refuses;
        their ids. Run in the transaction that appended `entry`."""
        if not self._config.enabled or entry.decision != "opt_out":
            return []
        if entry.scope.startswith(APPOINTMENT_SCOPE_PREFIX):
            _close_notices(conn, entry)
        rows = conn.execute(
            "SELECT id, purpose, route_hint FROM messages"
            " WHERE to_index = ? AND state IN ('queued', 'scheduled')",
            (entry.contact_idx,),
        ).fetchall()
        blocked = []
        for message_id, purpose, hint in rows:
            try:
                policy = self._table[Purpose(purpose)]
            except ValueError:  # none recorded: accepted before purposes existed
                continue
            program = DEFAULT_PROGRAM if hint is None else self._config.program_for_route(hint)
            if entry.program not in (ledger.ALL_PROGRAMS, program):
                continue
            reason = ledger.standing(conn, entry.contact_idx, program, policy).refusal(policy)
            if reason is not None and block_waiting(conn, message_id, reason, entry.at):
                blocked.append(message_id)
        return blocked


def _close_notices(conn: sqlite3.Connection, entry: ledger.Entry) -> None:
    """Cancel the appointment's pending notices to the contact if its opt-out is in
    force (an older import row may have been superseded by a newer START)."""
    appointment_id = entry.scope.removeprefix(APPOINTMENT_SCOPE_PREFIX)
    conn.execute(
        "UPDATE clinical_notices SET state = 'cancelled', reason = 'opted_out', updated_at = ?"
        " WHERE appointment_id = ? AND contact_idx = ? AND state = 'pending' AND EXISTS ("
        "  SELECT 1 FROM consent_state s WHERE s.contact_idx = ? AND s.scope = ?"
        "  AND s.opted = 'out' AND s.seq > (SELECT coalesce(max(a.seq), 0) FROM consent_state a"
        "  WHERE a.contact_idx = ? AND a.scope = ? AND a.opted = 'in'))",
        (
            entry.at,
            appointment_id,
            entry.contact_idx,
            entry.contact_idx,
            entry.scope,
            entry.contact_idx,
            SCOPE_ALL,
        ),
    )
