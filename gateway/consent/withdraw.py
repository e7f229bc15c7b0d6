"""An opt-out stops the messages already waiting for that number, in its transaction.

The claim re-checks consent anyway (MSG-5), so nothing in the opt-out's scope could
leave after it; this makes the waiting ones `blocked` (`opted_out`) at once, so the
calling system hears it (a `message.status` event) now rather than when each would
have been due. An appointment's opt-out (`appointment:<id>`: `STOP 1234`, or a
CSV import) cancels that appointment's pending notices to the number and blocks its
messages still waiting; notices planned later are cancelled by the store's trigger
(migration 19).
"""

from __future__ import annotations

import sqlite3

from gateway.consent import ledger
from gateway.consent.purposes import APPOINTMENT_SCOPE_PREFIX, SCOPE_ALL, Purpose
from gateway.consent.settings import DEFAULT_PROGRAM, ConsentConfig, policy_table
from gateway.store.audit_log import AuditTrail
from gateway.store.crypto import FieldCipher
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
        blocked = []
        if entry.scope.startswith(APPOINTMENT_SCOPE_PREFIX):
            blocked = _withdraw_appointment(conn, entry)
        rows = conn.execute(
            "SELECT id, purpose, route_hint FROM messages"
            " WHERE to_index = ? AND state IN ('queued', 'scheduled')",
            (entry.contact_idx,),
        ).fetchall()
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


def record(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    withdrawal: Withdrawal,
    audit: AuditTrail | None,
    entry: ledger.Entry,
) -> list[str]:
    """Append a patient's decision, stop what it now refuses, and audit it, all in the
    caller's transaction (R-OPT-1: the STOP is in the audit trail); the ids of the
    messages it blocked."""
    ledger.append(conn, cipher, entry)
    blocked = withdrawal.after(conn, entry)
    if audit is not None:
        audit.append_in(
            conn,
            entry.at,
            "patient",
            f"consent_{entry.decision}",
            "contact",
            entry.contact_idx.hex(),
            inbound_id=entry.inbound_id,
            scope=entry.scope,
            program=entry.program,
            source=entry.source,
            blocked=len(blocked),
        )
    return blocked


def appointment_out(conn: sqlite3.Connection, idx: bytes, scope: str) -> bool:
    """Whether the contact's opt-out of the appointment scope `scope` is in force: no
    opt-in of everything (START) has come after it."""
    row = conn.execute(
        "SELECT 1 FROM consent_state s WHERE s.contact_idx = ? AND s.scope = ?"
        " AND s.opted = 'out' AND s.seq > (SELECT coalesce(max(a.seq), 0) FROM consent_state a"
        " WHERE a.contact_idx = ? AND a.scope = ? AND a.opted = 'in')",
        (idx, scope, idx, SCOPE_ALL),
    ).fetchone()
    return row is not None


def _withdraw_appointment(conn: sqlite3.Connection, entry: ledger.Entry) -> list[str]:
    """If the appointment's opt-out is in force (an older import row may have been
    superseded by a newer START): cancel its pending notices to the contact and block
    its messages still waiting; the ids blocked."""
    if not appointment_out(conn, entry.contact_idx, entry.scope):
        return []
    appointment_id = entry.scope.removeprefix(APPOINTMENT_SCOPE_PREFIX)
    conn.execute(
        "UPDATE clinical_notices SET state = 'cancelled', reason = 'opted_out', updated_at = ?"
        " WHERE appointment_id = ? AND contact_idx = ? AND state = 'pending'",
        (entry.at, appointment_id, entry.contact_idx),
    )
    waiting = conn.execute(
        "SELECT message_id FROM clinical_notices WHERE appointment_id = ? AND contact_idx = ?"
        " AND state = 'queued' AND message_id IS NOT NULL",
        (appointment_id, entry.contact_idx),
    ).fetchall()
    return [m for (m,) in waiting if block_waiting(conn, m, "opted_out", entry.at)]
