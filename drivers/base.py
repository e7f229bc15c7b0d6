"""The contract between the gateway and every route driver.

A driver turns one outbound SMS into carrier submits and reports what comes back
(delivery receipts, inbound messages, health changes) to an `EventSink`. Drivers are a
library: they never import `gateway`. The gateway acts on the outcome of `submit()`:

- a `SubmitResult` means the carrier accepted every part (state `sent`);
- `TransientSendError` means try again later (after `retry_after` if given);
- `PermanentSendError` means the message failed and must not be retried;
- `DriverNotReady` means the route cannot send now (reconnecting); the message is
  retried, on this or another route;
- `DriverAuthFailed` means the route is parked until an operator acts.

The gateway hands a driver a group of messages at once through `submit_group()`: a
driver that can send a group more cheaply than one by one (SMPP: the group's submit_sm
in one write, the answers gathered) implements `GroupSubmitter`; any other driver gets
one `submit()` per message, side by side. Each message keeps its own outcome.

Error codes are short, stable strings (`"smpp:0x0b"`, `"cms:331"`, `"loopback:reject"`)
that the API and metrics report verbatim; they never contain a number or a body.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class RouteState(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    PARKED = "parked"


class ReceiptState(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    ENROUTE = "enroute"
    ACCEPTED = "accepted"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_RECEIPTS


_FINAL_RECEIPTS = frozenset({ReceiptState.DELIVERED, ReceiptState.FAILED, ReceiptState.EXPIRED})


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """One message as a driver sees it: already normalised and split.

    `parts` are the body's segments in order (see `drivers.text.split`); a driver that
    sends long messages whole (SMPP `message_payload`) may join them again.
    `reference` is a stable per-message value drivers use for concatenation references
    so that a resend reuses the same reference.
    """

    message_id: str
    to: str
    parts: tuple[str, ...]
    encoding: str
    sender: str | None = None
    want_receipt: bool = True
    reference: int = 0
    possible_duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The carrier accepted the message; one carrier id per part, in part order."""

    carrier_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt for one submitted part, keyed by the carrier's id.

    `alternate_ids` are other spellings under which the same id may have been
    recorded (carriers that answer a submit in hex and report receipts in decimal);
    the gateway tries `carrier_id` first, then these in order.
    """

    carrier_id: str
    state: ReceiptState
    error_code: str | None = None
    alternate_ids: tuple[str, ...] = ()


MAX_INBOUND_PARTS = 255


@dataclass(frozen=True, slots=True)
class InboundPart:
    """Where one part of a concatenated inbound message sits in its set.

    `reference` is the concatenation reference as the phone sent it (a UDH IE 0x00 or
    SMPP `sar_msg_ref_num` is 8 or 16 bits wide: `ref_bits`), `total` the part count
    it announces and `seq` this part's number, 1-based. The gateway joins the parts of
    one set (same route, sender, recipient, reference, width and total); a part with
    another total is another message that reuses the reference. ValueError if the
    numbers are impossible, so a driver checks a carrier's values by building one.
    """

    reference: int
    ref_bits: int  # 8 or 16
    total: int
    seq: int

    def __post_init__(self) -> None:
        if self.ref_bits not in (8, 16):
            raise ValueError("ref_bits must be 8 or 16")
        if not 0 <= self.reference < 1 << self.ref_bits:
            raise ValueError("reference does not fit ref_bits")
        if not 1 <= self.seq <= self.total <= MAX_INBOUND_PARTS:
            raise ValueError(f"need 1 <= seq <= total <= {MAX_INBOUND_PARTS}")


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A mobile-originated message, or one part of one (`part` set).

    A driver hands every part of a concatenated message to `EventSink.inbound` as it
    arrives, with `body` that part's text, and acknowledges it to the carrier only once
    `inbound` returned: the gateway holds the parts on disk and stores the whole message
    when the last one arrives, or, after its reassembly timeout, what came with a marker
    for each missing part. A message in one piece has `part` None. Numbers and text stay
    out of the repr.
    """

    sender: str = field(repr=False)
    body: str = field(repr=False)
    recipient: str | None = field(default=None, repr=False)
    carrier_id: str | None = None
    part: InboundPart | None = None


