"""SMPP 3.4 for an ESME: the PDU codec (`pdu`) and the command_status table (`status`)."""

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
from drivers.smpp.status import DEFAULT_CLASSES, Status, StatusClass, classify

__all__ = [
    "DEFAULT_CLASSES",
    "MAX_PDU_SIZE",
    "Command",
    "Pdu",
    "PduReader",
    "SmppCodecError",
    "SmppDecodeError",
    "SmppEncodeError",
    "SmppFramingError",
    "Status",
    "StatusClass",
    "Tag",
    "classify",
    "decode",
    "encode",
]
