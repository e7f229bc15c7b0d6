"""The sans-I/O SMPP session: an ESME and an SMSC session joined in memory.

Time moves only when a test passes a later `now`; nothing sleeps.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.smpp.pdu import (
    MAX_PDU_SIZE,
    Command,
    Pdu,
    SmppDecodeError,
    Value,
    decode,
    encode,
)
from drivers.smpp.session import (
    MAX_SEQUENCE,
    BindMode,
    BindRejected,
    BindRequest,
    BindTimeout,
    Bound,
    ConnectionLost,
    Event,
    InFlight,
    LinkDead,
    LocalProtocolError,
    Outbind,
    PeerProtocolError,
    ProtocolViolation,
    Request,
    Response,
    ResponseTimeout,
    Role,
    Session,
    SessionConfig,
    SessionEnded,
    State,
    Unbound,
    UnexpectedResponse,
)
from drivers.smpp.status import Status

T0 = 1000.0
SUBMIT: dict[str, Value] = {
    "source_addr": "WARD7B",
    "destination_addr": "12025550147",
    "short_message": b"hi",
}
DELIVER: dict[str, Value] = {
    "source_addr": "12025550147",
    "destination_addr": "WARD7B",
    "short_message": b"STOP",
}
BOUND_STATE: dict[BindMode, State] = {
    "transmitter": State.BOUND_TX,
    "receiver": State.BOUND_RX,
    "transceiver": State.BOUND_TRX,
}
BIND_MODES: tuple[BindMode, ...] = ("transmitter", "receiver", "transceiver")
QUIET_SMSC = SessionConfig(enquire_link_interval=None)  # only the ESME probes


def frames(data: bytes) -> list[Pdu]:
    """The PDUs in `data`, which holds whole frames only."""
    pdus, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        pdus.append(decode(data[pos : pos + length]))
        pos += length
    assert pos == len(data)
    return pdus


def raw(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    """A frame with a correct command_length and whatever body, valid or not."""
    return struct.pack(">IIII", 16 + len(body), command_id, status, sequence) + body


def states(pair: Pair) -> tuple[State, State]:
    return pair.esme.state, pair.smsc.state


class Pair:
    """An ESME and an SMSC session joined by an in-memory link (h11's ConnectionPair)."""

    def __init__(
        self,
        config: SessionConfig | None = None,
        smsc_config: SessionConfig | None = QUIET_SMSC,
        first_sequence: int = 1,
    ) -> None:
        self.now = T0
        self.esme = Session(Role.ESME, config, now=T0, first_sequence=first_sequence)
        self.smsc = Session(Role.SMSC, smsc_config, now=T0)

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Carry bytes both ways until both sides are quiet; the events each side saw."""
        esme_seen: list[Event] = []
        smsc_seen: list[Event] = []
        while True:
            up, down = self.esme.data_to_send(), self.smsc.data_to_send()
            if not up and not down:
                return esme_seen, smsc_seen
            if up:
                smsc_seen += self.smsc.receive_data(up, self.now)
            if down:
                esme_seen += self.esme.receive_data(down, self.now)

    def at(self, now: float) -> tuple[list[Event], list[Event]]:
        """Move time to `now` and fire both sides' timers."""
        self.now = now
        return self.esme.on_timer(now), self.smsc.on_timer(now)

    def submit(self, token: object) -> int:
        return self.esme.send_request(Command.SUBMIT_SM, SUBMIT, token=token, now=self.now)


def bound_pair(
    mode: BindMode = "transceiver",
    config: SessionConfig | None = None,
    smsc_config: SessionConfig | None = QUIET_SMSC,
    first_sequence: int = 1,
) -> Pair:
    pair = Pair(config, smsc_config, first_sequence)
    pair.esme.bind(mode, "gateway", "s3cret", now=pair.now)
    _, (request,) = pair.pump()
    assert isinstance(request, BindRequest)
    pair.smsc.accept_bind(request.pdu, "SMSC")
    (bound,), _ = pair.pump()
    assert isinstance(bound, Bound)
    assert pair.esme.state is pair.smsc.state is BOUND_STATE[mode]
    return pair


# -- bind -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transmitter", "receiver", "transceiver"])
def test_bind_accepted(mode: BindMode) -> None:
    pair = Pair()
    sequence = pair.esme.bind(mode, "gateway", "s3cret", "VMA", now=T0)
    assert pair.esme.state is State.BINDING
    _, (request,) = pair.pump()
    assert isinstance(request, BindRequest) and request.mode == mode
    assert (request.system_id, request.password, request.pdu.sequence) == ("gateway", "s3cret", 1)
    assert request.pdu.params["system_type"] == "VMA"
    assert request.pdu.params["interface_version"] == 0x34
    assert pair.smsc.state is State.BINDING
    assert "s3cret" not in repr(request)

    pair.smsc.accept_bind(request.pdu, "SMSC")
    assert pair.smsc.state is BOUND_STATE[mode]
    esme_events, _ = pair.pump()
    assert len(esme_events) == 1
    bound = esme_events[0]
    assert isinstance(bound, Bound)
    assert (bound.mode, bound.system_id, bound.pdu.sequence) == (mode, "SMSC", sequence)
    assert pair.esme.state is BOUND_STATE[mode]
    assert pair.esme.outstanding == 0 and pair.esme.window_free == 10


@pytest.mark.parametrize("status", [Status.ESME_RBINDFAIL, Status.ESME_RINVPASWD])
def test_bind_rejected_then_retried(status: Status) -> None:
    pair = Pair()
    pair.esme.bind("transmitter", "gateway", "wrong", now=T0)
    _, (request,) = pair.pump()
    assert isinstance(request, BindRequest)
    pair.smsc.reject_bind(request.pdu, status)
    wire = pair.smsc.data_to_send()
    assert wire == raw(Command.BIND_TRANSMITTER_RESP, 1, status=status)  # no body
    assert pair.esme.receive_data(wire, T0) == [BindRejected(status, decode(wire))]
    assert pair.esme.state is pair.smsc.state is State.OPEN

    pair.esme.bind("transmitter", "gateway", "right", now=T0 + 1)
    _, (again,) = pair.pump()
    assert isinstance(again, BindRequest)
    pair.smsc.accept_bind(again.pdu, "SMSC")
    (bound,), _ = pair.pump()
    assert isinstance(bound, Bound)
    assert states(pair) == (State.BOUND_TX, State.BOUND_TX)


def test_generic_nack_to_a_bind_is_a_rejection() -> None:
    session = Session(Role.ESME, now=T0)
    sequence = session.bind("receiver", "gateway", "pw", now=T0)
    nack = raw(Command.GENERIC_NACK, sequence, status=Status.ESME_RINVCMDLEN)
    assert session.receive_data(nack, T0) == [BindRejected(Status.ESME_RINVCMDLEN, decode(nack))]
    assert session.state is State.OPEN


def test_bind_answers_are_checked() -> None:
    pair = Pair()
    with pytest.raises(LocalProtocolError):
        pair.smsc.bind("transmitter", "smsc", "pw", now=T0)  # only an ESME binds
    pair.esme.bind("transmitter", "gateway", "pw", now=T0)
    _, (request,) = pair.pump()
    assert isinstance(request, BindRequest)
    with pytest.raises(LocalProtocolError):
        pair.smsc.reject_bind(request.pdu, Status.ESME_ROK)
    with pytest.raises(LocalProtocolError):  # not the pending bind
        pair.smsc.accept_bind(Pdu(Command.BIND_TRANSMITTER, 99), "SMSC")
    with pytest.raises(LocalProtocolError):  # the ESME has no bind to answer
        pair.esme.accept_bind(request.pdu, "SMSC")
    assert pair.smsc.data_to_send() == b""
    pair.smsc.accept_bind(request.pdu, "SMSC")
    with pytest.raises(LocalProtocolError):  # answered already
        pair.smsc.accept_bind(request.pdu, "SMSC")


def test_second_bind_is_refused_as_already_bound() -> None:
    pair = bound_pair()
    events = pair.smsc.receive_data(encode(Pdu(Command.BIND_TRANSMITTER, 9)), T0)
    assert [type(e) for e in events] == [PeerProtocolError]
    assert frames(pair.smsc.data_to_send()) == [
        Pdu(Command.BIND_TRANSMITTER_RESP, 9, Status.ESME_RALYBND)
    ]
    assert pair.smsc.state is State.BOUND_TRX


def test_outbind_asks_the_esme_to_bind() -> None:
    pair = Pair()
    pair.smsc.send_request(Command.OUTBIND, {"system_id": "SMSC", "password": "pw"}, now=T0)
    assert pair.smsc.outstanding == 0  # outbind has no answer
    esme_events, _ = pair.pump()
    assert [type(e) for e in esme_events] == [Outbind]
    pair.esme.bind("receiver", "gateway", "pw", now=T0)
    _, (request,) = pair.pump()
    assert isinstance(request, BindRequest) and request.mode == "receiver"


# -- requests and responses ---------------------------------------------------------------


def test_submit_matched_to_its_token_with_rtt() -> None:
    pair = bound_pair()
    first, second = pair.submit("msg-1"), pair.submit("msg-2")
    assert (first, second) == (2, 3)  # the bind took 1
    assert pair.esme.outstanding == 2 and pair.esme.window_free == 8
    _, requests = pair.pump()
    assert [type(e) for e in requests] == [Request, Request]
    assert isinstance(requests[0], Request) and isinstance(requests[1], Request)
    assert requests[0].pdu.params["destination_addr"] == "12025550147"

    pair.now = T0 + 0.25  # answered out of order
    pair.smsc.respond(requests[1].pdu, params={"message_id": "B"})
    (b,), _ = pair.pump()
    pair.now = T0 + 0.5
    pair.smsc.respond(requests[0].pdu, Status.ESME_RTHROTTLED)
    (a,), _ = pair.pump()
    assert isinstance(a, Response) and isinstance(b, Response)
    assert (b.request_command, b.sequence, b.token, b.rtt) == (Command.SUBMIT_SM, 3, "msg-2", 0.25)
    assert b.pdu.params["message_id"] == "B" and b.pdu.status == Status.ESME_ROK
    assert (a.sequence, a.token, a.rtt, a.pdu.status) == (2, "msg-1", 0.5, Status.ESME_RTHROTTLED)
    assert pair.esme.outstanding == 0


def test_window_limit_enforced() -> None:
    pair = bound_pair(config=SessionConfig(window=2))
    pair.submit("a")
    pair.submit("b")
    queued = pair.esme.data_to_send()
    assert not pair.esme.can_send_request() and pair.esme.window_free == 0
    with pytest.raises(LocalProtocolError, match="window"):
        pair.submit("c")
    assert pair.esme.outstanding == 2 and pair.esme.data_to_send() == b""
    assert [p.sequence for p in frames(queued)] == [2, 3]

    requests = pair.smsc.receive_data(queued, T0)
    assert isinstance(requests[0], Request)
    pair.smsc.respond(requests[0].pdu, params={"message_id": "1"})
    pair.pump()
    assert pair.esme.can_send_request() and pair.esme.window_free == 1
    assert pair.submit("c") == 4
    assert [f.token for f in pair.esme.in_flight] == ["b", "c"]


def test_a_full_window_does_not_stop_the_keepalive() -> None:
    pair = bound_pair(config=SessionConfig(window=1))
    pair.submit("a")
    pair.smsc.receive_data(pair.esme.data_to_send(), T0)
    pair.at(T0 + 29)
    assert pair.esme.data_to_send() == b""
    pair.at(T0 + 30)
    # The submit times out and the probe goes out, window or not.
    assert [p.command for p in frames(pair.esme.data_to_send())] == [Command.ENQUIRE_LINK]


def test_sequence_wraps_to_one() -> None:
    pair = bound_pair(first_sequence=MAX_SEQUENCE - 1)  # the bind takes MAX - 1
    assert pair.submit("last") == MAX_SEQUENCE
    assert pair.submit("first") == 1
    assert [p.sequence for p in frames(pair.esme.data_to_send())] == [MAX_SEQUENCE, 1]
    for sequence in (1, MAX_SEQUENCE):
        resp = encode(Pdu(Command.SUBMIT_SM_RESP, sequence, params={"message_id": "x"}))
        (event,) = pair.esme.receive_data(resp, T0 + 1)
        assert isinstance(event, Response)
        assert event.token == ("first" if sequence == 1 else "last")
    pair.esme.on_timer(T0 + 31)  # the keep-alive takes the next number
    assert pair.esme.data_to_send() == encode(Pdu(Command.ENQUIRE_LINK, 2))


@pytest.mark.parametrize("first", [0, MAX_SEQUENCE + 1, -1])
def test_first_sequence_must_be_valid(first: int) -> None:
    with pytest.raises(ValueError, match="first_sequence"):
        Session(Role.ESME, now=T0, first_sequence=first)


def test_a_value_that_cannot_be_encoded_changes_nothing() -> None:
    pair = bound_pair()
    with pytest.raises(LocalProtocolError) as caught:
        pair.esme.send_request(
            Command.SUBMIT_SM, {**SUBMIT, "destination_addr": "1" * 30}, token="x", now=T0
        )
    assert caught.value.code == "smpp:0x0000000b" and not caught.value.remote
    assert pair.esme.outstanding == 0 and pair.esme.data_to_send() == b""
    assert pair.submit("y") == 2  # the sequence was not used up


def test_submit_before_bind() -> None:
    pair = Pair()
    with pytest.raises(LocalProtocolError, match="may not send submit_sm in open"):
        pair.submit("early")
    assert not pair.esme.can_send_request()
    events = pair.smsc.receive_data(encode(Pdu(Command.SUBMIT_SM, 7, params=SUBMIT)), T0)
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, PeerProtocolError)
    assert (error.status, error.sequence) == (Status.ESME_RINVBNDSTS, 7)
    assert frames(pair.smsc.data_to_send()) == [
        Pdu(Command.SUBMIT_SM_RESP, 7, Status.ESME_RINVBNDSTS)
    ]
    assert pair.smsc.state is State.OPEN


