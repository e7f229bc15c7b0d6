"""Accepting messages: validate, normalise, encode, and commit before answering.

Validation errors are `ApiError`s with a stable code, a message naming the field, and
never the value a client sent (it may be a phone number or a body). A request either
stores every message it was accepted for, or nothing.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
import phonenumbers

from drivers.clock import Clock
from drivers.text import BodyTooLong, split
from gateway.config import Config
from gateway.consent.policy import QUEUED, GroupView, Policy, Verdict
from gateway.consent.purposes import Purpose
from gateway.consent.settings import ClientPurpose
from gateway.errors import ApiError
from gateway.integrations.callbacks import check_callback
from gateway.links.placeholders import LinkBook, Minted, has_placeholder
from gateway.links.store import token_statements
from gateway.metrics import Metrics
from gateway.models import PRIORITY_LABELS, Priority, State, new_message_id, new_message_ids
from gateway.plain_e164 import UNSURE, read_plain_e164
from gateway.router import Router
from gateway.scheduler import Scheduler
from gateway.scheduler_feed import Entry
from gateway.store.claim_check import ClaimSubject, Held
from gateway.store.store import NewMessage, Store
from gateway.store.writer import Statement

if TYPE_CHECKING:
    from gateway.store.queue_store import AcceptStore

T = TypeVar("T")
PriorityName = Literal["critical", "high", "normal", "bulk"]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
MAX_BODY_CHARS = 10_000
# A send_at this far in the past is still "now" (the client's clock may lag ours);
# earlier ones are refused rather than sent at once.
SEND_AT_SKEW = 300.0
MAX_UTC_OFFSET = timedelta(hours=14)  # UTC+14:00 (Kiribati) and -12:00 are the extremes
# A number as people write it: ASCII digits, an optional leading +, and the usual
# separators. Letters (vanity numbers, canaries), non-ASCII digits and extensions are
# refused here, before phonenumbers could translate or drop them.
_DIALABLE = re.compile(r"\+?[0-9 ().\-/]+", re.ASCII)
# A number as the store keeps a contact's: E.164, normalised when it was imported.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)


# (named purpose, token's default, named priority) kept: a few per token at most.
_SHAPES_KEPT = 256
_BLOCKED, _SCHEDULED, _QUEUED = State.BLOCKED.value, State.SCHEDULED.value, State.QUEUED.value


class QuietHoursOverride(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Send now although the recipient's local sending window is closed: needs the
    `urgent` scope, and the reason is written to the audit trail with the message id."""

    reason: Annotated[str, msgspec.Meta(min_length=3, max_length=200)]


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One message to send (`POST /api/v1/messages`)."""

    to: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=64,
            description="Recipient, E.164 or national form: ASCII digits, a leading +,"
            " spaces, dots, dashes, slashes and parentheses; no letters or extensions",
            extra_json_schema={"format": "phone"},
        ),
    ]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_BODY_CHARS)]
    priority: PriorityName | None = None
    send_at: AwareTime | None = None
    expires_at: AwareTime | None = None
    route: Label | None = None
    category: Label | None = None
    reference: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    callback_url: Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://")] | None = None
    purpose: ClientPurpose | None = None
    quiet_hours_override: QuietHoursOverride | None = None


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Many messages (`POST /api/v1/messages/batch`); each item is checked on its own.

    The API document sets `maxItems` from `http.max_batch`."""

    messages: Annotated[list[SendRequest], msgspec.Meta(min_length=1)]


class _BatchEnvelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a batch is decoded as: its items stay raw, so one bad item refuses only itself."""

    messages: list[msgspec.Raw]


class Accepted(msgspec.Struct, frozen=True, omit_defaults=True):
    """`status` is `queued`, `scheduled` (its send_at, or held by the policy: then
    `reason` says why, `quiet_hours` or `frequency_cap`) or `blocked` (`reason`:
    `opted_out`, `no_consent`, `frequency_cap`, ...): stored, and never sent."""

    id: str
    status: str
    priority: str
    segments: int
    encoding: str
    reason: str | None = None


_send_decoder = msgspec.json.Decoder(SendRequest)
_batch_decoder = msgspec.json.Decoder(_BatchEnvelope)


def decode_send(raw: bytes) -> SendRequest:
    return decode_with(_send_decoder, raw)


def decode_batch(raw: bytes) -> list[msgspec.Raw]:
    """The batch's items, still undecoded: `decode_item` checks each on its own."""
    return decode_with(_batch_decoder, raw).messages


