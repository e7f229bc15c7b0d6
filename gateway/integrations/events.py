"""The events the gateway reports to hospital systems, and what delivers them.

An event is written to the store's outbox in the same transaction as the change it
reports (a message's state, an inbound message, a route's health), so nothing is
announced that was not committed and nothing committed is lost for want of a
receiver. Each consumer (one per webhook endpoint, one for MQTT) reads the outbox in
order from its own position and acknowledges what it delivered: delivery is at least
once, and `id` is stable so receivers can drop duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

MESSAGE_STATUS = "message.status"
MESSAGE_INBOUND = "message.inbound"
ROUTE_HEALTH = "route.health"
CONSENT_CHANGED = "consent.changed"
APPOINTMENT_REPLY = "appointment.reply"  # a patient's reply matched (or not) to an appointment
EVENT_TYPES = frozenset(
    {MESSAGE_STATUS, MESSAGE_INBOUND, ROUTE_HEALTH, CONSENT_CHANGED, APPOINTMENT_REPLY}
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One reported change.

    `data` carries ids, states, codes and times only, never a number or a text.
    `phi` holds the personal fields (`to`/`body` of a message, `from`/`text` of an
    inbound one), decrypted for a consumer configured to receive them, else None.
    """

    id: str
    seq: int
    type: str
    at: float
    message_id: str | None = None
    route: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    phi: dict[str, Any] | None = None


class DeliveryFailed(Exception):
    """A consumer could not deliver an event now; the outbox retries it later.

    `reason` is a short code safe for logs (e.g. `http_500`, `timeout`, `tls`), never a
    payload or a URL with credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventConsumer(Protocol):
    """Something the outbox delivers to, in order, at least once."""

    @property
    def name(self) -> str:
        """Stable name under which the outbox keeps this consumer's position."""
        ...

    @property
    def wants_phi(self) -> bool:
        """True if events should carry their decrypted `phi` fields."""
        ...

    def accepts(self, event_type: str) -> bool:
        """Whether this consumer takes events of this type at all."""
        ...

    async def deliver(self, event: OutboxEvent) -> None:
        """Deliver one event or raise `DeliveryFailed`."""
        ...