def test_submit_while_the_bind_awaits_its_answer_is_refused() -> None:
    pair = Pair()
    pair.esme.bind("transmitter", "gateway", "pw", now=T0)
    pair.pump()
    assert pair.smsc.state is State.BINDING
    pair.smsc.receive_data(encode(Pdu(Command.SUBMIT_SM, 2, params=SUBMIT)), T0)
    assert frames(pair.smsc.data_to_send()) == [
        Pdu(Command.SUBMIT_SM_RESP, 2, Status.ESME_RINVBNDSTS)
    ]


def test_deliver_sm_to_a_transmitter_is_refused() -> None:
    pair = bound_pair("transmitter")
    assert not pair.smsc.can_send_request(Command.DELIVER_SM)
    with pytest.raises(LocalProtocolError):
        pair.smsc.send_request(Command.DELIVER_SM, DELIVER, now=T0)
    events = pair.esme.receive_data(encode(Pdu(Command.DELIVER_SM, 5, params=DELIVER)), T0)
    assert [type(e) for e in events] == [PeerProtocolError]
    assert frames(pair.esme.data_to_send()) == [
        Pdu(Command.DELIVER_SM_RESP, 5, Status.ESME_RINVBNDSTS)
    ]
    assert pair.esme.state is State.BOUND_TX


