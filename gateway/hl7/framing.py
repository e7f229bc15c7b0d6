"""MLLP framing with no I/O: bytes in, frames and faults out (research §A5, §H.2).

Theory of operation. A block is `<SB 0x0B> payload <EB 0x1C><CR 0x0D>`. The decoder
is fed whatever the socket gave (`receive_data`) and yields events (`next_event`):
`Frame(payload)` for each complete block in arrival order, `Commit(ack)` for an MLLP
Release 2 commit block (`<SB><ACK 0x06><EB><CR>` or NAK 0x15) when the interface
speaks R2, `Skipped(n)` for bytes outside any block (garbage before SB or between
blocks; logged by the caller, never answered), and `Fault(reason)` for what ends
the connection: a block over `max_size`, or (strict) an EB not followed by CR. After
a fault the decoder yields nothing more. `end_of_stream()` reports a block cut off by
EOF. `lenient` accepts an EB with no CR after it as the end of the block.

Where the bytes split makes no difference: a scan keeps its position, so feeding one
byte at a time costs what one write does.
"""

from __future__ import annotations

from dataclasses import dataclass

SB = 0x0B
EB = 0x1C
CR = 0x0D
ACK_BYTE = 0x06
NAK_BYTE = 0x15
DEFAULT_MAX_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """An MLLP R2 commit block: `accepted` for ACK (0x06), False for NAK (0x15)."""

    accepted: bool


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes outside any block, dropped."""

    count: int


@dataclass(frozen=True, slots=True)
class Fault:
    """The peer broke the framing; the connection must close."""

    reason: str  # "oversize", "eb_without_cr", "eof_mid_frame"


Event = Frame | Commit | Skipped | Fault


def encode(payload: bytes) -> bytes:
    return bytes((SB,)) + payload + bytes((EB, CR))


def commit_block(accepted: bool) -> bytes:
    return encode(bytes((ACK_BYTE if accepted else NAK_BYTE,)))


class MllpDecoder:
    def __init__(
        self, *, max_size: int = DEFAULT_MAX_SIZE, lenient: bool = False, r2: bool = False
    ) -> None:
        self.max_size = max_size
        self.lenient = lenient
        self.r2 = r2
        self._buf = bytearray()
        self._in_block = False
        self._scanned = 0  # bytes of the open block already searched for EB
        self._events: list[Event] = []
        self._failed = False
        self._eat_cr = False  # lenient: a block ended at a lone EB; its CR may follow

    @property
    def failed(self) -> bool:
        return self._failed

    def receive_data(self, data: bytes) -> None:
        if self._failed:
            return
        self._buf += data
        self._parse()

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def end_of_stream(self) -> Fault | None:
        """EOF: a fault if a block was open (its bytes are dropped)."""
        if self._failed:
            return None
        if self._in_block:
            self._fail("eof_mid_frame")
            return Fault("eof_mid_frame")
        return None

    def _fail(self, reason: str) -> None:
        self._failed = True
        self._buf.clear()
        self._events.append(Fault(reason))

    def _parse(self) -> None:
        buf = self._buf
        while buf and not self._failed:
            if self._eat_cr:
                self._eat_cr = False
                if buf[0] == CR:
                    del buf[:1]
                    continue
            if not self._in_block:
                start = buf.find(SB)
                if start < 0:
                    self._events.append(Skipped(len(buf)))
                    buf.clear()
                    return
                if start:
                    self._events.append(Skipped(start))
                    del buf[:start]
                del buf[:1]
                self._in_block, self._scanned = True, 0
                continue
            end = buf.find(EB, self._scanned)
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_size:
                    self._fail("oversize")
                return
            if end > self.max_size:
                self._fail("oversize")
                return
            consumed = end + 2
            if end + 1 >= len(buf):
                if not self.lenient:
                    self._scanned = end  # wait for the byte after EB
                    return
                consumed, self._eat_cr = end + 1, True
            elif buf[end + 1] != CR:
                if not self.lenient:
                    self._fail("eb_without_cr")
                    return
                consumed = end + 1
            payload = bytes(buf[:end])
            del buf[:consumed]
            self._in_block, self._scanned = False, 0
            if self.r2 and len(payload) == 1 and payload[0] in (ACK_BYTE, NAK_BYTE):
                self._events.append(Commit(payload[0] == ACK_BYTE))
            else:
                self._events.append(Frame(payload))
