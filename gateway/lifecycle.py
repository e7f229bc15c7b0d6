"""The message state machine: every legal transition, in one table.

    scheduled ──▶ queued ──▶ sending ──▶ sent ──▶ delivered | failed | expired
        │            │  ▲        │
        │            │  └────────┘  (retry, link lost, restart: possible duplicate)
        ▼            ▼           ▼
    cancelled | expired | blocked   failed

A message becomes `sending` in the store before anything leaves for a carrier, so a
crash can only leave `sending` rows behind, and start-up returns them to `queued`
with `possible_duplicate` set. Final states have no way out.
"""

from __future__ import annotations

from gateway.models import State

TRANSITIONS: dict[State, frozenset[State]] = {
    State.SCHEDULED: frozenset({State.QUEUED, State.CANCELLED, State.EXPIRED, State.BLOCKED}),
    State.QUEUED: frozenset(
        {State.SENDING, State.CANCELLED, State.EXPIRED, State.BLOCKED, State.FAILED}
    ),
    State.SENDING: frozenset({State.SENT, State.QUEUED, State.FAILED, State.EXPIRED}),
    State.SENT: frozenset({State.DELIVERED, State.FAILED, State.EXPIRED}),
    State.DELIVERED: frozenset(),
    State.FAILED: frozenset(),
    State.EXPIRED: frozenset(),
    State.CANCELLED: frozenset(),
    State.BLOCKED: frozenset(),
}

FINAL_STATES = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
CANCELLABLE = frozenset(s for s, nxt in TRANSITIONS.items() if State.CANCELLED in nxt)


class IllegalTransition(ValueError):
    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"illegal transition {current} -> {target}")
        self.current = current
        self.target = target


def check_transition(current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)


def sources_of(target: State) -> frozenset[State]:
    """Every state from which `target` may be reached."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if target in nxt)