@pytest.mark.parametrize("mode", ["receiver", "transceiver"])
def test_deliver_sm_to_a_receiver_is_passed_on(mode: BindMode) -> None:
    pair = bound_pair(mode)
    assert not pair.smsc.can_send_request(Command.SUBMIT_SM)
    sequence = pair.smsc.send_request(Command.DELIVER_SM, DELIVER, token="dlr", now=T0)
    esme_events, _ = pair.pump()
    (request,) = esme_events
    assert isinstance(request, Request) and request.pdu.params["short_message"] == b"STOP"
    pair.esme.respond(request.pdu)
    _, (response,) = pair.pump()
    assert isinstance(response, Response)
    assert (response.sequence, response.token) == (sequence, "dlr")


def test_respond_refuses_what_takes_no_answer() -> None:
    pair = bound_pair()
    for request in (
        Pdu(Command.ENQUIRE_LINK, 3),
        Pdu(Command.UNBIND, 3),
        Pdu(Command.ALERT_NOTIFICATION, 3),
        Pdu(Command.SUBMIT_SM_RESP, 3),
    ):
        with pytest.raises(LocalProtocolError):
            pair.smsc.respond(request)
    for command in (Command.ENQUIRE_LINK, Command.UNBIND, Command.BIND_TRANSMITTER):
        with pytest.raises(LocalProtocolError):
            pair.esme.send_request(command, now=T0)
    assert pair.smsc.data_to_send() == pair.esme.data_to_send() == b""


