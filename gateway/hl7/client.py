"""An MLLP client: one connection, one message out, its ACK back (research §A5).

Used by the outbound lane (write-back to an EHR) and by `smsgw hl7 send`. The ACK is
read with our own decoder, so a slow or split answer is read whole; `AckTimeout` if
none comes in time, `MllpClosed` if the peer hangs up first, `NotConnected` (nothing
was sent) if no connection could be opened. The connection is kept for the next
message and reopened after any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from gateway.hl7 import charset, framing


class MllpError(Exception):
    pass


class AckTimeout(MllpError):
    pass


class MllpClosed(MllpError):
    pass


class NotConnected(MllpClosed):
    """No connection: the message never left (a resend cannot be a duplicate)."""


@dataclass(frozen=True, slots=True)
class Ack:
    text: str
    code: str  # MSA-1 ("" if the answer has no MSA)
    control_id: str  # MSA-2

    @classmethod
    def parse(cls, text: str) -> Ack:
        for seg in text.replace("\n", "\r").split("\r"):
            if seg.startswith("MSA") and len(seg) > 3:
                f = seg.split(seg[3])
                return cls(text, f[1] if len(f) > 1 else "", f[2] if len(f) > 2 else "")
        return cls(text, "", "")


class MllpClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        encoding: str = "utf-8",
    ) -> None:
        self.host, self.port, self.context = host, port, context
        self.timeout = timeout
        self.encoding = encoding
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = framing.MllpDecoder()

    async def _connect(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            return
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.context), self.timeout
        )
        self._decoder = framing.MllpDecoder()

    async def send(self, message: str) -> Ack:
        """Send one message (segments separated by CR) and return its ACK."""
        try:
            await self._connect()
        except (OSError, TimeoutError) as e:
            await self.aclose()
            raise NotConnected(f"connection failed: {type(e).__name__}") from None
        try:
            assert self._writer is not None and self._reader is not None
            self._writer.write(framing.encode(message.encode(self.encoding)))
            await self._writer.drain()
            return Ack.parse(await asyncio.wait_for(self._read_frame(), self.timeout))
        except TimeoutError:
            await self.aclose()
            raise AckTimeout("no acknowledgment in time") from None
        except (OSError, MllpError) as e:
            await self.aclose()
            if isinstance(e, MllpError):
                raise
            raise MllpClosed(f"connection failed: {type(e).__name__}") from None

    async def _read_frame(self) -> str:
        assert self._reader is not None
        while True:
            event = self._decoder.next_event()
            if isinstance(event, framing.Frame):
                return charset.decode(event.payload, self.encoding).text
            if isinstance(event, framing.Fault):
                raise MllpClosed(f"framing fault: {event.reason}")
            if event is not None:
                continue
            data = await self._reader.read(65536)
            if not data:
                raise MllpClosed("the peer closed the connection")
            self._decoder.receive_data(data)

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
