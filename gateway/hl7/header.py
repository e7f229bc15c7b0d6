"""The MSH segment alone, read before anything else (research §H.4): who sent the
message, what it is, how it wants to be acknowledged. The check here answers AR (CR
in enhanced mode) for what the sender must fix in MSH-9, MSH-11 or MSH-12."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from gateway.clinical import commands as c

SUPPORTED_VERSIONS = frozenset(
    {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"}
    | {"2.8.1", "2.8.2"}
)


@dataclass(frozen=True, slots=True)
class Header:
    """MSH fields as raw text (components kept), the ones routing needs split out."""

    field_sep: str
    encoding: str
    sending_app: str  # MSH-3
    sending_facility: str  # MSH-4
    receiving_app: str  # MSH-5
    receiving_facility: str  # MSH-6
    message_time: str  # MSH-7
    message_type: str  # MSH-9.1
    event: str  # MSH-9.2
    control_id: str  # MSH-10
    processing_id: str  # MSH-11 (raw)
    version: str  # MSH-12 (raw)
    accept_ack: str  # MSH-15
    app_ack: str  # MSH-16

    @property
    def version_id(self) -> str:
        return self.version.split(self.encoding[:1] or "^")[0]

    @property
    def processing(self) -> str:
        return self.processing_id.split(self.encoding[:1] or "^")[0]

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgment mode: MSH-15 or MSH-16 valued (research §A4)."""
        return bool(self.accept_ack or self.app_ack)


EMPTY = Header("|", "^~\\&", "", "", "", "", "", "", "", "", "", "", "", "")


class Rejected(Exception):
    """A header the interface refuses: AR (original) / CR (enhanced) with `code`."""

    def __init__(self, code: int, text: str, location: str) -> None:
        super().__init__(text)
        self.code, self.text, self.location = code, text, location


def parse(text: str) -> Header:
    """The MSH of `text`; `Rejected` if the message does not open with one."""
    seg = text.split("\r", 1)[0].split("\n", 1)[0]
    if not seg.startswith("MSH") or len(seg) < 8:
        raise Rejected(c.ERR_SEGMENT_SEQUENCE, "the message does not start with MSH", "MSH")
    fs = seg[3]
    f = seg.split(fs)
    f = ["MSH", fs, *f[1:]]  # MSH-1 is the separator itself: f[n] is MSH-n
    f += [""] * (19 - len(f))
    comp = f[2][:1] or "^"
    msg_type = f[9].split(comp)
    return Header(
        fs,
        f[2],
        f[3],
        f[4],
        f[5],
        f[6],
        f[7],
        msg_type[0],
        msg_type[1] if len(msg_type) > 1 else "",
        f[10],
        f[11],
        f[12],
        f[15],
        f[16],
    )


def check(h: Header, *, known_types: Collection[str], processing_ids: Collection[str]) -> None:
    """Raise `Rejected` for a header this interface does not take."""
    if not h.control_id:
        raise Rejected(c.ERR_REQUIRED_FIELD_MISSING, "MSH-10 (control id) is empty", "MSH-10")
    if h.version_id not in SUPPORTED_VERSIONS:
        raise Rejected(c.ERR_UNSUPPORTED_VERSION_ID, "unsupported version", "MSH-12")
    if h.processing not in processing_ids:
        raise Rejected(
            c.ERR_UNSUPPORTED_PROCESSING_ID,
            "this interface does not take this processing id",
            "MSH-11",
        )
    if h.message_type not in known_types:
        raise Rejected(c.ERR_UNSUPPORTED_MESSAGE_TYPE, "unsupported message type", "MSH-9")