def test_unexpected_and_mismatched_responses() -> None:
    pair = bound_pair()
    sequence = pair.submit("m")
    pair.esme.data_to_send()
    late = encode(Pdu(Command.SUBMIT_SM_RESP, 4242, params={"message_id": "?"}))
    assert pair.esme.receive_data(late, T0) == [UnexpectedResponse(decode(late))]
    wrong = encode(Pdu(Command.DELIVER_SM_RESP, sequence))
    (error,) = pair.esme.receive_data(wrong, T0)
    assert isinstance(error, PeerProtocolError)
    assert (error.status, error.sequence, error.pdu) == (None, sequence, decode(wrong))
    assert pair.esme.data_to_send() == b""  # responses are never answered
    assert pair.esme.outstanding == 1  # still waiting for the right answer


def test_generic_nack_answers_the_request_it_names() -> None:
    pair = bound_pair()
    sequence = pair.submit("m")
    nack = raw(Command.GENERIC_NACK, sequence, status=Status.ESME_RINVCMDLEN)
    (event,) = pair.esme.receive_data(nack, T0 + 1)
    assert isinstance(event, Response)
    assert (event.request_command, event.token, event.pdu.command) == (
        Command.SUBMIT_SM,
        "m",
        Command.GENERIC_NACK,
    )
    assert pair.esme.outstanding == 0


# -- enquire_link and timers --------------------------------------------------------------


def test_enquire_link_is_answered_automatically() -> None:
    pair = bound_pair(smsc_config=None)  # both sides probe every 30 s
    assert pair.at(T0 + 30) == ([], [])
    up, down = pair.esme.data_to_send(), pair.smsc.data_to_send()
    assert [p.command for p in frames(up)] == [Command.ENQUIRE_LINK]
    assert [p.command for p in frames(down)] == [Command.ENQUIRE_LINK]
    assert pair.smsc.receive_data(up, T0 + 30) == []
    assert frames(pair.smsc.data_to_send()) == [
        Pdu(Command.ENQUIRE_LINK_RESP, frames(up)[0].sequence)
    ]
    assert pair.esme.receive_data(down, T0 + 30) == []
    assert [p.command for p in frames(pair.esme.data_to_send())] == [Command.ENQUIRE_LINK_RESP]


def test_enquire_link_is_answered_before_the_bind() -> None:
    session = Session(Role.SMSC, now=T0)
    assert session.receive_data(encode(Pdu(Command.ENQUIRE_LINK, 42)), T0) == []
    assert session.data_to_send() == encode(Pdu(Command.ENQUIRE_LINK_RESP, 42))


def test_idle_link_is_probed_and_declared_dead_when_unanswered() -> None:
    pair = bound_pair()
    assert pair.esme.next_deadline() == T0 + 30
    assert pair.at(T0 + 29.9) == ([], [])
    assert pair.esme.data_to_send() == b""
    assert pair.at(T0 + 30) == ([], [])
    probe = pair.esme.data_to_send()
    assert [p.command for p in frames(probe)] == [Command.ENQUIRE_LINK]
    assert pair.esme.outstanding == 0  # a probe takes no window slot
    # Half-open: the probe never arrives. Dead within interval + response timer (R-SMSC-2).
    assert pair.esme.next_deadline() == T0 + 60
    assert pair.esme.on_timer(T0 + 59.9) == []
    assert pair.esme.data_to_send() == b""  # one probe at a time
    assert pair.esme.on_timer(T0 + 60) == [LinkDead(in_doubt=(), reason="enquire_link")]
    assert pair.esme.state is State.CLOSED and pair.esme.next_deadline() is None


def test_answered_probes_keep_the_link_up() -> None:
    pair = bound_pair()
    for _ in range(30):  # 15 minutes, past the inactivity timer
        deadline = pair.esme.next_deadline()
        assert deadline is not None
        assert pair.at(deadline) == ([], [])
        assert pair.pump() == ([], [])
    assert pair.now >= T0 + 900
    assert pair.esme.state is State.BOUND_TRX


def test_traffic_from_the_peer_postpones_the_probe() -> None:
    pair = bound_pair()
    pair.smsc.send_request(Command.DELIVER_SM, DELIVER, now=T0 + 20)
    pair.now = T0 + 20
    (_request,), _ = pair.pump()
    assert pair.esme.next_deadline() == T0 + 50


def test_response_timeout_frees_the_window_slot() -> None:
    pair = bound_pair(config=SessionConfig(window=1, enquire_link_interval=None))
    sequence = pair.submit("m1")
    _, (request,) = pair.pump()
    assert isinstance(request, Request)
    assert pair.esme.next_deadline() == T0 + 30
    assert pair.at(T0 + 29.9) == ([], [])
    esme_events, _ = pair.at(T0 + 30)
    assert esme_events == [ResponseTimeout(Command.SUBMIT_SM, sequence, "m1")]
    assert pair.esme.window_free == 1 and pair.esme.in_flight == ()
    pair.smsc.respond(request.pdu, params={"message_id": "late"})
    esme_events, _ = pair.pump()
    assert [type(e) for e in esme_events] == [UnexpectedResponse]
    assert pair.submit("m2") == sequence + 1


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(st.sampled_from(["submit", "answer", "tick", "probe"]), st.integers(0, 9)),
        max_size=60,
    )
)
def test_window_and_deadlines_agree_with_the_requests_in_flight(
    steps: list[tuple[str, int]],
) -> None:
    """The session keeps its window count and earliest deadline as it goes (counters and a
    heap); they must always say what walking the requests in flight says."""
    pair = bound_pair(config=SessionConfig(window=5, response_timeout=3, enquire_link_interval=2))
    waiting: list[Request] = []
    for action, n in steps:
        if pair.esme.closed:
            break
        if action == "submit" and pair.esme.can_send_request():
            pair.submit(n)
        elif action == "answer" and waiting:
            request = waiting.pop(n % len(waiting))
            pair.smsc.respond(request.pdu, params={"message_id": str(n)})
        elif action == "tick":
            pair.at(pair.now + n / 4)
        elif action == "probe":
            pair.at(pair.now + 2)
        _, seen = pair.pump()
        waiting += [e for e in seen if isinstance(e, Request)]
        in_flight = pair.esme.in_flight
        assert pair.esme.outstanding == len(in_flight)
        assert pair.esme.window_free == 5 - len(in_flight)
        # Every timer due by now has fired: nothing overdue is left in flight.
        assert all(f.deadline > pair.now for f in in_flight)
        if not pair.esme.closed and in_flight:
            deadline = pair.esme.next_deadline()
            assert deadline is not None
            assert deadline <= min(f.deadline for f in in_flight)


