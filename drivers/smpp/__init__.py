"""SMPP 3.4 for an ESME: the PDU codec (`pdu`), the command_status table (`status`) and
the sans-I/O session (`session`; its events are imported from there)."""

from drivers.smpp.pdu import (
    MAX_PDU_SIZE,
    Command,
    Pdu,
    PduReader,
    SmppCodecError,
    SmppDecodeError,
    SmppEncodeError,
    SmppFramingError,
    Tag,
    decode,
    encode,
)
from drivers.smpp.session import LocalProtocolError, Role, Session, SessionConfig, State
from drivers.smpp.status import DEFAULT_CLASSES, Status, StatusClass, classify

__all__ = [
    "DEFAULT_CLASSES",
    "MAX_PDU_SIZE",
    "Command",
    "LocalProtocolError",
    "Pdu",
    "PduReader",
    "Role",
    "Session",
    "SessionConfig",
    "SmppCodecError",
    "SmppDecodeError",
    "SmppEncodeError",
    "SmppFramingError",
    "State",
    "Status",
    "StatusClass",
    "Tag",
    "classify",
    "decode",
    "encode",
]
