"""The SMPP 3.4 session's rules: roles, states, and the two tables that govern them.

`MAY_SEND[state][role]` lists the requests a role may send on a session in that state;
`TRANSITIONS` gives the state after a PDU passes in either direction. `Session`
(`session.py`) applies them and holds no other rule of state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Literal

from drivers.smpp.pdu import Command

BindMode = Literal["transmitter", "receiver", "transceiver"]


class Role(enum.Enum):
    ESME = "esme"
    SMSC = "smsc"


class State(enum.Enum):
    OPEN = "open"  # connected, not bound
    BINDING = "binding"  # a bind is on its way and not answered yet
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"  # an unbind is on its way and not answered yet
    CLOSED = "closed"


C = Command
BIND_COMMANDS: Mapping[BindMode, Command] = {
    "transmitter": C.BIND_TRANSMITTER,
    "receiver": C.BIND_RECEIVER,
    "transceiver": C.BIND_TRANSCEIVER,
}
BIND_MODES: Mapping[Command, BindMode] = {cmd: mode for mode, cmd in BIND_COMMANDS.items()}
BINDS = frozenset(BIND_COMMANDS.values())
CONTROL = BINDS | {C.UNBIND, C.ENQUIRE_LINK}  # sent by the session's own methods
NO_ANSWER = frozenset({C.OUTBIND, C.ALERT_NOTIFICATION})  # requests without a *_resp
BOUND = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})

_LINK = frozenset({C.ENQUIRE_LINK})
_BOUND_CONTROL = frozenset({C.ENQUIRE_LINK, C.UNBIND})
_TO_SMSC = frozenset({C.SUBMIT_SM, C.DATA_SM, C.QUERY_SM}) | _BOUND_CONTROL
_TO_ESME = frozenset({C.DELIVER_SM, C.DATA_SM, C.ALERT_NOTIFICATION}) | _BOUND_CONTROL
E, S = Role.ESME, Role.SMSC

# The requests each role may send on a session in each state (SMPP 3.4 §2.3, §4).
# enquire_link is accepted before the bind completes too: the spec allows it in any
# state, and some SMSCs probe as soon as the TCP connection is up. In UNBINDING only
# the peer's own unbind (the two crossed) and probes still pass.
MAY_SEND: Mapping[State, Mapping[Role, frozenset[Command]]] = {
    State.OPEN: {E: BINDS | _LINK, S: _LINK | {C.OUTBIND}},
    State.BINDING: {E: _LINK, S: _LINK},
    State.BOUND_TX: {E: _TO_SMSC, S: _BOUND_CONTROL},
    State.BOUND_RX: {E: _BOUND_CONTROL, S: _TO_ESME},
    State.BOUND_TRX: {E: _TO_SMSC, S: _TO_ESME},
    State.UNBINDING: {E: _BOUND_CONTROL, S: _BOUND_CONTROL},
    State.CLOSED: {E: frozenset(), S: frozenset()},
}

# (state, command passing in either direction, its status is ESME_ROK) -> next state.
# A generic_nack that answers a bind or unbind counts as that bind_resp or unbind_resp.
TRANSITIONS: Mapping[tuple[State, Command, bool], State] = {
    (State.OPEN, C.BIND_TRANSMITTER, True): State.BINDING,
    (State.OPEN, C.BIND_RECEIVER, True): State.BINDING,
    (State.OPEN, C.BIND_TRANSCEIVER, True): State.BINDING,
    (State.BINDING, C.BIND_TRANSMITTER_RESP, True): State.BOUND_TX,
    (State.BINDING, C.BIND_RECEIVER_RESP, True): State.BOUND_RX,
    (State.BINDING, C.BIND_TRANSCEIVER_RESP, True): State.BOUND_TRX,
    (State.BINDING, C.BIND_TRANSMITTER_RESP, False): State.OPEN,
    (State.BINDING, C.BIND_RECEIVER_RESP, False): State.OPEN,
    (State.BINDING, C.BIND_TRANSCEIVER_RESP, False): State.OPEN,
    (State.BOUND_TX, C.UNBIND, True): State.UNBINDING,
    (State.BOUND_RX, C.UNBIND, True): State.UNBINDING,
    (State.BOUND_TRX, C.UNBIND, True): State.UNBINDING,
    (State.UNBINDING, C.UNBIND, True): State.UNBINDING,
    (State.UNBINDING, C.UNBIND_RESP, True): State.CLOSED,
    (State.UNBINDING, C.UNBIND_RESP, False): State.CLOSED,
}
del C, E, S  # short names for the tables above only