_whole_batch_decoder = msgspec.json.Decoder(BatchRequest)


def decode_valid_batch(raw: bytes) -> list[SendRequest] | None:
    """Every item at once, in C, when the whole batch is valid (most are); None when
    anything is not, and then `decode_batch` and `decode_item` say what and where."""
    try:
        return _whole_batch_decoder.decode(raw).messages
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def decode_item(raw: msgspec.Raw, index: int) -> SendRequest:
    """One batch item; errors name the field as `messages[i].field`."""
    try:
        return _send_decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise validation_error(str(e), f"messages[{index}]") from None


def decode_with(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """Decode a request body; errors are `ApiError`s that never quote the input."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise validation_error(str(e)) from None
    except msgspec.DecodeError:
        raise ApiError(400, "bad_json", "the request body is not valid JSON") from None


# msgspec's "Expected `type`..." messages name types and the schema's own limits only;
# every other message may quote what was sent (an enum value, a key) and is replaced.
_SAFE_DETAIL = re.compile(r"Expected `[a-z |]+`[^'\"]*|Expected `str` matching regex '[^']*'")


def validation_error(text: str, prefix: str = "") -> ApiError:
    """Turn msgspec's message into an `ApiError` that names the field by its schema
    name and never quotes the value sent, nor the name of a field we do not declare."""
    what, found, at = text.rpartition(" - at `$")
    if not found:
        what, at = text, ""
    path = _join(prefix, at.rstrip("`").lstrip("."))
    where = path or "request"
    if what.startswith("Object contains unknown field"):
        return ApiError(422, "unknown_field", f"{where}: unknown field", field=path or None)
    if what.startswith("Object missing required field"):
        field = _join(path, what.split("`")[1])
        return ApiError(422, "missing_field", f"{field}: required", field=field)
    if what.startswith("Invalid enum value"):
        detail = "not one of the allowed values"
    elif what.startswith("Invalid RFC3339"):
        detail = "expected an RFC 3339 date and time with a zone"
    elif _SAFE_DETAIL.fullmatch(what):
        detail = what[:1].lower() + what[1:]
    else:
        detail = "invalid value"
    return ApiError(422, "invalid_field", f"{where}: {detail}", field=path or None)


def _join(path: str, name: str) -> str:
    if not path:
        return name
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}" if name else path


# A miss costs 30-100 us (phonenumbers' parse and validation), 4-8 us for a number in
# plain E.164 (`plain_e164`), a hit 1 us; an entry about 150 bytes. 32,768 numbers
# (about 5 MB) hold a hospital's regular recipients: at 8,192, sends spread over
# 10,000 numbers missed one time in five.
NUMBER_CACHE_SIZE = 32_768


@functools.lru_cache(maxsize=NUMBER_CACHE_SIZE)
def normalise_number(raw: str, region: str) -> str | None:
    """E.164 form of a dialable number, or None if it is not a valid number.

    Only ASCII digits with the usual separators are read: phonenumbers would turn
    letters into digits (`1-800-FLOWERS`), read other scripts' digits, skip leading
    text, and drop an extension, and each of those sends to a number nobody wrote."""
    raw = raw.strip(" ")
    plain = read_plain_e164(raw)
    if plain is not UNSURE:
        return plain
    if _DIALABLE.fullmatch(raw) is None:
        return None
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if parsed.extension or not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


# A broadcast's or a template's text comes many times over: planned once (7 us a
# 160-character body). An oversized body raises each time (lru_cache keeps no error).
@functools.lru_cache(maxsize=128)
def _plan(body: str, max_segments: int) -> tuple[str, int]:
    """The encoding and the number of segments `body` is sent in."""
    plan = split(body, max_segments=max_segments)
    return plan.encoding.value, plan.segments


def _bad_field(field: str, detail: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {detail}", field=field)


def _instant(value: datetime, field: str) -> float:
    """Unix seconds of a client's time, refusing offsets no zone uses (beyond ±14:00)."""
    offset = value.utcoffset()
    if offset is None or abs(offset) > MAX_UTC_OFFSET:
        raise _bad_field(field, "the UTC offset must be within -14:00 to +14:00")
    return value.timestamp()


class Prepared(msgspec.Struct, frozen=True):
    """A message validated and shaped, not yet stored (a Struct: the policy's verdict
    makes a copy of each one it holds or blocks, and a frozen dataclass costs more)."""

    message: NewMessage
    entry: Entry
    scheduled: bool
    purpose: Purpose = Purpose.INFORMATIONAL
    quiet_hours_override: bool = False
    quiet_hours_reason: str | None = None
    # The class's default lifetime when the client set no expires_at: a message held
    # by the policy keeps it from when it may go, as one with a send_at does.
    lifetime: float | None = None
    links: tuple[Minted, ...] = ()  # its short links' tokens, stored with it

    def answer(self) -> Accepted:
        m = self.message
        # `m.state` written out: the writer answers every message of a batch in its thread.
        if m.blocked is not None:
            state = _BLOCKED
        elif m.send_at is not None and m.send_at > m.created_at:
            state = _SCHEDULED
        else:
            state = _QUEUED
        reason = m.blocked or m.held_for
        return Accepted(m.id, state, PRIORITY_LABELS[m.priority], m.segments, m.encoding, reason)

    def judged(self, verdict: Verdict) -> Prepared:
        """This message as the policy's verdict stores it."""
        if verdict.state is State.QUEUED:
            return self
        m = self.message
        # `msgspec.structs.replace` of the fields the verdict sets, not `m.judged`: a
        # message at accept is neither blocked nor held yet, and this runs in the
        # writer for most messages of a capped load (one Python call fewer each).
        replace = msgspec.structs.replace
        if verdict.state is State.BLOCKED:
            blocked = replace(m, blocked=verdict.reason)
            return replace(self, message=blocked, scheduled=False)
        at = verdict.send_at
        assert at is not None
        expires_at = m.expires_at
        if self.lifetime is not None and at + self.lifetime > expires_at:
            expires_at = at + self.lifetime
        held = replace(m, held_for=verdict.reason, send_at=at, expires_at=expires_at)
        self.entry.due_at = at
        self.entry.expires_at = expires_at
        return replace(self, message=held, scheduled=True)


class Intake:
    def __init__(
        self,
        config: Config,
        store: Store,
        scheduler: Scheduler,
        router: Router,
        clock: Clock,
        metrics: Metrics,
        sealer: AcceptStore | None = None,
    ) -> None:
        self._config = config
        self._queue = config.queue
        self._store = store
        self.insert_statements = store.insert_statements  # a message's rows (`statements`)
        # Who seals an accept's fields: on a cluster the shared queue, under the shared
        # keyring's newest generation (taken up at a rotation by every node).
        self._sealer: AcceptStore = store if sealer is None else sealer
        self._scheduler = scheduler
        self._router = router
        self._clock = clock
        self._metrics = metrics
        self._routes = frozenset(router.names)
        self._horizon = self._queue.max_schedule_days * 86400.0
        self.policy = Policy(config.consent)
        self.links = LinkBook(config.links)  # named links, for `{link:NAME}` at accept
        self._shapes: dict[
            tuple[str | None, str | None, str | None], tuple[Purpose, Priority, float, str]
        ] = {}
        if self.policy.enabled:
            policy = self.policy

            def recipient(s: ClaimSubject) -> str:
                return store.decrypt(s.to_ct, s.message_id, "to")

            def claim_check(conn: sqlite3.Connection, s: ClaimSubject) -> str | Held | None:
                return policy.claim_verdict(conn, s, recipient)

            store.claim_check = claim_check

    def prepare(
        self,
        req: SendRequest,
        token_id: str | None,
        now: float,
        field_prefix: str = "",
        *,
        token_purpose: str | None = None,
        to_index: bytes | None = None,
        message_id: str | None = None,
    ) -> Prepared:
        """Validate and shape one message; raises `ApiError` naming the field. Its
        purpose is the one named, else `token_purpose` (the token's default), else the
        config's default. `to_index`: `req.to` is a contact's stored number, E.164 with
        this blind index, and is not parsed again (a campaign's recipients: parsing was
        over a quarter of the runner's CPU per recipient). `message_id`: one drawn
        beforehand (`prepare_batch` draws a batch's together)."""
        if to_index is not None and _E164.fullmatch(req.to):
            to: str | None = req.to
        else:
            to, to_index = normalise_number(req.to, self._queue.default_region), None
        if to is None:
            raise ApiError(
                422,
                "invalid_number",
                f"{field_prefix}to: not a valid phone number",
                field=f"{field_prefix}to",
            )
        if message_id is None:
            message_id = new_message_id()
        body: str = req.body
        links: tuple[Minted, ...] = ()
        if "{" in body and has_placeholder(body):  # most bodies: no call
            body, links = self.links.expand(body, message_id, now, f"{field_prefix}body")
        try:
            encoding, segments = _plan(body, self._queue.max_segments)
        except BodyTooLong as e:
            raise ApiError(
                422, "body_too_long", f"{field_prefix}body: {e}", field=f"{field_prefix}body"
            ) from None
        shape = self._shapes.get((req.purpose, token_purpose, req.priority))
        if shape is None:
            shape = self._shape(req.purpose, token_purpose, req.priority, field_prefix)
        purpose, priority, lifetime, purpose_value = shape
        if req.route is not None and req.route not in self._routes:
            raise ApiError(
                422,
                "unknown_route",
                f"{field_prefix}route: no such route",
                field=f"{field_prefix}route",
            )
        horizon = self._horizon
        if req.send_at is None:
            send_at = None
            start = now
        else:
            send_at = _instant(req.send_at, f"{field_prefix}send_at")
            if not now - SEND_AT_SKEW <= send_at <= now + horizon:
                raise _bad_field(
                    f"{field_prefix}send_at",
                    "must be from now to queue.max_schedule_days ahead"
                    f" ({self._queue.max_schedule_days:g} days)",
                )
            start = max(now, send_at)
        if req.expires_at is None:
            expires_at = start + lifetime
        else:
            expires_at = _instant(req.expires_at, f"{field_prefix}expires_at")
        if not start < expires_at <= start + horizon:
            raise _bad_field(
                f"{field_prefix}expires_at",
                "must be after now and after send_at, and at most"
                f" queue.max_schedule_days ({self._queue.max_schedule_days:g}) after them",
            )
        if req.callback_url is not None:
            check_callback(req.callback_url, self._config.webhooks, f"{field_prefix}callback_url")
        candidates = self._router.candidates(to, priority, req.route)
        if not candidates:
            raise ApiError(
                422,
                "no_route",
                f"{field_prefix}to: no configured route carries this number "
                f"at priority {priority.label}",
                field=f"{field_prefix}to",
            )
        # Encrypted here, on the event loop, not in the writer's transaction (on a
        # cluster by the shared queue's cipher).
        sealed = self._sealer.seal(message_id, to, body, req.reference, req.callback_url)
        message = NewMessage(
            id=message_id,
            token_id=token_id,
            priority=priority,
            to=to,
            body=body,
            encoding=encoding,
            segments=segments,
            created_at=now,
            expires_at=expires_at,
            send_at=send_at,
            reference=req.reference,
            callback_url=req.callback_url,
            route_hint=req.route,
            category=req.category,
            purpose=purpose_value,
            to_index=to_index or self._sealer.blind_index(to),
            sealed=sealed,
        )
        scheduled = send_at is not None and send_at > now  # `message.state`, not yet judged
        due = send_at if scheduled and send_at is not None else now
        entry = Entry(message.id, priority, due, expires_at, candidates)
        return Prepared(
            message,
            entry,
            scheduled,
            purpose,
            req.quiet_hours_override is not None,
            None if req.quiet_hours_override is None else req.quiet_hours_override.reason,
            None if req.expires_at is not None else lifetime,
            links,
        )

    def prepare_batch(
        self,
        items: Sequence[SendRequest | ApiError],
        token_id: str | None,
        now: float,
        token_purpose: str | None,
    ) -> tuple[list[Prepared], dict[int, dict[str, Any]]]:
        """`prepare` of each item of a batch (an `ApiError` item is one its front end
        could not decode), errors naming it as `messages[i].`: the valid ones prepared,
        and each refused one's error body by its place. The ids are drawn together."""
        prepared: list[Prepared] = []
        errors: dict[int, dict[str, Any]] = {}
        prepare = self.prepare
        ids = new_message_ids(len(items))
        for i, (item, message_id) in enumerate(zip(items, ids, strict=True)):
            try:
                if isinstance(item, ApiError):
                    raise item
                prepared.append(
                    prepare(
                        item,
                        token_id,
                        now,
                        f"messages[{i}].",
                        token_purpose=token_purpose,
                        message_id=message_id,
                    )
                )
            except ApiError as e:
                errors[i] = e.body()
        return prepared, errors

    def _shape(
        self,
        named: str | None,
        token_purpose: str | None,
        named_priority: str | None,
        field_prefix: str,
    ) -> tuple[Purpose, Priority, float, str]:
        """A message's purpose, class and default lifetime from what it named and its
        token's default (`ApiError` if refused), kept for the next message naming the
        same: the config decides them, and working them out was a sixth of `prepare`."""
        purpose = self.policy.purpose_of(named, token_purpose, field_prefix)
        priority = self.policy.priority_of(purpose, named_priority, field_prefix)
        # The purpose's value kept too: an enum member's `.value` runs Python each time.
        shape = (purpose, priority, self._queue.policy(priority).expires_after, purpose.value)
        if len(self._shapes) >= _SHAPES_KEPT:
            self._shapes.clear()
        self._shapes[(named, token_purpose, named_priority)] = shape
        return shape

    def judge(self, view: GroupView, p: Prepared) -> Prepared:
        """The policy's verdict on one prepared message, from what `view` read in the
        transaction that will insert it (and the messages judged before it there)."""
        m = p.message
        if m.to_index is None:  # `prepare` sets it; a message built elsewhere may not
            m = msgspec.structs.replace(m, to_index=self._store.blind_index(m.to))
            p = msgspec.structs.replace(p, message=m)
        verdict = self.policy.verdict_of(view, p)
        if p.quiet_hours_override:
            p = msgspec.structs.replace(p, message=msgspec.structs.replace(m, quiet_override=True))
        return p if verdict is QUEUED else p.judged(verdict)

    def statements(self, prepared: Sequence[Prepared]) -> list[Statement]:
        rows: list[Statement] = []
        insert = self._store.insert_statements
        for p in prepared:
            rows.extend(insert(p.message))
            if p.links:
                rows.extend(token_statements(p.links))
        return rows

    def accepted(self, prepared: Sequence[Prepared]) -> None:
        """Hand committed messages to the scheduler (a blocked one never goes)."""
        if len(prepared) == 1:  # a single send: no tally
            p = prepared[0]
            if p.message.blocked is None:
                self._scheduler.add(p.entry, scheduled=p.scheduled)
                self._metrics.accepted.counts[p.message.priority] += 1
            return
        counts = self._metrics.accepted.counts
        added: list[tuple[Entry, bool]] = []
        for p in prepared:
            m = p.message
            if m.blocked is None:
                added.append((p.entry, p.scheduled))
                counts[m.priority] += 1
        self._scheduler.add_many(added)
