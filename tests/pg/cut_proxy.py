"""A TCP proxy on loopback that a test can cut: a node's network partition, in-process.

`cut()` closes every open connection and then holds new ones without forwarding a
byte (as a silent network does: the client's connect hangs rather than being
refused); `down()` closes them all and every new one at once, counting them (a stopped
PostgreSQL on a live host: each attempt fails fast); `heal()` forwards again. `tc
netem` and nftables are not available here, so this stands in for a link going down
between one node and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib


class CutProxy:
    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._refusing = False
        self.refused = 0  # connections closed at once while `down`
        self._knocked = asyncio.Event()  # set at each of them
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._open.clear()
        self._close_all()

    def down(self) -> None:
        self._refusing = True
        self.cut()

    def heal(self) -> None:
        self._refusing = False
        self._open.set()

    async def refused_at_least(self, count: int) -> None:
        """Until `count` connections were refused while `down`."""
        while self.refused < count:
            self._knocked.clear()
            await self._knocked.wait()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            self._knocked.set()
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._open.wait()  # a cut link: the client's bytes go nowhere
            if writer.is_closing():
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