@dataclass(frozen=True, slots=True)
class RouteHealth:
    """A snapshot of a route for `/routes`, `/metrics` and the router's choice."""

    state: RouteState
    detail: str = ""
    in_flight: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)
    # Per member of a route made of several units (a modem bank: one entry per modem,
    # keyed by its configured name): plain JSON values, never an identifier in full.
    members: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    @property
    def can_send(self) -> bool:
        return self.state in (RouteState.UP, RouteState.DEGRADED)


class DriverError(Exception):
    """Base of every error a driver raises; `code` is stable and free of PHI."""

    code: str = "driver:error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class DriverNotReady(DriverError):
    """The route cannot take the message now (reconnecting, throttled); nothing was sent.

    `retry_after` is how long the route needs before it can be tried again;
    `throttled` says the carrier asked us to slow down, so the gateway lowers the
    route's rate and wins it back gradually.
    """

    code = "driver:not_ready"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        throttled: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.throttled = throttled


class DriverAuthFailed(DriverError):
    """The carrier refused the route's credentials. The driver parks (health
    `PARKED`): it tries them no more, on no timer, until `Resumable.resume()`."""

    code = "driver:auth_failed"


class TransientSendError(DriverError):
    code = "driver:transient"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        # True when bytes may have reached the carrier (link lost mid-window): the
        # resend is then flagged as a possible duplicate.
        self.maybe_sent = maybe_sent


class PermanentSendError(DriverError):
    code = "driver:permanent"


class ProtocolError(DriverError):
    """The peer (`remote=True`) or this side broke the protocol."""

    code = "driver:protocol"

    def __init__(self, message: str, *, code: str | None = None, remote: bool = True) -> None:
        super().__init__(message, code=code)
        self.remote = remote


class EventSink(Protocol):
    """Where a driver reports what happens outside `submit()`.

    Each method returns once the event is durable, so a driver may acknowledge it to
    the carrier afterwards (for example `deliver_sm_resp` only after the commit). For
    an inbound part, durable means held on disk: a crash between parts loses nothing
    the carrier was told it may forget. A part delivered twice is stored once.
    """

    async def receipt(self, route: str, receipt: Receipt) -> None: ...

    async def inbound(self, route: str, sms: InboundSms) -> None: ...

    def health_changed(self, route: str, health: RouteHealth) -> None: ...


@runtime_checkable
class AnsweredInboundSink(Protocol):
    """An `EventSink` told whether each inbound message's acknowledgement was written.

    `inbound_to_answer` stores as `inbound` does and returns the call to make once the
    driver wrote the carrier's answer: `answered(True)` once an acknowledgement
    (deliver_sm_resp ESME_ROK) is written, `answered(False)` if none will be (the
    session ended first). A delivery stored whose acknowledgement was never written is
    recognised when the carrier delivers it again, on any node, and stored once.
    """

    async def inbound_to_answer(self, route: str, sms: InboundSms) -> Callable[[bool], None]: ...


@runtime_checkable
class GroupReceiptSink(Protocol):
    """An `EventSink` that makes a group of receipts durable at once.

    `receipt_group` returns, once the group is committed, one entry per receipt in order:
    None if it is durable (the driver may acknowledge it), else the error that kept it
    from being stored (the driver lets the carrier redeliver it).
    """

    async def receipt_group(
        self, route: str, receipts: Sequence[Receipt]
    ) -> list[Exception | None]: ...


@runtime_checkable
class QuarantineSink(Protocol):
    """An `EventSink` that can hold what a driver received but could not decode.

    `quarantine` returns once `record` (the raw record as the device gave it, e.g. a
    modem's PDU hex, which is patient data) is durable, encrypted, for an operator; only
    then may the driver let the device forget it. A driver whose sink cannot do this
    leaves such a record where it is.
    """

    async def quarantine(self, route: str, source: str, record: str) -> None: ...


