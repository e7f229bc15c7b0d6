"""`smsgw run` nodes as child processes, for the cluster tests and `bench/cluster.py`.

`node_config` writes a node's TOML (a `[cluster]` block when given a conninfo, else the
node runs on its own SQLite store) with one SMPP route to a simulated SMSC, its bind's
system_type the node's name (the simulator's `submit_log` tells the nodes apart); `Node`
starts it, waits for its `listening` log line and keeps its log lines. `init_data`
makes the first node's data directory (`smsgw init`) and copies it for the others, so
every node holds one keyring and one token table (docs/ops/cluster.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from gateway.tls import generate_self_signed
from tests.conftest import SMSGW, smsgw_process
from tests.http_daemon import TOKEN_RE
from tests.ports import free_port


def node_config(
    data: Path,
    node: str,
    dsn: str | None,
    smsc: tuple[str, int],
    *,
    lease: float = 8.0,
    margin: float = 2.0,
    heartbeat: float = 0.5,
    listen_host: str = "127.0.0.1",
    route_extra: str = "",
    account: tuple[float, float] | None = None,
) -> tuple[Path, str]:
    """The node's config file and the base URL of its HTTP API: HTTPS with a
    self-signed pair when `listen_host` is not loopback (plain HTTP is loopback only).
    `account` (rate, burst): the route sends on a carrier account `acme` shared by the
    cluster's nodes (`[[cluster.accounts]]`)."""
    port = free_port()
    conf = data / "smsgw.toml"
    tls, scheme = "", "http"
    if listen_host != "127.0.0.1":
        generate_self_signed(data / "tls.crt", data / "tls.key", [listen_host])
        tls, scheme = (
            f'tls_cert_file = "{data}/tls.crt"\ntls_key_file = "{data}/tls.key"\n',
            "https",
        )
    cluster = (
        f'[cluster]\nenabled = true\nnode_id = "{node}"\nconninfo = "{dsn}"\n'
        f"lease_seconds = {lease}\nmargin_seconds = {margin}\nheartbeat_seconds = {heartbeat}\n\n"
        if dsn is not None
        else ""
    )
    if account is not None:
        if dsn is None:
            raise ValueError("a shared account needs a cluster")
        cluster += (
            f'[[cluster.accounts]]\nname = "acme"\nrate = {account[0]}\nburst = {account[1]}\n\n'
        )
        route_extra = f'account = "acme"\n{route_extra}'
    conf.write_text(
        f'data_dir = "{data}"\n\n[http]\nlisten = "{listen_host}:{port}"\n'
        f"shutdown_grace = 1.0\n{tls}\n"
        '[log]\nformat = "json"\nlevel = "info"\n\n'
        '[consent]\nenabled = false\ndefault_purpose = "informational"\n\n'
        f"{cluster}"
        f'[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "{smsc[0]}"\nport = {smsc[1]}\n'
        f'system_id = "smsgw"\npassword = "pw"\nsystem_type = "{node}"\n'
        f"reconnect_min = 0.05\nreconnect_max = 0.2\n{route_extra}"
    )
    return conf, f"{scheme}://{listen_host}:{port}"


async def init_data(root: Path, names: list[str]) -> str:
    """`smsgw init` in root/names[0], copied to the others; the API token."""
    first = root / names[0]
    init = await smsgw_process("init", "--data-dir", str(first))
    out, err = await asyncio.wait_for(init.communicate(), 120)
    if init.returncode != 0:
        raise RuntimeError(err.decode())
    (token,) = TOKEN_RE.findall(out.decode())
    for name in names[1:]:
        shutil.copytree(first, root / name)
    return token


class Node:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, url: str) -> None:
        self.name, self.proc, self.url = name, proc, url
        self.lines: list[str] = []
        self.listening = asyncio.Event()
        self.changed = asyncio.Condition()
        self.alive = True
        self.signalled = False
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            async with self.changed:
                self.lines.append(line.decode(errors="replace"))
                self.changed.notify_all()
            if b'"event": "listening"' in line:
                self.listening.set()

    async def wait_line(self, text: str, limit: float, start: int = 0) -> int:
        """The index of the first log line from `start` on holding `text`."""

        def found() -> int | None:
            return next((i for i in range(start, len(self.lines)) if text in self.lines[i]), None)

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: found() is not None), limit)
        index = found()
        assert index is not None
        return index

    @classmethod
    async def start(cls, name: str, conf: Path, url: str, prefix: tuple[str, ...] = ()) -> Node:
        """`prefix` runs the node under another command (e.g. `ip netns exec NS`)."""
        proc = await asyncio.create_subprocess_exec(
            *prefix, *SMSGW, "run", "--config", str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        node = cls(name, proc, url)
        exited = asyncio.ensure_future(node.proc.wait())
        listening = asyncio.ensure_future(node.listening.wait())
        await asyncio.wait([exited, listening], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        exited.cancel()
        if not node.listening.is_set():
            node.kill()
            raise AssertionError("".join(node.lines))
        return node

    def kill(self) -> None:
        self.alive = False
        if self.proc.returncode is None:
            self.proc.kill()

    def terminate(self) -> None:
        """SIGTERM once (a second one would cut the node's own shutdown short)."""
        if self.proc.returncode is None and not self.signalled:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        self.terminate()
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await self._reader
        if self.alive:
            assert code == 0, f"exit {code}: " + "".join(self.lines[-30:])


async def stop_all(nodes: list[Node]) -> None:
    """SIGTERM to every node, then wait for each; the first failure is raised only once
    all have stopped (none is left running behind a failed one)."""
    for node in nodes:
        node.terminate()
    failures: list[BaseException] = []
    for node in nodes:
        try:
            await node.stop()
        except (AssertionError, TimeoutError) as e:
            node.kill()
            failures.append(e)
    if failures:
        raise failures[0]
