"""The send policy's say in a cluster claim, in the claim's own transaction.

What `gateway/store/claim_check.py` does for SQLite's `_claim_many`: before queued rows
become `sending`, the policy (`Policy.claim_verdict_of`) judges each from the shared
consent rows of its recipient, so an opt-out committed on any node before this claim
keeps the message from ever leaving (MSG-5, R-OPT-1 across nodes): it becomes
`blocked` with the stable reason. A message whose sending window closed while it
waited is held: still `queued`, due when the window opens, with an event saying why.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import consent_store, queue_sql
from gateway.cluster.by_key import state_is
from gateway.cluster.nodes import Incarnation
from gateway.consent.policy import Policy
from gateway.consent.purposes import Purpose
from gateway.models import Priority, State
from gateway.store.claim_check import ClaimSubject, Held
from gateway.store.crypto import FieldCipher
from gateway.store.transitions import Transition

Conn = AsyncConnection[TupleRow]

# The rows about to be claimed, locked as the claim locks them (one another claimer
# holds is theirs to judge), reached by their ids only (`by_key.py`).
SUBJECTS_SQL = f"""
SELECT id, to_index, to_ct, purpose, priority, quiet_override FROM messages
WHERE id = ANY(%s) AND {state_is(State.QUEUED)}
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - a fixed state name


class ClusterClaimCheck:
    def __init__(self, policy: Policy, cipher: FieldCipher) -> None:
        self._policy = policy
        self._cipher = cipher

    async def apply(
        self, conn: Conn, ids: Sequence[str], route: str, now: float, me: Incarnation
    ) -> dict[str, str | Held]:
        """Judge the queued rows of `ids`; block those refused, hold those waiting for
        their window. Returns the verdict of each of them (not to be claimed now)."""
        if not self._policy.enabled or not ids:
            return {}
        rows = await (await conn.execute(SUBJECTS_SQL, (list(ids),))).fetchall()
        if not rows:
            return {}
        idxs = [bytes(r[1]) for r in rows]
        state = await consent_store.state_rows(conn, idxs)
        zones: dict[bytes, str | None] = {}
        if any(self._windowed(r[3]) for r in rows):  # most purposes have no window
            zones = await consent_store.time_zones(conn, idxs)
        verdicts: dict[str, str | Held] = {}
        for message_id, to_index, to_ct, purpose, priority, quiet in rows:
            idx = bytes(to_index)
            subject = ClaimSubject(
                message_id, idx, bytes(to_ct), purpose, Priority(priority), quiet, route, now
            )
            verdict = self._policy.claim_verdict_of(
                subject, state.get(idx, ()), functools.partial(zones.get, idx), self._number
            )
            if verdict is not None:
                verdicts[message_id] = verdict
        for message_id, verdict in verdicts.items():
            if isinstance(verdict, Held):
                await conn.execute(
                    "UPDATE messages SET due_at = %s, updated_at = %s WHERE id = %s",
                    (verdict.until, now, message_id),
                )
                await conn.execute(
                    queue_sql.INSERT_EVENT,
                    (message_id, now, State.QUEUED.value, None, None, verdict.reason, None,
                     me.node_id, me.incarnation),
                )  # fmt: skip
            else:
                blocked = Transition(message_id, State.BLOCKED, route=route, error_code=verdict)
                await queue_sql.apply(conn, blocked, now, me)
        return verdicts

    def _windowed(self, purpose: str | None) -> bool:
        if purpose is None or purpose == Purpose.COMPLIANCE.value:
            return False
        return self._policy.table[Purpose(purpose)].window is not None

    def _number(self, s: ClaimSubject) -> str:
        return self._cipher.decrypt(s.to_ct, s.message_id, "to")