def test_bind_timeout() -> None:
    pair = Pair()
    assert pair.esme.next_deadline() == pair.smsc.next_deadline() == T0 + 30
    assert pair.at(T0 + 29.9) == ([], [])
    assert pair.at(T0 + 30) == ([BindTimeout(in_doubt=())], [BindTimeout(in_doubt=())])
    assert pair.esme.state is pair.smsc.state is State.CLOSED


def test_bind_timeout_while_the_bind_is_unanswered() -> None:
    pair = Pair(SessionConfig(session_init_timeout=None))
    pair.esme.bind("transceiver", "gateway", "pw", now=T0 + 5)
    assert pair.esme.next_deadline() == T0 + 35  # the bind's response timer
    assert pair.esme.on_timer(T0 + 35) == [BindTimeout(in_doubt=())]


def test_inactivity() -> None:
    config = SessionConfig(enquire_link_interval=None)
    pair = bound_pair(config=config)
    assert pair.esme.next_deadline() == T0 + 300
    pair.now = T0 + 100
    pair.smsc.send_request(Command.DELIVER_SM, DELIVER, now=pair.now)
    pair.pump()  # the peer spoke: the timer starts over
    assert pair.esme.next_deadline() == T0 + 400
    # What we send does not count: a silent peer is what the timer is for.
    pair.esme.send_request(Command.SUBMIT_SM, SUBMIT, token="m", now=T0 + 390)
    assert pair.esme.on_timer(T0 + 399.9) == []
    (dead,) = pair.esme.on_timer(T0 + 400)
    assert isinstance(dead, LinkDead) and dead.reason == "inactivity"
    assert [f.token for f in dead.in_doubt] == ["m"]
    assert pair.esme.state is State.CLOSED


