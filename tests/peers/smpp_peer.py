"""An independent SMPP 3.4 SMSC for interop tests: `smpp_server.js`, on the npm package `smpp`.

    async with smpp_server(tmp_path, "smsgw", "secret", receipt_delay=0.05) as peer:
        ...  # point a client at 127.0.0.1:peer.port
        pdu = await peer.expect_pdu("submit_sm")        # what the client sent, as logged
        assert pdu["data_coding"] == 8 and pdu["short_message_hex"] == "0048..."
        await peer.send_mo("+12025550147", "4000", "YES", data_coding=0)

The peer logs every PDU it receives as one JSON line on stdout ("pdu" events; fields are
wire values: short_message as hex, TLVs by name or as "0x1403", integers as integers) and
takes commands on stdin (see the head of smpp_server.js), each acknowledged by a "done" event
that `command` (and `send_mo`, `reject_next`, `drop_connections`) wait for. `expect` hands
out each event once, so two `expect_pdu("submit_sm")` calls return the first and the second.

The npm package is pinned in package.json/package-lock.json beside this file and installed
with `npm ci` into `node_modules/` here, once per machine: a stamp in node_modules records
the hash of the lock file, and a lock file under `.cache/` keeps concurrent runs from
installing twice. Without node or npm the tests are skipped, unless we are root, in which
case Debian's `nodejs` and `npm` are installed with apt-get.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PEERS_DIR", "PeerExited", "SmppPeer", "ensure_installed", "smpp_server"]

PEERS_DIR = Path(__file__).resolve().parent
SCRIPT = PEERS_DIR / "smpp_server.js"
CACHE_DIR = PEERS_DIR / ".cache"
NODE_MODULES = PEERS_DIR / "node_modules"
STAMP = NODE_MODULES / ".smsgw-installed"
INSTALL_TIMEOUT = 600.0  # seconds, per command (apt-get on a cold machine is the slow one)

Event = dict[str, Any]

_installed = False  # this process has already checked


class PeerExited(AssertionError):
    """The peer process ended while a test was waiting for one of its events."""


def _lock_hash() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((PEERS_DIR / name).read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    CACHE_DIR.mkdir(exist_ok=True)
    with (CACHE_DIR / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{output}")


def _ensure_node() -> None:
    if shutil.which("node") and shutil.which("npm"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "the SMPP interop peer needs Node.js: install `node` and `npm` "
            "(Debian: apt-get install nodejs npm); not root, so not installing them here"
        )
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], apt_env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nodejs", "npm"], apt_env)
    if not (shutil.which("node") and shutil.which("npm")):
        raise RuntimeError("apt-get installed nodejs and npm, yet node or npm is not on PATH")


def ensure_installed() -> bool:
    """Make `node smpp_server.js` runnable; True if this call ran `npm ci`. Blocking."""
    global _installed
    if _installed:
        return False
    with _install_lock():
        _ensure_node()
        wanted = _lock_hash()
        if STAMP.exists() and STAMP.read_text() == wanted:
            _installed = True
            return False
        npm = shutil.which("npm")
        assert npm is not None
        _run(
            [
                npm,
                "ci",
                "--prefix",
                str(PEERS_DIR),
                "--cache",
                str(CACHE_DIR / "npm"),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
            {"npm_config_update_notifier": "false"},
        )
        STAMP.write_text(wanted)
        _installed = True
        return True


class SmppPeer:
    """A running smpp_server.js: its stdout events, its stdin commands."""

    host = "127.0.0.1"

    def __init__(self, proc: asyncio.subprocess.Process, system_id: str, password: str) -> None:
        self.proc = proc
        self.system_id = system_id
        self.password = password
        self.port = 0
        self.events: list[Event] = []  # everything the peer printed, in order
        self.stderr: list[str] = []
        self._taken: set[int] = set()
        self._refs = 0
        self._eof = False  # stdout closed: no event will come
        self._grew = asyncio.Condition()
        self._readers = asyncio.gather(self._read_events(), self._read_stderr())

    async def _read_events(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                event = {"event": "raw", "line": raw.decode(errors="replace").rstrip()}
            async with self._grew:
                self.events.append(event)
                self._grew.notify_all()
        async with self._grew:
            self._eof = True
            self._grew.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.stderr.append(raw.decode(errors="replace"))

    @property
    def running(self) -> bool:
        return self.proc.returncode is None and not self._eof

    def transcript(self) -> str:
        lines = [json.dumps(e) for e in self.events]
        return "\n".join([*lines, "--- stderr ---", *self.stderr])

    async def expect(
        self, event: str = "pdu", *, within: float | None = 10.0, **fields: Any
    ) -> Event:
        """The first event not handed out before with this `event` name and these fields."""
        try:
            async with asyncio.timeout(within), self._grew:
                while True:
                    for i, candidate in enumerate(self.events):
                        if i in self._taken or candidate.get("event") != event:
                            continue
                        if all(candidate.get(k) == v for k, v in fields.items()):
                            self._taken.add(i)
                            return candidate
                    if self._eof:
                        raise PeerExited(f"peer exited:\n{self.transcript()}")
                    await self._grew.wait()
        except TimeoutError:
            wanted = {"event": event, **fields}
            raise AssertionError(
                f"no {wanted} from the peer within {within}s:\n{self.transcript()}"
            ) from None

    async def expect_pdu(self, command: str, *, within: float = 10.0, **fields: Any) -> Event:
        """The next PDU of this command the peer received (and logged)."""
        return await self.expect("pdu", within=within, command=command, **fields)

    async def pdus(self) -> AsyncIterator[Event]:
        """Every PDU the peer receives, in order, each once; ends when the peer exits."""
        with contextlib.suppress(PeerExited):
            while True:
                yield await self.expect("pdu", within=None)

    def received(self, command: str | None = None) -> list[Event]:
        """The PDUs logged so far (handed out or not), optionally of one command."""
        return [
            e
            for e in self.events
            if e.get("event") == "pdu" and (command is None or e.get("command") == command)
        ]

    async def send(self, cmd: str, **fields: Any) -> None:
        """A control command on the peer's stdin (see smpp_server.js); does not wait."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()

    async def command(self, cmd: str, *, within: float = 10.0, **fields: Any) -> Event:
        """A control command, once the peer says it took effect (its "done" event)."""
        self._refs += 1
        ref = self._refs
        await self.send(cmd, ref=ref, **fields)
        done = await self.expect("done", within=within, ref=ref)
        if "error" in done:
            raise ValueError(f"the peer refused {cmd} {fields}: {done['error']}")
        return done

    async def send_mo(
        self,
        source: str,
        destination: str,
        text: str = "",
        *,
        data_coding: int = 0,
        short_message: bytes | None = None,
        esm_class: int = 0,
        within: float = 10.0,
    ) -> Event:
        """Push a mobile-originated deliver_sm to a bound receiver (or the next to bind).

        `text` is encoded per `data_coding` (0: GSM 03.38 unpacked, 1: ASCII, 3: Latin-1,
        8: UCS-2) unless `short_message` gives the bytes. Returns the "mo_sent" event
        (its command_status is the deliver_sm_resp's), once the client has answered.
        """
        fields: dict[str, Any] = {"source": source, "destination": destination, "text": text}
        if short_message is not None:
            fields["short_message_hex"] = short_message.hex()
        done = await self.command("mo", data_coding=data_coding, esm_class=esm_class, **fields)
        return await self.expect("mo_sent", within=within, ref=done["ref"])

    async def reject_next(self, status: str | int, count: int = 1) -> None:
        """Answer the next `count` submit_sm with this error status (name or number)."""
        await self.command("reject", status=status, count=count)

    async def drop_connections(self) -> None:
        """Cut every client connection without an unbind."""
        await self.command("drop")

    async def stop(self, grace: float = 5.0) -> int:
        """Ask the peer to unbind its clients and exit; kill it if it has not in `grace` s."""
        assert self.proc.stdin is not None
        if self.proc.returncode is None and not self.proc.stdin.is_closing():
            with contextlib.suppress(ConnectionError):
                await self.send("stop")
                self.proc.stdin.close()
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._readers
        assert self.proc.returncode is not None
        return self.proc.returncode


