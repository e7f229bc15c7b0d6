"""An opt-out stops the messages already waiting for that number, in its transaction.

The claim re-checks consent anyway (MSG-5), so nothing in the opt-out's scope could
leave after it; this makes the waiting ones `blocked` (`opted_out`) at once, so the
calling system hears it (a `message.status` event) now rather than when each would
have been due.
"""

from __future__ import annotations

import sqlite3

from gateway.consent import ledger
from gateway.consent.purposes import Purpose
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