@pytest.mark.parametrize(
    "changes",
    [
        {"window": 0},
        {"response_timeout": 0},
        {"enquire_link_interval": -1},
        {"inactivity_timeout": 0.0},
        {"session_init_timeout": -5},
    ],
)
def test_config_is_validated(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SessionConfig(**changes)  # type: ignore[arg-type]


# -- unbind and the end of a session ------------------------------------------------------


def test_peer_unbind_is_answered_and_closes() -> None:
    pair = bound_pair()
    pair.smsc.unbind(now=T0)
    assert pair.smsc.state is State.UNBINDING
    assert not pair.smsc.can_send_request(Command.DELIVER_SM)
    esme_events, smsc_events = pair.pump()
    assert esme_events == [Unbound(in_doubt=(), by_peer=True)]
    assert smsc_events == [Unbound(in_doubt=(), by_peer=False)]
    assert pair.esme.closed and pair.smsc.closed


def test_our_unbind_goes_through_unbinding() -> None:
    pair = bound_pair()
    pair.esme.unbind(now=T0)
    pair.esme.unbind(now=T0)  # a second call does nothing
    assert [p.command for p in frames(pair.esme.data_to_send())] == [Command.UNBIND]
    assert pair.esme.state is State.UNBINDING
    with pytest.raises(LocalProtocolError):
        pair.submit("late")
    pair.smsc.receive_data(encode(Pdu(Command.UNBIND, 2)), T0)
    assert pair.smsc.state is State.CLOSED
    (resp,) = frames(pair.smsc.data_to_send())
    assert resp == Pdu(Command.UNBIND_RESP, 2)
    assert pair.esme.receive_data(encode(resp), T0) == [Unbound(in_doubt=(), by_peer=False)]
    assert pair.esme.closed


def test_unbind_leaves_unanswered_requests_in_doubt() -> None:
    pair = bound_pair()
    pair.submit("m1")
    _, (request,) = pair.pump()
    pair.esme.unbind(now=T0)
    esme_events, smsc_events = pair.pump()
    (ended,) = esme_events
    assert isinstance(ended, Unbound) and not ended.by_peer
    assert [(f.command, f.token) for f in ended.in_doubt] == [(Command.SUBMIT_SM, "m1")]
    assert smsc_events == [Unbound(in_doubt=(), by_peer=True)]
    assert isinstance(request, Request)
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.smsc.respond(request.pdu)


def test_crossed_unbinds_close_both_sides() -> None:
    pair = bound_pair()
    pair.esme.unbind(now=T0)
    pair.smsc.unbind(now=T0)
    esme_events, smsc_events = pair.pump()
    assert esme_events == smsc_events == [Unbound(in_doubt=(), by_peer=True)]
    assert pair.esme.state is pair.smsc.state is State.CLOSED


def test_unanswered_unbind_gives_up() -> None:
    pair = bound_pair()
    pair.esme.unbind(now=T0 + 1)
    assert pair.esme.on_timer(T0 + 31) == [LinkDead(in_doubt=(), reason="unbind")]


def test_end_of_file_and_close_report_requests_in_doubt() -> None:
    pair = bound_pair()
    pair.submit("m1")
    (lost,) = pair.esme.receive_data(b"", T0)
    assert isinstance(lost, ConnectionLost) and [f.token for f in lost.in_doubt] == ["m1"]
    other = bound_pair()
    other.submit("m2")
    assert [f.token for f in other.esme.close()] == ["m2"]
    assert other.esme.close() == ()


def test_a_closed_session_refuses_and_ignores() -> None:
    pair = bound_pair()
    pair.esme.close()
    assert pair.esme.receive_data(encode(Pdu(Command.ENQUIRE_LINK, 9)), T0) == []
    assert pair.esme.on_timer(T0 + 1000) == [] and pair.esme.next_deadline() is None
    assert not pair.esme.can_send_request()
    with pytest.raises(LocalProtocolError):
        pair.submit("x")
    with pytest.raises(LocalProtocolError):
        pair.esme.unbind(now=T0)
    with pytest.raises(LocalProtocolError):
        pair.esme.respond(Pdu(Command.DELIVER_SM, 9))
    assert pair.esme.data_to_send() == b""


# -- bad input from the peer --------------------------------------------------------------


def test_unknown_command_id_gets_generic_nack_and_the_session_goes_on() -> None:
    pair = bound_pair()
    (error,) = pair.esme.receive_data(raw(0x00000099, 77, b"junk"), T0)
    assert isinstance(error, PeerProtocolError)
    assert (error.status, error.sequence, error.pdu) == (Status.ESME_RINVCMDID, 77, None)
    assert frames(pair.esme.data_to_send()) == [
        Pdu(Command.GENERIC_NACK, 77, Status.ESME_RINVCMDID)
    ]
    pair.submit("after")
    _, (request,) = pair.pump()
    assert isinstance(request, Request)
    pair.smsc.respond(request.pdu, params={"message_id": "ok"})
    (response,), _ = pair.pump()
    assert isinstance(response, Response) and response.token == "after"


def _corrupt_deliver_sm() -> list[bytes]:
    body = encode(Pdu(Command.DELIVER_SM, 31, params=DELIVER))[16:]
    no_nul = body.replace(b"WARD7B\x00", b"WARD7B" + b"7" * 30)
    return [
        raw(Command.DELIVER_SM, 31, body[:20]),  # cut short
        raw(Command.DELIVER_SM, 31, no_nul),  # destination_addr without its NUL
        raw(Command.DELIVER_SM, 31, body + b"\x04\x24\x00"),  # a broken TLV
        raw(Command.OUTBIND, 31, b"no nul"),  # a request without a *_resp
    ]


@pytest.mark.parametrize("frame", _corrupt_deliver_sm())
def test_request_that_fails_to_decode_is_answered_with_the_decoders_status(frame: bytes) -> None:
    with pytest.raises(SmppDecodeError) as decoded:
        decode(frame)
    status = decoded.value.command_status
    assert status != Status.ESME_ROK
    pair = bound_pair("receiver")
    (error,) = pair.esme.receive_data(frame, T0)
    assert isinstance(error, PeerProtocolError) and (error.status, error.sequence) == (status, 31)
    command = decoded.value.command_id
    answer = Command.GENERIC_NACK if command == Command.OUTBIND else Command.DELIVER_SM_RESP
    assert frames(pair.esme.data_to_send()) == [Pdu(answer, 31, status)]
    assert pair.esme.state is State.BOUND_RX
    pair.smsc.send_request(Command.DELIVER_SM, DELIVER, now=T0)
    esme_events, _ = pair.pump()
    assert [type(e) for e in esme_events] == [Request]


def test_malformed_response_is_reported_not_answered() -> None:
    pair = bound_pair()
    sequence = pair.submit("m")
    pair.esme.data_to_send()
    frame = raw(Command.SUBMIT_SM_RESP, sequence, b"no nul")
    (error,) = pair.esme.receive_data(frame, T0)
    assert isinstance(error, PeerProtocolError)
    assert (error.status, error.sequence, error.pdu) == (None, sequence, None)
    assert pair.esme.data_to_send() == b""
    assert [f.token for f in pair.esme.in_flight] == ["m"]  # its timer decides


@pytest.mark.parametrize("length", [0, 15, MAX_PDU_SIZE + 1])
def test_bad_command_length_is_fatal(length: int) -> None:
    pair = bound_pair()
    pair.submit("m")
    ok = encode(Pdu(Command.ENQUIRE_LINK, 50))
    bad = struct.pack(">IIII", length, Command.SUBMIT_SM_RESP, 0, 2)
    events = pair.esme.receive_data(ok + bad + ok, T0)
    (violation,) = events
    assert isinstance(violation, ProtocolViolation)
    assert violation.status == Status.ESME_RINVCMDLEN
    assert [f.token for f in violation.in_doubt] == ["m"]
    assert pair.esme.state is State.CLOSED
    # The good frame ahead of the bad one was still answered.
    assert Pdu(Command.ENQUIRE_LINK_RESP, 50) in frames(pair.esme.data_to_send())
    assert pair.esme.receive_data(ok, T0) == []


def _scripted_stream() -> tuple[Session, bytes]:
    """A bound ESME with two submits out, and what the SMSC sends back for them."""
    pair = bound_pair()
    pair.submit("a")
    pair.submit("b")
    _, (first, second) = pair.pump()
    assert isinstance(first, Request) and isinstance(second, Request)
    pair.smsc.respond(second.pdu, params={"message_id": "2"})
    pair.smsc.send_request(Command.DELIVER_SM, DELIVER, {0x0424: b"x" * 300}, now=T0)
    pair.smsc.respond(first.pdu, Status.ESME_RTHROTTLED)
    stream = pair.smsc.data_to_send() + encode(Pdu(Command.ENQUIRE_LINK, 9))
    stream += raw(0x00000099, 10)
    return pair.esme, stream


def test_data_split_at_every_byte_boundary() -> None:
    template, stream = _scripted_stream()
    whole = copy.deepcopy(template)
    expected = whole.receive_data(stream, T0 + 1)
    expected_out = whole.data_to_send()
    assert [type(e) for e in expected] == [Response, Request, Response, PeerProtocolError]
    assert len(frames(expected_out)) == 2  # enquire_link_resp, generic_nack
    for cut in range(len(stream) + 1):
        session = copy.deepcopy(template)
        events = [
            event
            for part in (stream[:cut], stream[cut:])
            if part  # b"" would mean the peer hung up
            for event in session.receive_data(part, T0 + 1)
        ]
        assert (events, session.data_to_send()) == (expected, expected_out), cut
    session = copy.deepcopy(template)
    events = []
    for i in range(len(stream)):
        events += session.receive_data(stream[i : i + 1], T0 + 1)
    assert (events, session.data_to_send()) == (expected, expected_out)


# -- properties ---------------------------------------------------------------------------

STATUSES = st.sampled_from([Status.ESME_ROK, Status.ESME_RTHROTTLED, Status.ESME_RBINDFAIL])
SIZES = st.integers(1, 80) | st.just(10_000)  # a few octets, or everything in flight
# one_of picks a branch uniformly: the common operations are listed more than once.
OPS = st.one_of(
    st.tuples(st.just("bind"), st.sampled_from(BIND_MODES)),
    *[st.tuples(st.just("submit"), st.none())] * 3,
    *[st.tuples(st.just("deliver"), st.none())] * 2,
    *[st.tuples(st.just("smsc_answers"), STATUSES)] * 2,
    st.tuples(st.just("esme_answers"), STATUSES),
    *[st.tuples(st.just("carry_up"), SIZES)] * 3,
    *[st.tuples(st.just("carry_down"), SIZES)] * 3,
    *[st.tuples(st.just("wait"), st.floats(0, 45))] * 2,
    st.tuples(st.just("unbind"), st.sampled_from(["esme", "smsc"])),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=20)),
)


