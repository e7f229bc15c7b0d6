"""The records a message is handed around as: accepted (`NewMessage`), kept by the
scheduler (`LiveMessage`), claimed for a carrier (`ClaimedMessage`). Both queue backends
(`store.py` on SQLite, `gateway/cluster/queue_store.py` on PostgreSQL) take and give
these."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from gateway.models import Priority, State

# A message's personal fields encrypted (`to`, `body`, `reference`, `callback_url`).
Sealed = tuple[bytes, bytes, bytes | None, bytes | None]


class NewMessage(msgspec.Struct, frozen=True):
    # A Struct, not a dataclass: the policy's verdict makes a copy of each message it
    # holds or blocks (`Prepared.judged`), and a frozen dataclass of this size costs ~2
    # us to build.
    id: str
    token_id: str | None
    priority: Priority
    to: str
    body: str
    encoding: str
    segments: int
    created_at: float
    expires_at: float
    send_at: float | None = None
    reference: str | None = None
    callback_url: str | None = None
    route_hint: str | None = None
    category: str | None = None
    purpose: str | None = None
    # The policy's verdict (gateway/consent/policy.py): blocked with this reason, or
    # held (`send_at` moved to when it may go) for it; recorded as the first event.
    blocked: str | None = None
    held_for: str | None = None
    quiet_override: bool = False  # an audited override of the purpose's sending window
    to_index: bytes | None = None  # the blind index of `to`, when the caller has it already
    # `to`, `body`, `reference` and `callback_url` encrypted (`Store.seal`), when the
    # caller sealed them before the writer's transaction (the accept path does).
    sealed: Sealed | None = None

    @property
    def state(self) -> State:
        if self.blocked is not None:
            return State.BLOCKED
        scheduled = self.send_at is not None and self.send_at > self.created_at
        return State.SCHEDULED if scheduled else State.QUEUED


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """What the scheduler keeps of a queued or scheduled message."""

    id: str
    priority: Priority
    state: State
    to: str
    due_at: float
    expires_at: float
    attempts: int
    route_hint: str | None


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: str
    to: str
    body: str
    encoding: str
    priority: Priority
    attempts: int
    possible_duplicate: bool
