"""What an SMPP session reports: the events `Session.receive_data` and `Session.on_timer`
return, and `InFlight`, a request of ours awaiting its response (`session.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.smpp.pdu import Command, Pdu
from drivers.smpp.session_rules import BindMode


@dataclass(frozen=True, slots=True)
class InFlight:
    """A request of ours awaiting its response: what, when, and the caller's `token`."""

    command: Command
    sequence: int
    token: object
    sent_at: float
    deadline: float


class Event:
    """Base of everything `receive_data` and `on_timer` return."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Request(Event):
    """A peer request for the caller: submit_sm, deliver_sm, data_sm, query_sm or
    alert_notification. Answer with `respond(event.pdu, status, params)`, except
    alert_notification, which takes no answer."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class BindRequest(Event):
    """SMSC role: an ESME asks to bind. The session is BINDING until the caller calls
    `accept_bind(event.pdu, system_id)` or `reject_bind(event.pdu, status)`. The
    credentials stay in `pdu`, out of the event's repr."""

    pdu: Pdu
    mode: BindMode

    @property
    def system_id(self) -> str:
        return self.pdu.param("system_id", str)

    @property
    def password(self) -> str:
        return self.pdu.param("password", str)


@dataclass(frozen=True, slots=True)
class Outbind(Event):
    """ESME role: the SMSC asks us to bind (usually as a receiver); call `bind`."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class Bound(Event):
    """ESME role: our bind was accepted; `system_id` is the SMSC's."""

    mode: BindMode
    system_id: str
    pdu: Pdu


@dataclass(frozen=True, slots=True)
class BindRejected(Event):
    """ESME role: our bind was refused with `status` (ESME_RBINDFAIL, ESME_RINVPASWD…)
    by bind_resp or generic_nack. The session is OPEN again: bind again or close."""

    status: int
    pdu: Pdu


@dataclass(frozen=True, slots=True)
class Response(Event):
    """The answer to a `send_request` request: `pdu` is its *_resp or a generic_nack
    (check `pdu.command` and `pdu.status`), `token` what the caller passed, `rtt` the
    seconds since it was sent. Its window slot is free again."""

    request_command: Command
    sequence: int
    pdu: Pdu
    token: object
    rtt: float


@dataclass(frozen=True, slots=True)
class UnexpectedResponse(Event):
    """A response matching no outstanding request, most often one that came after its
    request timed out. Nothing is sent back."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class ResponseTimeout(Event):
    """No answer to a `send_request` request within `response_timeout`. The session has
    forgotten it and freed its slot; whether the peer acted on it is unknown."""

    request_command: Command
    sequence: int
    token: object


@dataclass(frozen=True, slots=True)
class PeerProtocolError(Event):
    """The peer broke the protocol and the session survives: a request the state does
    not allow, a frame that does not decode, a response of the wrong command. `status`
    is the command_status we answered with, None if we answered nothing (responses are
    never answered); `pdu` is None if the frame did not decode. No values in `detail`."""

    detail: str
    status: int | None
    sequence: int | None
    pdu: Pdu | None


@dataclass(frozen=True, slots=True)
class SessionEnded(Event):
    """Base of the events that close the session. `in_doubt`: the caller's requests
    still unanswered, in the order sent; they may or may not have reached the peer."""

    in_doubt: tuple[InFlight, ...]


@dataclass(frozen=True, slots=True)
class Unbound(SessionEnded):
    """The unbind handshake is done: the peer's unbind, answered (`by_peer`), or ours."""

    by_peer: bool


@dataclass(frozen=True, slots=True)
class BindTimeout(SessionEnded):
    """Not bound within `session_init_timeout` of connecting, or the bind unanswered."""


@dataclass(frozen=True, slots=True)
class LinkDead(SessionEnded):
    """The link is gone though the socket may look open: our enquire_link or unbind
    went unanswered (`reason`), or nothing arrived for `inactivity_timeout`."""

    reason: Literal["enquire_link", "unbind", "inactivity"]


@dataclass(frozen=True, slots=True)
class ProtocolViolation(SessionEnded):
    """A command_length out of bounds: the stream cannot be followed. `status` is the
    decoder's (ESME_RINVCMDLEN). Reset the link."""

    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionLost(SessionEnded):
    """The peer closed the connection (`receive_data(b"")`)."""