@dataclass
class Link:
    """Two sessions with bytes in flight between them, split wherever the test says."""

    esme: Session
    smsc: Session
    now: float = T0
    up: bytearray = field(default_factory=bytearray)
    down: bytearray = field(default_factory=bytearray)
    unanswered: dict[Role, list[Pdu]] = field(default_factory=lambda: {r: [] for r in Role})
    sent: dict[Role, set[object]] = field(default_factory=lambda: {r: set() for r in Role})
    settled: dict[Role, set[object]] = field(default_factory=lambda: {r: set() for r in Role})
    tokens: int = 0

    def session(self, role: Role) -> Session:
        return self.esme if role is Role.ESME else self.smsc

    def record(self, role: Role, events: list[Event]) -> None:
        for event in events:
            settled: list[object] = []
            if isinstance(event, Response | ResponseTimeout):
                settled = [event.token]
            elif isinstance(event, SessionEnded):
                settled = [f.token for f in event.in_doubt]
            elif isinstance(event, Request | BindRequest):
                self.unanswered[role].append(event.pdu)
            for token in settled:  # each request settles exactly once
                assert token in self.sent[role] and token not in self.settled[role]
                self.settled[role].add(token)

    def send(self, role: Role, command: Command, params: dict[str, Value]) -> None:
        self.tokens += 1
        self.session(role).send_request(command, params, token=self.tokens, now=self.now)
        self.sent[role].add(self.tokens)

    def answer(self, role: Role, status: int) -> None:
        if not self.unanswered[role]:
            return
        request = self.unanswered[role].pop(0)
        if request.command is Command.ALERT_NOTIFICATION:
            return
        key = "system_id" if request.command in BIND_COMMANDS else "message_id"
        params: dict[str, Value] | None = {key: "id"} if status == Status.ESME_ROK else None
        self.session(role).respond(request, status, params)

    def carry(self, to: Role, size: int) -> None:
        wire = self.up if to is Role.SMSC else self.down
        chunk = bytes(wire[:size])
        del wire[:size]
        if chunk:
            self.record(to, self.session(to).receive_data(chunk, self.now))

    def step(self, op: str, arg: object) -> None:
        if op == "bind":
            mode = next(m for m in BIND_MODES if m == arg)
            self.esme.bind(mode, "gateway", "pw", now=self.now)
        elif op == "submit":
            self.send(Role.ESME, Command.SUBMIT_SM, SUBMIT)
        elif op == "deliver":
            self.send(Role.SMSC, Command.DELIVER_SM, DELIVER)
        elif op in ("smsc_answers", "esme_answers") and isinstance(arg, int):
            self.answer(Role.SMSC if op == "smsc_answers" else Role.ESME, arg)
        elif op in ("carry_up", "carry_down") and isinstance(arg, int):
            self.carry(Role.SMSC if op == "carry_up" else Role.ESME, arg)
        elif op == "wait" and isinstance(arg, float):
            self.now += arg
            self.record(Role.ESME, self.esme.on_timer(self.now))
            self.record(Role.SMSC, self.smsc.on_timer(self.now))
        elif op == "unbind":
            self.session(Role(arg)).unbind(now=self.now)
        elif op == "garbage" and isinstance(arg, bytes):
            self.down += arg
        else:
            raise AssertionError(op)

    def snapshot(self) -> list[tuple[State, tuple[InFlight, ...], float | None]]:
        return [(s.state, s.in_flight, s.next_deadline()) for s in (self.esme, self.smsc)]

    def check(self) -> None:
        up, down = self.esme.data_to_send(), self.smsc.data_to_send()
        for pdu in frames(up) + frames(down):  # what a session sends always decodes
            assert pdu.command.is_response or 1 <= pdu.sequence <= MAX_SEQUENCE
        self.up += up
        self.down += down
        for role in Role:
            session = self.session(role)
            assert 0 <= session.outstanding <= session.config.window
            assert session.window_free == session.config.window - session.outstanding
            in_flight = session.in_flight
            assert len(in_flight) == session.outstanding
            assert all(1 <= f.sequence <= MAX_SEQUENCE for f in in_flight)
            waiting = {f.token for f in in_flight}
            assert waiting.isdisjoint(self.settled[role])
            assert waiting | self.settled[role] == self.sent[role]
            if session.state is State.CLOSED:
                assert session.outstanding == 0 and session.next_deadline() is None


