"""How stored rows look to API clients: no phone number, no body, ever."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from gateway.models import Priority
from gateway.store.store import Store


class EventView(msgspec.Struct, frozen=True, omit_defaults=True):
    at: str
    state: str
    route: str | None = None
    carrier_id: str | None = None
    error_code: str | None = None
    attempt: int | None = None


_REFERENCE_DOC = "the client's own reference; shown only to the token that sent the message"


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
    reference: Annotated[str | None, msgspec.Meta(description=_REFERENCE_DOC)]
    attempts: int
    possible_duplicate: bool
    error_code: str | None
    # `sent`, and no receipt within [queue] receipt_deadline (stays true once it comes)
    receipt_overdue: bool
    carrier_ids: list[str] | None = None
    events: list[EventView] | None = None


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


class InboundPage(msgspec.Struct, frozen=True):
    inbound: list[InboundView]
    next_cursor: str | None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def iso(ts: object) -> str | None:
    """RFC 3339 UTC of stored Unix seconds, for the API and the panel alike.

    Safe for any stored value, including ones older versions accepted: a time beyond
    what a datetime holds shows as its first or last instant, a non-number as None.
    """
    if ts is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    if math.isnan(ts):
        return None
    try:
        moment = _EPOCH + timedelta(seconds=ts)
    except OverflowError:
        moment = _LAST if ts > 0 else _FIRST
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_number(e164: str) -> str:
    """`+15551234567` → `+155•••••67`: enough to tell numbers apart on a screen."""
    if len(e164) <= 6:
        return "•" * len(e164)
    return e164[:4] + "•" * (len(e164) - 6) + e164[-2:]


def message_view(
    store: Store,
    row: sqlite3.Row,
    events: Sequence[sqlite3.Row] | None = None,
    *,
    viewer: str | None = None,
) -> MessageView:
    """The API's view of a stored message, as token `viewer` may see it."""
    mid = row["id"]
    reference = row["reference_ct"] if viewer is not None and row["token_id"] == viewer else None
    carrier_ids = None
    event_views = None
    if events is not None:
        event_views = [_event(e) for e in events]
        carrier_ids = [
            c
            for e in events
            if e["carrier_id"]
            for c in e["carrier_id"].split(",")
            if e["state"] == "sent"
        ]
    return MessageView(
        id=mid,
        status=row["state"],
        priority=Priority(row["priority"]).label,
        to_masked=mask_number(store.decrypt(row["to_ct"], mid, "to")),
        segments=row["segments"],
        encoding=row["encoding"],
        created_at=_iso(row["created_at"]),
        updated_at=_iso(row["updated_at"]),
        expires_at=_iso(row["expires_at"]),
        send_at=iso(row["send_at"]),
        route=row["route"],
        category=row["category"],
        reference=None if reference is None else store.decrypt(reference, mid, "reference"),
        attempts=row["attempts"],
        possible_duplicate=bool(row["possible_duplicate"]),
        error_code=row["error_code"],
        receipt_overdue=row["receipt_overdue"] == 1,
        carrier_ids=carrier_ids,
        events=event_views,
    )


def inbound_view(store: Store, row: sqlite3.Row) -> InboundView:
    sender = store.decrypt(row["sender_ct"], row["id"], "sender")
    return InboundView(
        row["id"],
        row["route"],
        mask_number(sender),
        _iso(row["received_at"]),
        incomplete=bool(row["incomplete"]),
    )


def _iso(ts: object) -> str:
    return iso(ts) or iso(0.0) or ""


def _event(e: sqlite3.Row) -> EventView:
    values: dict[str, Any] = {
        k: e[k] for k in ("state", "route", "carrier_id", "error_code", "attempt")
    }
    return EventView(at=_iso(e["at"]), **values)
