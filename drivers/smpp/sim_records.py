"""The SMSC simulator's settings and records (`simulator.py`): what it is configured
with, and what it keeps of each submit for a test to read."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from drivers.smpp.encoding import Concat
from drivers.smpp.pdu import Command, Value
from drivers.smpp.session import SessionConfig


def _smsc_session() -> SessionConfig:
    return SessionConfig(enquire_link_interval=None)  # SMSCs rarely probe; the ESME does


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated SMSC listens, whom it lets bind and what it answers. Delays
    are seconds on the simulator's injected clock."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port, then read `SmscSimulator.port`
    # The one credential pair a bind must present: another system_id is refused with
    # ESME_RINVSYSID, another password with ESME_RINVPASWD.
    system_id: str = "smsgw"
    password: str = "secret"  # noqa: S105 - the simulator's documented demo credential
    receipt_delay: float = 1.0  # from a submit_sm to its receipt
    # Fractions of receipts that say UNDELIV and EXPIRED (the rest DELIVRD), drawn from
    # a generator seeded with `seed` (None: unpredictable).
    undeliverable: float = 0.0
    expired: float = 0.0
    seed: int | None = None
    hex_ids: bool = False  # message ids in hex (receipts carry the same id text) ...
    receipt_ids_decimal: bool = False  # ... except in receipt texts: a carrier quirk
    redelivery_delay: float = 5.0  # before a deliver_sm refused or unanswered goes again
    # Sends of one deliver_sm before it is given up (None: until the ESME takes it), as
    # a real SMSC gives up at the end of the message's validity period.
    max_delivery_attempts: int | None = None
    shutdown_grace: float = 2.0  # how long `aclose` waits for unbind_resp
    session: SessionConfig = field(default_factory=_smsc_session)  # no enquire_link
    tls: ssl.SSLContext | None = None  # a server context: listen with TLS
    max_sessions: int | None = None  # bound sessions at once; a bind beyond: ESME_RALYBND
    lost_session_hold: float = 0.0  # seconds a session lost without unbind still counts

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError("port must be in 0..65535")
        for name in ("receipt_delay", "redelivery_delay", "shutdown_grace", "lost_session_hold"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_delivery_attempts is not None and self.max_delivery_attempts < 1:
            raise ValueError("max_delivery_attempts must be at least 1")
        fractions = (self.undeliverable, self.expired)
        if not all(0 <= f <= 1 for f in fractions) or sum(fractions) > 1:
            raise ValueError("undeliverable and expired must be fractions adding up to <= 1")


@dataclass(frozen=True)
class SubmittedMessage:
    """One submit_sm or data_sm the simulator accepted. `short_message` is the field as
    sent (b"" for data_sm); `text` and `concat` decode it, or message_payload when it is
    empty. Addresses and bodies stay out of the repr."""

    command: Command
    system_id: str
    message_id: str
    source: str = field(repr=False)
    destination: str = field(repr=False)
    data_coding: int
    esm_class: int
    registered_delivery: int
    short_message: bytes = field(repr=False)
    tlvs: Mapping[int, Value] = field(repr=False)
    text: str = field(repr=False)
    concat: Concat | None


@dataclass(frozen=True, slots=True)
class SubmitRecord:
    """One submit as it arrived: loop time, status answered, connection number and the
    system_type its bind gave."""

    at: float
    status: int
    connection: int
    system_type: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A bound session began (`bound`) or ended (`unbound` by either side, `lost`
    without an unbind): loop time, connection number and the bind's system_type."""

    at: float
    event: str
    connection: int
    system_type: str
