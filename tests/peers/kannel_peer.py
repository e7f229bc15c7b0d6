"""Debian's real Kannel (bearerbox + smsbox) as a test peer for the sendsms listener.

`KannelPeer.start(workdir)` writes a minimal configuration (one sendsms user, one
`fake` SMSC), starts bearerbox, connects to the fake SMSC as its client (so the SMSC is
online and Kannel answers "0: Accepted for delivery", not "3: Queued ..."), starts
smsbox, and returns once each has said in its own log output that it is ready: no
sleeps, only lines waited for with a timeout. Ports are free loopback ports picked just
before start (Kannel takes no port 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_port

USERNAME, PASSWORD = "kannel-user", "kannel-pw"
START_TIMEOUT = 30.0

_CONF = """\
group = core
admin-port = {admin}
admin-password = admin-pw
admin-allow-ip = "127.0.0.1"
smsbox-port = {boxc}
box-allow-ip = "127.0.0.1"
dlr-storage = internal

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {boxc}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1

group = sendsms-user
username = {username}
password = {password}
default-sender = 12025550000

group = smsc
smsc = fake
smsc-id = main
port = {fake}
connect-allow-ip = 127.0.0.1
"""


def binaries() -> tuple[str, str] | None:
    found = []
    for name in ("bearerbox", "smsbox"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def ensure_installed() -> tuple[str, str] | None:
    """The binaries, installing Debian's `kannel` when missing and allowed (root)."""
    if (found := binaries()) is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "kannel"]):
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            return None
    return binaries()


@dataclass
class _Box:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))
            self.changed.set()
        self.changed.set()

    async def wait_for(self, text: str, start: int = 0) -> None:
        async with asyncio.timeout(START_TIMEOUT):
            while not any(text in line for line in self.lines[start:]):
                if self.process.returncode is not None:
                    raise RuntimeError(f"Kannel box exited: {''.join(self.lines[-20:])}")
                self.changed.clear()
                await self.changed.wait()


@dataclass
class KannelPeer:
    sendsms_port: int
    boxes: list[_Box]
    fake_client: asyncio.StreamWriter
    drain: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}"

    @classmethod
    async def start(cls, workdir: Path, bearerbox: str, smsbox: str) -> KannelPeer:
        ports = {n: free_port() for n in ("admin", "boxc", "sendsms", "fake")}
        conf = workdir / "kannel.conf"
        conf.write_text(_CONF.format(username=USERNAME, password=PASSWORD, **ports))
        boxes: list[_Box] = []
        try:
            bb = await cls._spawn(bearerbox, conf, boxes)
            await bb.wait_for("MAIN: Start-up done")
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["fake"])
            drain = asyncio.create_task(_discard(reader))  # messages the fake SMSC "sends"
            await bb.wait_for("Fakesmsc client connected")
            mark = len(bb.lines)
            sb = await cls._spawn(smsbox, conf, boxes)
            await sb.wait_for("Set up send sms service")
            await bb.wait_for("Client connected from", mark)
        except BaseException:
            await _stop(boxes)
            raise
        return cls(ports["sendsms"], boxes, writer, drain)

    @staticmethod
    async def _spawn(binary: str, conf: Path, boxes: list[_Box]) -> _Box:
        process = await asyncio.create_subprocess_exec(
            binary,
            "-v",
            "1",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        box = _Box(process)
        box.reader = asyncio.create_task(box.pump())
        boxes.append(box)
        return box

    async def stop(self) -> None:
        self.fake_client.close()
        self.drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.drain
        await _stop(self.boxes)


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _stop(boxes: list[_Box]) -> None:
    for box in reversed(boxes):  # smsbox first, then bearerbox
        if box.process.returncode is None:
            box.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await box.process.wait()
            except TimeoutError:
                box.process.kill()
                await box.process.wait()
        if box.reader is not None:
            await box.reader
