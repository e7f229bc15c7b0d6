"""The SMPP 3.4 session: binds, sequence numbers, the window and timers, with no I/O.

Theory of operation. A `Session` is one end of one TCP connection, an ESME (the
gateway's carrier link) or an SMSC (the test simulator). It touches no socket and no
clock: the caller feeds it the octets that arrived (`receive_data(data, now)`), asks it
to send (`bind`, `send_request`, `respond`, `unbind`), writes out `data_to_send()`
after *every* call, and calls `on_timer(now)` once `next_deadline()` has passed. `now`
is monotonic seconds. What happens comes back as events, the frozen dataclasses of
`session_events.py`.

Two tables govern `State` (`session_rules.py`), and nothing else does.
`MAY_SEND[state][role]` lists the requests a role may send on a session in that state;
it checks what we send
(`LocalProtocolError`) and what the peer sends (answered with ESME_RINVBNDSTS, or
ESME_RALYBND for a bind, and reported as `PeerProtocolError`). Responses are not in
it: one is right when it answers an outstanding request of ours. `TRANSITIONS` gives
the state after a PDU passes in either direction, without knowing our role: a bind
moves both ends to BINDING (the SMSC waits there for the caller's `accept_bind` or
`reject_bind`), its bind_resp to a bound state or back to OPEN, unbind to UNBINDING,
unbind_resp to CLOSED. Timers, a broken stream and end of file close from any state.

Sequence numbers run 1..0x7FFFFFFF and wrap to 1. Each request we send that has an
answer is remembered (`InFlight`) until its response, a generic_nack with its
sequence, or its response timer. Requests sent with `send_request` count against
`window`; the session's own bind, unbind and enquire_link do not, so a full window
never blocks a keep-alive.

The session itself answers what needs no decision: enquire_link, unbind (then
CLOSED), a request the state does not allow, and a frame that does not decode. A known
request that fails to decode gets its own *_resp with the decoder's command_status (a
bad destination_addr is submit_sm_resp ESME_RINVDSTADR, SMPP 3.4 §4, which the
scheduler classes as permanent); an unknown command_id, or a request without a
response, gets generic_nack. A malformed response is only reported; its request waits
for its timer. A command_length out of bounds means the stream is out of step: the
session closes with `ProtocolViolation` and the link must be reset.

Timers (REL-9 and Jasmin defaults, in `SessionConfig`; None turns one off):
- session init, 30 s from connecting: not bound by then → `BindTimeout`.
- response, 30 s per request → `ResponseTimeout`, its window slot freed. Our own
  enquire_link or unbind unanswered means the link is half-open → `LinkDead`.
- enquire_link, 30 s: bound and nothing received for that long → send enquire_link.
  Idle counts from the last octet *received*, so a link we only send on is probed too.
- inactivity, 300 s: nothing received at all → `LinkDead`; the backstop when the
  enquire_link timer is off, as it often is on the SMSC side.

Errors. `LocalProtocolError`: this side asked for what the protocol or the session
forbids (the wrong state, a full window, a value the codec cannot encode); it is
raised and nothing changes. The peer's faults are never raised, they come back as
`PeerProtocolError`, `UnexpectedResponse` or, when fatal, `ProtocolViolation`. Every
event that ends the session is a `SessionEnded` carrying the caller's unanswered
requests (`in_doubt`: they may or may not have reached the peer). Flush
`data_to_send()` once more after it (an unbind_resp may wait there), then close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.base import ProtocolError
from drivers.smpp.in_flight import InFlightTable
from drivers.smpp.pdu import (
    MAX_PDU_SIZE,
    RESPONSE_BIT,
    Command,
    Pdu,
    PduReader,
    SmppDecodeError,
    SmppEncodeError,
    SmppFramingError,
    Value,
    decode,
    encode,
)
from drivers.smpp.session_events import (
    BindRejected,
    BindRequest,
    BindTimeout,
    Bound,
    ConnectionLost,
    Event,
    InFlight,
    LinkDead,
    Outbind,
    PeerProtocolError,
    ProtocolViolation,
    Request,
    Response,
    ResponseTimeout,
    SessionEnded,
    Unbound,
    UnexpectedResponse,
)
from drivers.smpp.session_rules import (
    BIND_COMMANDS,
    BIND_MODES,
    BINDS,
    BOUND,
    CONTROL,
    MAY_SEND,
    NO_ANSWER,
    TRANSITIONS,
    BindMode,
    Role,
    State,
)
from drivers.smpp.status import Status

# The events and the rules live in session_events.py and session_rules.py; every name
# callers use stays importable from here.
__all__ = [
    "INTERFACE_VERSION",
    "MAX_SEQUENCE",
    "BindMode",
    "BindRejected",
    "BindRequest",
    "BindTimeout",
    "Bound",
    "ConnectionLost",
    "Event",
    "InFlight",
    "LinkDead",
    "LocalProtocolError",
    "Outbind",
    "Params",
    "PeerProtocolError",
    "ProtocolViolation",
    "Request",
    "Response",
    "ResponseTimeout",
    "Role",
    "Session",
    "SessionConfig",
    "SessionEnded",
    "State",
    "Tlvs",
    "Unbound",
    "UnexpectedResponse",
]

MAX_SEQUENCE = 0x7FFFFFFF
INTERFACE_VERSION = 0x34

Params = Mapping[str, Value]
Tlvs = Mapping[int, Value]


class LocalProtocolError(ProtocolError):
    """This side misused the session or broke the protocol; the session is unchanged."""

    def __init__(self, message: str, *, code: str = "smpp:local") -> None:
        super().__init__(message, code=code, remote=False)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The window and the timers, in seconds; None turns a timer off.

    `window`: requests sent with `send_request` that may await a response at once
    (REL-9 goal: 10). `response_timeout`: how long each may wait (REL-9: ≤ 30 s).
    `enquire_link_interval`: silence from the peer after which a bound session probes.
    `inactivity_timeout`: silence after which the link is dead. `session_init_timeout`:
    from connecting to a successful bind. `max_pdu_size`: a longer command_length
    breaks the link (R-SMSC-4: 64 KiB).
    """

    window: int = 10
    response_timeout: float = 30.0
    enquire_link_interval: float | None = 30.0
    inactivity_timeout: float | None = 300.0
    session_init_timeout: float | None = 30.0
    max_pdu_size: int = MAX_PDU_SIZE

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        timers = ("response_timeout", "enquire_link_interval", "inactivity_timeout")
        for name in (*timers, "session_init_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive")


