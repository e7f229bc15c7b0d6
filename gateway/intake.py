"""Accepting messages: validate, normalise, encode, and commit before answering.

Validation errors are `ApiError`s with a stable code, a message naming the field, and
never the value a client sent (it may be a phone number or a body). A request either
stores every message it was accepted for, or nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, TypeVar

import msgspec
import phonenumbers

from drivers.clock import Clock
from drivers.text import BodyTooLong, split
from gateway.config import Config
from gateway.errors import ApiError
from gateway.metrics import Metrics
from gateway.models import Priority, State, new_message_id
from gateway.router import Router
from gateway.scheduler import Entry, Scheduler
from gateway.store.store import NewMessage, Store
from gateway.store.writer import Statement

T = TypeVar("T")
PriorityName = Literal["critical", "high", "normal", "bulk"]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
MAX_BODY_CHARS = 10_000


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One message to send (`POST /api/v1/messages`)."""

    to: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=64, description="Recipient, E.164 or national form"),
    ]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_BODY_CHARS)]
    priority: PriorityName | None = None
    send_at: AwareTime | None = None
    expires_at: AwareTime | None = None
    route: Label | None = None
    category: Label | None = None
    reference: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    callback_url: Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://")] | None = None


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    messages: list[SendRequest]


class Accepted(msgspec.Struct, frozen=True):
    id: str
    status: str
    priority: str
    segments: int
    encoding: str


_send_decoder = msgspec.json.Decoder(SendRequest)
_batch_decoder = msgspec.json.Decoder(BatchRequest)


def decode_send(raw: bytes) -> SendRequest:
    return decode_with(_send_decoder, raw)


def decode_batch(raw: bytes) -> BatchRequest:
    return decode_with(_batch_decoder, raw)


def decode_with(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """Decode a request body; errors are `ApiError`s that never quote the input."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise validation_error(str(e)) from None
    except msgspec.DecodeError:
        raise ApiError(400, "bad_json", "the request body is not valid JSON") from None


def validation_error(text: str, prefix: str = "") -> ApiError:
    """Turn msgspec's message (which never quotes values) into an `ApiError`."""
    what, _, at = text.partition(" - at `$")
    path = prefix + at.rstrip("`").lstrip(".")
    unknown = what.startswith("Object contains unknown field")
    if unknown:
        name = what.split("`")[1]
        field = f"{path}.{name}" if path else name
        return ApiError(422, "unknown_field", f"{field}: unknown field", field=field)
    if what.startswith("Object missing required field"):
        name = what.split("`")[1]
        field = f"{path}.{name}" if path else name
        return ApiError(422, "missing_field", f"{field}: required", field=field)
    what = what[:1].lower() + what[1:]
    return ApiError(422, "invalid_field", f"{path or 'body'}: {what}", field=path or None)


@functools.lru_cache(maxsize=8192)
def normalise_number(raw: str, region: str) -> str | None:
    """E.164 form of a dialable number, or None if it is not a valid number."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


@dataclass(frozen=True, slots=True)
class Prepared:
    message: NewMessage
    entry: Entry
    scheduled: bool

    def answer(self) -> Accepted:
        m = self.message
        state = State.SCHEDULED if self.scheduled else State.QUEUED
        return Accepted(m.id, state.value, m.priority.label, m.segments, m.encoding)


class Intake:
    def __init__(
        self,
        config: Config,
        store: Store,
        scheduler: Scheduler,
        router: Router,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._config = config
        self._queue = config.queue
        self._store = store
        self._scheduler = scheduler
        self._router = router
        self._clock = clock
        self._metrics = metrics
        self._routes = frozenset(router.names)

    def prepare(
        self, req: SendRequest, token_id: str | None, now: float, field_prefix: str = ""
    ) -> Prepared:
        """Validate and shape one message; raises `ApiError` naming the field."""
        to = normalise_number(req.to, self._queue.default_region)
        if to is None:
            raise ApiError(
                422,
                "invalid_number",
                f"{field_prefix}to: not a valid phone number",
                field=f"{field_prefix}to",
            )
        try:
            plan = split(req.body, max_segments=self._queue.max_segments)
        except BodyTooLong as e:
            raise ApiError(
                422, "body_too_long", f"{field_prefix}body: {e}", field=f"{field_prefix}body"
            ) from None
        priority = Priority.parse(req.priority or self._queue.default_priority)
        if req.route is not None and req.route not in self._routes:
            raise ApiError(
                422,
                "unknown_route",
                f"{field_prefix}route: no such route",
                field=f"{field_prefix}route",
            )
        send_at = req.send_at.timestamp() if req.send_at else None
        default_expiry = max(now, send_at or now) + self._queue.policy(priority).expires_after
        expires_at = req.expires_at.timestamp() if req.expires_at else default_expiry
        if expires_at <= max(now, send_at or now):
            raise ApiError(
                422,
                "invalid_field",
                f"{field_prefix}expires_at: must be after now and after send_at",
                field=f"{field_prefix}expires_at",
            )
        candidates = self._router.candidates(to, priority, req.route)
        if not candidates:
            raise ApiError(
                422,
                "no_route",
                f"{field_prefix}to: no configured route carries this number "
                f"at priority {priority.label}",
                field=f"{field_prefix}to",
            )
        message = NewMessage(
            id=new_message_id(),
            token_id=token_id,
            priority=priority,
            to=to,
            body=req.body,
            encoding=plan.encoding.value,
            segments=plan.segments,
            created_at=now,
            expires_at=expires_at,
            send_at=send_at,
            reference=req.reference,
            callback_url=req.callback_url,
            route_hint=req.route,
            category=req.category,
        )
        scheduled = message.state is State.SCHEDULED
        due = send_at if scheduled and send_at is not None else now
        return Prepared(
            message, Entry(message.id, priority, due, expires_at, candidates), scheduled
        )

    def statements(self, prepared: Sequence[Prepared]) -> list[Statement]:
        rows: list[Statement] = []
        for p in prepared:
            rows.extend(self._store.insert_statements(p.message))
        return rows

    def accepted(self, prepared: Sequence[Prepared]) -> None:
        """Hand committed messages to the scheduler."""
        for p in prepared:
            self._scheduler.add(p.entry, scheduled=p.scheduled)
            self._metrics.accepted_by_class[p.message.priority].inc()
