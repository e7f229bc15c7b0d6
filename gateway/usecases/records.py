"""What the use cases return: typed records, already masked for their caller.

A field a caller may not see is None; `to`, `body` (and an inbound message's
`sender`, `text`) are set only on a PHI read, which the use case has audited.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.models import Priority, State


@dataclass(frozen=True, slots=True)
class EventRecord:
    at: float
    state: str
    route: str | None
    carrier_id: str | None
    error_code: str | None
    attempt: int | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: str
    status: State
    priority: Priority
    segments: int
    encoding: str
    created_at: float
    updated_at: float
    expires_at: float
    send_at: float | None
    route: str | None
    route_hint: str | None
    category: str | None
    attempts: int
    possible_duplicate: bool
    error_code: str | None
    receipt_overdue: bool
    purpose: str | None
    to_masked: str | None
    body_masked: str | None
    reference: str | None  # only for the token that sent the message
    to: str | None = None  # PHI reads only
    body: str | None = None
    events: tuple[EventRecord, ...] | None = None

    @property
    def carrier_ids(self) -> list[str] | None:
        if self.events is None:
            return None
        return [
            c
            for e in self.events
            if e.carrier_id and e.state == "sent"
            for c in e.carrier_id.split(",")
        ]


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: tuple[MessageRecord, ...]
    next_cursor: str | None
    truncated: bool = False  # a reference search stopped at its scan limit


@dataclass(frozen=True, slots=True)
class InboundRecord:
    id: str
    cursor: str  # its place in commit order (`after=` resumes past it)
    route: str
    received_at: float
    incomplete: bool
    sender_masked: str | None
    sender: str | None = None  # PHI reads only
    text: str | None = None


@dataclass(frozen=True, slots=True)
class InboundPage:
    inbound: tuple[InboundRecord, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Revealed:
    """One message's (or inbound message's) personal fields whole, after an audit entry."""

    id: str
    to: str
    body: str
    reference: str | None
