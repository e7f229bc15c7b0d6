"""How messages look to API clients: masked, or whole only on an audited PHI read.

`to` and `body` (a message), `sender` and `text` (an inbound message) are present only
when the request asked for them with `include=phi` and the token has the `phi` scope.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from gateway.usecases.masking import mask_number_compact as mask_number
from gateway.usecases.records import EventRecord, InboundRecord, MessageRecord
from gateway.web.formats import iso

__all__ = ["iso", "mask_number"]


class EventView(msgspec.Struct, frozen=True, omit_defaults=True):
    at: str
    state: str
    route: str | None = None
    carrier_id: str | None = None
    error_code: str | None = None
    attempt: int | None = None


_REFERENCE_DOC = "the client's own reference; shown only to the token that sent the message"
_PHI_DOC = "whole, only with include=phi and the 'phi' scope (each read is audited)"


class MessageView(msgspec.Struct, frozen=True):
    id: str
    status: str
    priority: str
    to_masked: str
    segments: int
    encoding: str
    created_at: str
    updated_at: str
    expires_at: str
    send_at: str | None
    route: str | None
    category: str | None
    purpose: Annotated[
        str | None,
        msgspec.Meta(description="what the message is for (MSG-1); null only for old messages"),
    ]
    reference: Annotated[str | None, msgspec.Meta(description=_REFERENCE_DOC)]
    attempts: int
    possible_duplicate: bool
    error_code: str | None
    # `sent`, and no receipt within [queue] receipt_deadline (stays true once it comes)
    receipt_overdue: bool
    carrier_ids: list[str] | None = None
    events: list[EventView] | None = None
    to: Annotated[str | UnsetType, msgspec.Meta(description=_PHI_DOC)] = UNSET
    body: Annotated[str | UnsetType, msgspec.Meta(description=_PHI_DOC)] = UNSET


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[MessageView]
    next_cursor: str | None


class InboundView(msgspec.Struct, frozen=True):
    id: str
    route: str
    sender_masked: str
    received_at: str
    incomplete: Annotated[
        bool,
        msgspec.Meta(
            description="a concatenated message stored with parts missing after the"
            " reassembly timeout; its text marks each gap as [part k of n missing]"
        ),
    ] = False
    sender: Annotated[str | UnsetType, msgspec.Meta(description=_PHI_DOC)] = UNSET
    text: Annotated[str | UnsetType, msgspec.Meta(description=_PHI_DOC)] = UNSET


class InboundPage(msgspec.Struct, frozen=True):
    inbound: list[InboundView]
    next_cursor: Annotated[
        str | None,
        msgspec.Meta(
            description="newest first: the cursor of the next (older) page, null after"
            " the last; order=oldest: always set, the cursor to poll with next"
        ),
    ]


def message_view(m: MessageRecord) -> MessageView:
    """The API's view of a message record (already masked for its caller)."""
    return MessageView(
        id=m.id,
        status=m.status.value,
        priority=m.priority.label,
        to_masked=m.to_masked or "",
        segments=m.segments,
        encoding=m.encoding,
        created_at=_iso(m.created_at),
        updated_at=_iso(m.updated_at),
        expires_at=_iso(m.expires_at),
        send_at=iso(m.send_at),
        route=m.route,
        category=m.category,
        purpose=m.purpose,
        reference=m.reference,
        attempts=m.attempts,
        possible_duplicate=m.possible_duplicate,
        error_code=m.error_code,
        receipt_overdue=m.receipt_overdue,
        carrier_ids=m.carrier_ids,
        events=None if m.events is None else [_event(e) for e in m.events],
        to=UNSET if m.to is None else m.to,
        body=UNSET if m.body is None else m.body,
    )


def inbound_view(r: InboundRecord) -> InboundView:
    return InboundView(
        r.id,
        r.route,
        r.sender_masked or "",
        _iso(r.received_at),
        incomplete=r.incomplete,
        sender=UNSET if r.sender is None else r.sender,
        text=UNSET if r.text is None else r.text,
    )


def _iso(ts: object) -> str:
    return iso(ts) or iso(0.0) or ""


def _event(e: EventRecord) -> EventView:
    return EventView(
        at=_iso(e.at),
        state=e.state,
        route=e.route,
        carrier_id=e.carrier_id,
        error_code=e.error_code,
        attempt=e.attempt,
    )