@asynccontextmanager
async def smpp_server(
    tmp_path: Path,
    system_id: str,
    password: str,
    *,
    receipt_delay: float = 0.1,
    hex_ids: bool = False,
    receipt_hex_ids: bool | None = None,
    receipt_stat: str = "DELIVRD",
    receipt_err: str = "000",
    port: int = 0,
    start_timeout: float = 20.0,
) -> AsyncIterator[SmppPeer]:
    """Run smpp_server.js on 127.0.0.1 for the body of the `async with`.

    `hex_ids`: message ids in hex in submit_sm_resp (and receipts); `receipt_hex_ids` sets
    the receipt text's `id:` apart, as carriers that answer in hex and report in decimal do.
    The peer's output is written to tmp_path/smpp_peer.log when it stops.
    """
    await asyncio.to_thread(ensure_installed)
    node = shutil.which("node")
    assert node is not None
    fmt = "hex" if hex_ids else "dec"
    receipt_fmt = fmt if receipt_hex_ids is None else ("hex" if receipt_hex_ids else "dec")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        "--port",
        str(port),
        "--receipt-delay",
        str(receipt_delay),
        "--id-format",
        fmt,
        "--receipt-id-format",
        receipt_fmt,
        "--receipt-stat",
        receipt_stat,
        "--receipt-err",
        receipt_err,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # The credentials go by environment, not argv, which any local user can read.
        env={**os.environ, "SMPP_SYSTEM_ID": system_id, "SMPP_PASSWORD": password},
    )
    peer = SmppPeer(proc, system_id, password)
    try:
        try:
            listening = await peer.expect("listening", within=start_timeout)
        except PeerExited as exc:
            raise RuntimeError(f"smpp_server.js did not start:\n{peer.transcript()}") from exc
        peer.port = int(listening["port"])
        yield peer
    finally:
        await peer.stop()
        await asyncio.to_thread((tmp_path / "smpp_peer.log").write_text, peer.transcript())