BIND_COMMANDS = (Command.BIND_TRANSMITTER, Command.BIND_RECEIVER, Command.BIND_TRANSCEIVER)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(OPS, max_size=80),
    first_sequence=st.sampled_from([1, MAX_SEQUENCE - 1]),
    window=st.integers(1, 4),
    start=st.sampled_from([None, *BIND_MODES]),
)
def test_random_interleavings_keep_the_invariants(
    ops: list[tuple[str, object]], first_sequence: int, window: int, start: BindMode | None
) -> None:
    config = SessionConfig(window=window)
    if start is None:  # from the TCP connect, or already bound in `start` mode
        pair = Pair(config, config, first_sequence)
    else:
        pair = bound_pair(start, config, config, first_sequence)
    link = Link(pair.esme, pair.smsc)
    for op, arg in ops:
        before = link.snapshot()
        try:
            link.step(op, arg)
        except LocalProtocolError:  # we asked for what is not allowed now: nothing changed
            assert link.snapshot() == before
            assert link.esme.data_to_send() == link.smsc.data_to_send() == b""
        link.check()
    for role in Role:  # whatever is left settles as in doubt
        in_doubt = link.session(role).close()
        link.record(role, [SessionEnded(in_doubt=in_doubt)])
        assert link.settled[role] == link.sent[role]


FRAMES = st.builds(
    raw,
    st.sampled_from([*Command, 0x00000099, 0x80000099]),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=60),
    st.sampled_from([0, 0x58]),
)


@given(
    chunks=st.lists(st.one_of(FRAMES, st.binary(max_size=40)), max_size=12),
    mode=st.sampled_from(["transmitter", "receiver", "transceiver", None]),
    role=st.sampled_from(Role),
)
@settings(deadline=None)
def test_any_input_yields_events_only(
    chunks: list[bytes], mode: BindMode | None, role: Role
) -> None:
    if mode is None:
        session = Session(role, now=T0)
    else:
        pair = bound_pair(mode)
        session = pair.esme if role is Role.ESME else pair.smsc
    for chunk in chunks:
        events = session.receive_data(chunk, T0 + 1)
        assert all(isinstance(e, Event) for e in events)
        frames(session.data_to_send())  # whatever it sends decodes
        assert 0 <= session.outstanding <= session.config.window
    session.on_timer(T0 + 1000)
    assert session.state is State.CLOSED


# -- a group of requests in one call -------------------------------------------------------


def test_send_requests_writes_what_send_request_would() -> None:
    one, group = bound_pair(), bound_pair()
    params = [{**SUBMIT, "destination_addr": f"1202555{i:04d}"} for i in range(3)]
    for i, p in enumerate(params):
        one.esme.send_request(Command.SUBMIT_SM, p, token=i, now=T0)
    assert group.esme.send_requests(
        Command.SUBMIT_SM, [(p, None, i) for i, p in enumerate(params)], now=T0
    ) == [None, None, None]
    assert group.esme.data_to_send() == one.esme.data_to_send()
    assert group.esme.in_flight == one.esme.in_flight
    assert group.esme.next_deadline() == one.esme.next_deadline()
    assert group.submit("next") == one.submit("next") == 5


def test_send_requests_refuses_what_the_window_cannot_take_whole() -> None:
    pair = bound_pair(config=SessionConfig(window=2))
    with pytest.raises(LocalProtocolError, match="window"):
        pair.esme.send_requests(Command.SUBMIT_SM, [(SUBMIT, None, t) for t in "abc"], now=T0)
    assert pair.esme.outstanding == 0 and pair.esme.data_to_send() == b""
    unbound = Pair()
    with pytest.raises(LocalProtocolError):
        unbound.esme.send_requests(Command.SUBMIT_SM, [(SUBMIT, None, "a")], now=T0)
    with pytest.raises(LocalProtocolError):
        pair.esme.send_requests(Command.ENQUIRE_LINK, [({}, None, "a")], now=T0)


def test_send_requests_skips_only_a_value_that_does_not_fit() -> None:
    pair = bound_pair()
    bad = {**SUBMIT, "destination_addr": "1" * 30}
    outcomes = pair.esme.send_requests(
        Command.SUBMIT_SM, [(SUBMIT, None, "a"), (bad, None, "b"), (SUBMIT, None, "c")], now=T0
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], LocalProtocolError)
    assert outcomes[1].code == "smpp:0x0000000b"
    assert [p.sequence for p in frames(pair.esme.data_to_send())] == [2, 3]
    assert [f.token for f in pair.esme.in_flight] == ["a", "c"]
