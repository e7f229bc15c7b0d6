"""A network namespace for one `smsgw run` node, with two links to this host (S7).

`db` link: the only way from the namespace to PostgreSQL (through a `Forward` bound to
the host's end, since the suite's server listens on 127.0.0.1 only). `net` link: the
SMSC and the node's HTTP API. `cut_db()` sets the host end of the db link down — a real
link failure: the node's packets to PostgreSQL go nowhere, its sockets see no reset —
while the carrier and the API stay reachable, so the test sees what the node does while
it cannot reach the database. Needs root and `ip netns`; `unavailable()` says why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Callable

SUBMIT_SM = 0x00000004


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def unavailable() -> str | None:
    """Why a namespace cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"smsgw-probe-{os.getpid()}"
    done = _ip("netns", "add", probe)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class Namespace:
    def __init__(self) -> None:
        n = random.randrange(1, 250)  # a subnet, not a secret
        self.name = f"smsgw-{os.getpid()}-{n}"
        self.db_host, self.db_node = f"10.231.{n}.1", f"10.231.{n}.2"
        self.net_host, self.net_node = f"10.232.{n}.1", f"10.232.{n}.2"
        self._links = [(f"sgd{n}h", f"sgd{n}n", self.db_host, self.db_node),
                       (f"sgn{n}h", f"sgn{n}n", self.net_host, self.net_node)]  # fmt: skip

    def exec_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def create(self) -> None:
        steps = [("netns", "add", self.name),
                 ("-n", self.name, "link", "set", "lo", "up")]  # fmt: skip
        for host, node, host_ip, node_ip in self._links:
            steps += [
                ("link", "add", host, "type", "veth", "peer", "name", node),
                ("link", "set", node, "netns", self.name),
                ("addr", "add", f"{host_ip}/30", "dev", host),
                ("-n", self.name, "addr", "add", f"{node_ip}/30", "dev", node),
                ("link", "set", host, "up"),
                ("-n", self.name, "link", "set", node, "up"),
            ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                self.delete()
                raise RuntimeError(f"ip {' '.join(step)}: {done.stderr.strip()}")

    def cut_db(self) -> None:
        done = _ip("link", "set", self._links[0][0], "down")
        assert done.returncode == 0, done.stderr

    def heal_db(self) -> None:
        done = _ip("link", "set", self._links[0][0], "up")
        assert done.returncode == 0, done.stderr

    def delete(self) -> None:
        _ip("netns", "del", self.name)  # takes the veth ends inside it, and so the pairs
        for host, *_ in self._links:
            _ip("link", "del", host)


class Forward:
    """TCP from `host`:port (a link's host end) to 127.0.0.1:`target`. `submits` holds
    the monotonic time of every submit_sm PDU a client sent through it."""

    def __init__(self, host: str, target: int) -> None:
        self.host, self._target = host, target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.submits: list[float] = []
        self._grew = asyncio.Condition()
        self.port = 0

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, looked at after each submit_sm seen."""
        async with self._grew:
            await self._grew.wait_for(predicate)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, count=True), self._pipe(up_reader, writer)
            )
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool = False
    ) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if count:
                    seen = len(self.submits)
                    pending = self._count(pending + data)
                    if len(self.submits) > seen:
                        async with self._grew:
                            self._grew.notify_all()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def _count(self, buffer: bytes) -> bytes:
        """Note each whole SMPP PDU that is a submit_sm; the rest waits for more bytes."""
        while len(buffer) >= 8:
            length, command = struct.unpack(">II", buffer[:8])
            if len(buffer) < length or length < 16:
                break
            if command == SUBMIT_SM:
                self.submits.append(time.monotonic())
            buffer = buffer[length:]
        return buffer