class Session:
    """One end of an SMPP 3.4 connection, as `role`; see the module docstring.

    `now` is when the connection opened; `first_sequence` lets tests start near the
    wrap."""

    def __init__(
        self,
        role: Role,
        config: SessionConfig | None = None,
        *,
        now: float,
        first_sequence: int = 1,
    ) -> None:
        if not 1 <= first_sequence <= MAX_SEQUENCE:
            raise ValueError(f"first_sequence must be in 1..{MAX_SEQUENCE}")
        self.role = role
        self.config = config or SessionConfig()
        self._state = State.OPEN
        self._peer = Role.SMSC if role is Role.ESME else Role.ESME
        self._next_sequence = first_sequence
        self._pending = InFlightTable()
        self._pending_bind: Pdu | None = None
        self._reader = PduReader(self.config.max_pdu_size)
        self._outgoing = bytearray()
        self._opened_at = self._last_received = now

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def in_flight(self) -> tuple[InFlight, ...]:
        """The caller's requests awaiting a response, in the order sent."""
        return tuple(p for p in self._pending if p.command not in CONTROL)

    @property
    def outstanding(self) -> int:
        return self._pending.outstanding

    @property
    def window_free(self) -> int:
        return self.config.window - self.outstanding

    def can_send_request(self, command: Command = Command.SUBMIT_SM) -> bool:
        """Whether `send_request(command, …)` would be accepted now."""
        if command in CONTROL or command not in MAY_SEND[self._state][self.role]:
            return False
        return command in NO_ANSWER or self.window_free > 0

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call, to write out in order."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    # -- sending -----------------------------------------------------------------------

    def bind(
        self,
        mode: BindMode,
        system_id: str,
        password: str,
        system_type: str = "",
        *,
        now: float,
        params: Params | None = None,
    ) -> int:
        """ESME role, OPEN: send bind_`mode` and move to BINDING; returns its sequence.
        `params` adds or overrides fields (address_range, addr_ton, addr_npi,
        interface_version, 0x34 by default). The answer is `Bound` or `BindRejected`."""
        if self.role is not Role.ESME:
            raise LocalProtocolError("only an ESME binds")
        command = BIND_COMMANDS[mode]
        self._check_may_send(command)
        fields: dict[str, Value] = {"system_id": system_id, "password": password}
        fields.update(system_type=system_type, interface_version=INTERFACE_VERSION)
        return self._send_request(command, {**fields, **(params or {})}, None, None, now)

    def send_request(
        self,
        command: Command,
        params: Params | None = None,
        tlvs: Tlvs | None = None,
        *,
        token: object = None,
        now: float,
    ) -> int:
        """Send submit_sm, deliver_sm, data_sm, query_sm, outbind or alert_notification;
        returns its sequence. The answer comes as `Response` or `ResponseTimeout`
        carrying `token`. LocalProtocolError if the state does not allow `command`, the
        window is full, or a value does not fit its field."""
        if command in CONTROL or command.is_response:
            name = command.name.lower()
            raise LocalProtocolError(f"{name}: use bind, unbind, respond or the timers")
        self._check_may_send(command)
        if command not in NO_ANSWER and self.window_free <= 0:
            raise LocalProtocolError(f"window of {self.config.window} requests is full")
        return self._send_request(command, params, tlvs, token, now)

    def send_requests(
        self,
        command: Command,
        requests: Sequence[tuple[Params, Tlvs | None, object]],
        *,
        now: float,
    ) -> list[LocalProtocolError | None]:
        """`send_request(command, params, tlvs, token=token)` for each (params, tlvs,
        token) of `requests`, in order, with the state and the window checked once for
        the group: LocalProtocolError if the state does not allow `command` or the window
        has no room for them all (nothing sent). Per request None once sent, or the
        LocalProtocolError of a value that does not fit its field (that one not sent,
        the others are)."""
        if command in CONTROL or command.is_response or command in NO_ANSWER:
            raise LocalProtocolError(f"{command.name.lower()}: use send_request")
        self._check_may_send(command)
        if self.window_free < len(requests):
            raise LocalProtocolError(f"window of {self.config.window} requests is full")
        outcomes: list[LocalProtocolError | None] = []
        deadline = now + self.config.response_timeout
        track, out = self._pending.track, self._outgoing
        for params, tlvs, token in requests:
            sequence = self._next_sequence
            try:
                out += encode(Pdu(command, sequence, Status.ESME_ROK, params, tlvs or {}))
            except SmppEncodeError as error:
                outcomes.append(LocalProtocolError(str(error), code=error.code))
                continue
            self._next_sequence = sequence % MAX_SEQUENCE + 1
            track(InFlight(command, sequence, token, now, deadline))
            outcomes.append(None)
        self._advance(command, True)  # the same state after each: a request, then none
        return outcomes

    def respond(
        self,
        request: Pdu,
        status: int = Status.ESME_ROK,
        params: Params | None = None,
        tlvs: Tlvs | None = None,
    ) -> None:
        """Answer the peer's `request` (of a `Request` or `BindRequest`) with its *_resp;
        with an error `status` and no `params` the response has no body."""
        self._check_open()
        command = request.command
        if command.is_response or command in NO_ANSWER:
            raise LocalProtocolError(f"{command.name.lower()} takes no answer")
        if command in (Command.ENQUIRE_LINK, Command.UNBIND):
            raise LocalProtocolError(f"the session answers {command.name.lower()} itself")
        if command not in BINDS:
            self._send(request.response(status, params, tlvs))
            return
        pending = self._pending_bind
        if pending is None or (pending.command, pending.sequence) != (command, request.sequence):
            raise LocalProtocolError("no such bind awaits an answer")
        self._send(request.response(status, params, tlvs))
        self._pending_bind = None
        self._advance(command.response, status == Status.ESME_ROK)

    def accept_bind(self, request: Pdu, system_id: str, tlvs: Tlvs | None = None) -> None:
        """SMSC role: accept the pending bind `request`; the session is bound at once."""
        self.respond(request, Status.ESME_ROK, {"system_id": system_id}, tlvs)

    def reject_bind(self, request: Pdu, status: int) -> None:
        """SMSC role: refuse the pending bind `request` with `status`; back to OPEN."""
        if status == Status.ESME_ROK:
            raise LocalProtocolError("a rejection needs an error status")
        self.respond(request, status)

    def unbind(self, *, now: float) -> None:
        """Start the unbind handshake from a bound state; `Unbound` follows the answer.
        A second call while UNBINDING does nothing."""
        if self._state is not State.UNBINDING:
            self._check_may_send(Command.UNBIND)
            self._send_request(Command.UNBIND, None, None, None, now)

    def close(self) -> tuple[InFlight, ...]:
        """Give the session up (the caller drops the connection); returns the requests
        left in doubt. Idempotent."""
        in_doubt = self.in_flight
        self._state = State.CLOSED
        self._pending.clear()
        self._pending_bind = None
        return in_doubt

    # -- receiving and timers ----------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed octets from the peer, split anywhere; `b""` means the peer closed.
        Returns the events in the order they happened; a closed session ignores data."""
        if self.closed:
            return []
        if not data:
            return [ConnectionLost(in_doubt=self.close())]
        self._last_received = now
        events: list[Event] = []
        try:
            self._reader.feed(data)
            while not self.closed and (frame := self._reader.next_frame()) is not None:
                try:
                    pdu = decode(frame)
                except SmppDecodeError as error:
                    events.append(self._on_bad_frame(error))
                else:
                    events.extend(self._on_pdu(pdu, now))
        except SmppFramingError as error:
            status, detail = error.command_status, str(error)
            events.append(ProtocolViolation(in_doubt=self.close(), status=status, detail=detail))
        return events

    def next_deadline(self) -> float | None:
        """When `on_timer` next has work to do (the caller's monotonic seconds)."""
        if self.closed:
            return None
        timers = (self._init_deadline(), self._inactive_deadline(), self._probe_due())
        first = self._pending.first_due()
        deadlines = [] if first is None else [first.deadline]
        return min([*deadlines, *(t for t in timers if t is not None)], default=None)

    def on_timer(self, now: float) -> list[Event]:
        """Fire every timer due at `now`: timeouts become events, a due enquire_link is
        queued in `data_to_send()`. Harmless to call early or often."""
        if self.closed:
            return []
        init, inactive = self._init_deadline(), self._inactive_deadline()
        if init is not None and now >= init:
            return [BindTimeout(in_doubt=self.close())]
        if inactive is not None and now >= inactive:
            return [LinkDead(in_doubt=self.close(), reason="inactivity")]
        events: list[Event] = []
        while (pending := self._pending.first_due()) is not None and pending.deadline <= now:
            self._pending.untrack(pending.sequence)
            if pending.command in BINDS:
                return [*events, BindTimeout(in_doubt=self.close())]
            if pending.command is Command.ENQUIRE_LINK:
                return [*events, LinkDead(in_doubt=self.close(), reason="enquire_link")]
            if pending.command is Command.UNBIND:
                return [*events, LinkDead(in_doubt=self.close(), reason="unbind")]
            events.append(ResponseTimeout(pending.command, pending.sequence, pending.token))
        probe = self._probe_due()
        if probe is not None and now >= probe:
            self._send_request(Command.ENQUIRE_LINK, None, None, None, now)
        return events

    def _init_deadline(self) -> float | None:
        timeout = self.config.session_init_timeout
        if timeout is None or self._state not in (State.OPEN, State.BINDING):
            return None
        return self._opened_at + timeout

    def _inactive_deadline(self) -> float | None:
        timeout = self.config.inactivity_timeout
        return None if timeout is None else self._last_received + timeout

    def _probe_due(self) -> float | None:
        interval = self.config.enquire_link_interval
        if interval is None or self._state not in BOUND:
            return None
        if self._pending.probes:
            return None  # one probe at a time; its response timer decides
        return self._last_received + interval

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise LocalProtocolError("the session is closed")

    def _check_may_send(self, command: Command) -> None:
        self._check_open()
        if command not in MAY_SEND[self._state][self.role]:
            role, state = self.role.value, self._state.value
            raise LocalProtocolError(f"{role} may not send {command.name.lower()} in {state}")

    def _advance(self, command: Command, ok: bool) -> None:
        self._state = TRANSITIONS.get((self._state, command, ok), self._state)

    def _send(self, pdu: Pdu) -> None:
        try:
            self._outgoing += encode(pdu)
        except SmppEncodeError as error:
            raise LocalProtocolError(str(error), code=error.code) from error

    def _send_request(
        self, command: Command, params: Params | None, tlvs: Tlvs | None, token: object, now: float
    ) -> int:
        sequence = self._next_sequence
        self._send(Pdu(command, sequence, Status.ESME_ROK, params or {}, tlvs or {}))
        # Reusing a number still outstanding would take 2**31 requests within one
        # response timeout, so numbers are not checked against `_pending`.
        self._next_sequence = sequence % MAX_SEQUENCE + 1
        if command not in NO_ANSWER:
            deadline = now + self.config.response_timeout
            self._pending.track(InFlight(command, sequence, token, now, deadline))
        self._advance(command, True)
        return sequence

    def _refuse(self, command_id: int, sequence: int, status: int) -> None:
        """Answer a request we will not process: its *_resp, or generic_nack if none."""
        try:
            answer = Command(command_id).response
        except ValueError:
            answer = Command.GENERIC_NACK
        self._send(Pdu(answer, sequence, status))

    def _on_bad_frame(self, error: SmppDecodeError) -> Event:
        command_id, sequence = error.command_id, error.sequence
        status: int | None = None
        if command_id is not None and sequence is not None and not command_id & RESPONSE_BIT:
            status = error.command_status
            self._refuse(command_id, sequence, status)
        return PeerProtocolError(str(error), status, sequence, None)

    def _on_pdu(self, pdu: Pdu, now: float) -> list[Event]:
        if pdu.command.is_response:
            return self._on_response(pdu, now)
        command = pdu.command
        if command not in MAY_SEND[self._state][self._peer]:
            bound = command in BINDS and self._state is not State.OPEN
            status = Status.ESME_RALYBND if bound else Status.ESME_RINVBNDSTS
            self._refuse(command, pdu.sequence, status)
            detail = f"{self._peer.value} sent {command.name.lower()} in {self._state.value}"
            return [PeerProtocolError(detail, status, pdu.sequence, pdu)]
        self._advance(command, True)
        if command is Command.ENQUIRE_LINK:
            self._send(pdu.response())
            return []
        if command is Command.UNBIND:
            self._send(pdu.response())
            self._advance(Command.UNBIND_RESP, True)
            return [Unbound(in_doubt=self.close(), by_peer=True)]
        if command in BINDS:
            self._pending_bind = pdu
            return [BindRequest(pdu, BIND_MODES[command])]
        return [Outbind(pdu) if command is Command.OUTBIND else Request(pdu)]

    def _on_response(self, pdu: Pdu, now: float) -> list[Event]:
        pending = self._pending.get(pdu.sequence)
        if pending is None:
            return [UnexpectedResponse(pdu)]
        command, answer = pending.command, pending.command.response
        if pdu.command not in (answer, Command.GENERIC_NACK):
            detail = f"{pdu.command.name.lower()} answers {command.name.lower()}"
            return [PeerProtocolError(detail, None, pdu.sequence, pdu)]
        self._pending.untrack(pdu.sequence)
        ok = pdu.command is answer and pdu.status == Status.ESME_ROK
        self._advance(answer, ok)
        if command in BINDS:
            if not ok:
                return [BindRejected(pdu.status, pdu)]
            return [Bound(BIND_MODES[command], str(pdu.params.get("system_id", "")), pdu)]
        if command is Command.UNBIND:
            return [Unbound(in_doubt=self.close(), by_peer=False)]
        if command is Command.ENQUIRE_LINK:
            return []
        return [Response(command, pdu.sequence, pdu, pending.token, now - pending.sent_at)]
