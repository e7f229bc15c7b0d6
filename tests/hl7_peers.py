"""python-hl7's MLLP server as the EHR the gateway writes back to: an independent
implementation of the receiving side (utf-8, not its ASCII default)."""

from __future__ import annotations

import asyncio

import hl7.mllp


class Ehr:
    """Answers each message with the next code in `script` (None: no answer at all;
    AA once the script is spent), and sets `changed` after each message."""

    def __init__(
        self, script: list[str | None] | None = None, changed: asyncio.Event | None = None
    ) -> None:
        self.script = script if script is not None else []
        self.changed = changed
        self.received: list[str] = []
        self.server: asyncio.Server | None = None
        self.writers: list[hl7.mllp.HL7StreamWriter] = []

    async def handle(
        self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter
    ) -> None:
        self.writers.append(writer)
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.received.append(str(message))
                code = self.script.pop(0) if self.script else "AA"
                if code is not None:
                    writer.writemessage(message.create_ack(code))
                    await writer.drain()
                if self.changed is not None:
                    self.changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def start(self) -> int:
        self.server = await hl7.mllp.start_hl7_server(self.handle, "127.0.0.1", 0, encoding="utf-8")
        return int(self.server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()