@runtime_checkable
class Driver(Protocol):
    """A route: one carrier link, modem bank or simulator.

    - `start()` connects or begins connecting; it returns without waiting for the
      carrier and reports progress through `EventSink.health_changed`.
    - `submit(sms)` sends one message (all its parts) and returns once the carrier
      accepted it, or raises one of the errors above. The gateway never calls it more
      often than the route's window and rate allow.
    - `health()` is cheap and synchronous.
    - `aclose()` stops sending, finishes or abandons in-flight work within the
      gateway's grace period, and disconnects politely (e.g. SMPP unbind).
    """

    name: str

    async def start(self) -> None: ...

    async def submit(self, sms: OutboundSms) -> SubmitResult: ...

    def health(self) -> RouteHealth: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """A driver that parks on refused credentials (`DriverAuthFailed`).

    - `resume()` is the operator's action: read the credentials again and try them
      once more. It returns False, changing nothing, when the route was not parked.
    - `parked_code` is the refusal's error code while parked, else None.
    - `credentials_mac(key)` is an HMAC-SHA256 under `key` of the credentials the
      driver would present now (read afresh; `ValueError` if they cannot be read), so
      the gateway can remember refused ones across a restart without keeping them.
    - `park(code)`, before `start()`: start parked, as if just refused with `code`
      (these credentials were refused before a restart and have not changed).
    """

    def resume(self) -> bool: ...

    @property
    def parked_code(self) -> str | None: ...

    def credentials_mac(self, key: bytes) -> bytes: ...

    def park(self, code: str) -> None: ...


@runtime_checkable
class GroupSubmitter(Protocol):
    """A driver that sends a group of messages together.

    `submit_many(group)` starts every message's submit before it returns and gives one
    future per message, in order, each resolving as `submit()` would return or raise for
    that message (so a message's outcome is known as soon as the carrier answered it).
    Cancelling a future abandons waiting for that answer, not the bytes already sent.
    """

    def submit_many(self, group: Sequence[OutboundSms]) -> list[asyncio.Future[SubmitResult]]: ...


def submit_group(
    driver: Driver, group: Sequence[OutboundSms]
) -> list[asyncio.Future[SubmitResult]]:
    """Start the submits of `group` on `driver`: its own `submit_many` if it has one,
    else one `submit()` per message, all under way at once (a modem bank still sends one
    message per modem, as its `submit` decides)."""
    # Not `isinstance(driver, GroupSubmitter)`: a runtime protocol check costs more than
    # the lookup, once per group on the hot path.
    submit_many = getattr(driver, "submit_many", None)
    if submit_many is not None:
        many: list[asyncio.Future[SubmitResult]] = submit_many(group)
        return many
    return [asyncio.ensure_future(driver.submit(sms)) for sms in group]


@runtime_checkable
class BindSlots(Protocol):
    """Leases on a carrier's session cap, shared with other gateways (a cluster's bind
    slots). A driver takes one before each bind and gives it back once that session
    has ended, so the sessions open at the carrier never exceed its cap.

    - `acquire(link)` returns a slot for link number `link`, or None when every slot is
      taken (or cannot be asked for now): the link must not bind; try again after
      `retry_after` seconds.
    - `release(slot)` gives a slot back once its session has ended (after unbind, or
      when the connection is gone); it never raises.
    - `on_revoke(drop)`: `drop(within)` is called when every slot given is revoked (a
      cluster node fenced itself): the driver unbinds each session at once, closes
      within `within` seconds those still open, releases their slots as usual, and
      binds again only once `acquire` gives a slot.
    """

    retry_after: float

    async def acquire(self, link: int) -> int | None: ...

    async def release(self, slot: int) -> None: ...

    def on_revoke(self, drop: Callable[[float], None]) -> None: ...


@runtime_checkable
class SlotBound(Protocol):
    """A driver whose sessions take `BindSlots`: `use_bind_slots(slots)` before `start()`."""

    def use_bind_slots(self, slots: BindSlots) -> None: ...
