"""The parts bench/smpp.py's scenarios are built from: the scenario and run settings,
CPU placement, a system under test and its logs, the SMPP sink (bench/smpp_sink.js),
the profiler, and the Debian tools the benchmark needs."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from harness import Server
from jsonline_child import JsonLineChild

# The sink runs on the npm package the interop tests pin (tests/peers/package.json).
sys.path.insert(0, str(harness.REPO))
smpp_peer = importlib.import_module("tests.peers.smpp_peer")
SINK_JS = harness.BENCH_DIR / "smpp_sink.js"
SYSTEM_ID, SYSTEM_PASSWORD = "smsgw", "pw"
WINDOW = 50
BIND_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
POLL_S = 0.02
# Kannel logs these on a fresh store (no store, .new or .bak file yet); not a problem.
KANNEL_BENIGN = ("kannel.store", "System error 2: No such file or directory")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    receipts: bool
    resp_delay_ms: int
    receipt_delay_ms: int
    batch: int  # smsgw only; 0 = one message per request
    systems: tuple[str, ...]
    # Receipts forwarded to the hospital's receiver (bench/receipt_receiver.py), and the
    # rate counted there rather than at the sink.
    forward: bool = False

    @property
    def protocol_cap_per_s(self) -> float | None:
        """What one bind allows when every submit waits `resp_delay_ms` for its answer:
        a full window per answer time (none without a delay)."""
        return WINDOW * 1000 / self.resp_delay_ms if self.resp_delay_ms else None


@dataclass(frozen=True, slots=True)
class Settings:
    n: int
    repeats: int
    concurrency: int
    deadline_s: float

    @classmethod
    def for_run(cls, quick: bool, n: int | None = None) -> Settings:
        settings = cls(4000, 1, 64, 120.0) if quick else cls(20000, 2, 64, 300.0)
        return settings if n is None else dataclasses.replace(settings, n=n)


@dataclass(frozen=True, slots=True)
class Placement:
    """CPU prefixes: servers, wrk; and where this process (the sink) runs."""

    server: tuple[str, ...]
    client: tuple[str, ...]
    text: str


def setup_placement() -> Placement:
    """Servers on CPU 0; with 3+ CPUs wrk on CPU 1 and the sink (this process) on CPU 2,
    else wrk and the sink share CPU 1 (contention: see client_cpu in the output)."""
    cpus = os.sched_getaffinity(0)
    if shutil.which("taskset") is None or not {0, 1} <= cpus:
        return Placement((), (), "unpinned (taskset or a second CPU missing)")
    server, client = ("taskset", "-c", "0"), ("taskset", "-c", "1")
    if 2 in cpus:
        os.sched_setaffinity(0, {2})
        return Placement(server, client, "servers CPU 0, wrk CPU 1, sink CPU 2 (taskset)")
    os.sched_setaffinity(0, {1})
    text = "servers CPU 0, wrk AND the sink share CPU 1 (only 2 CPUs; taskset)"
    return Placement(server, client, text)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def process_cpu_seconds(pids: Sequence[int]) -> float:
    return sum(sum(harness.thread_cpu_seconds(pid).values()) for pid in pids)


async def stop_soon(server: Server) -> int | None:
    """SIGTERM, up to STOP_GRACE_S for a clean exit (Kannel unbinds), then SIGKILL."""
    process = server.process
    if process is not None and process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            process.kill()
    return await server.stop()


@dataclass
class System:
    """One system under test: its processes (started in order), wrk script and URL."""

    name: str
    servers: list[Server]
    url: str
    script: Path
    logs: list[Path]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    async def start(self) -> None:
        for server in self.servers:
            await server.start()

    async def stop(self) -> list[int | None]:
        return [await stop_soon(s) for s in reversed(self.servers)]


def log_sizes(system: System) -> dict[Path, int]:
    return {p: p.stat().st_size if p.exists() else 0 for p in system.logs}


def log_findings(system: System, until: dict[Path, int]) -> dict[str, Any]:
    """Warning-or-worse lines across the system's logs up to the end of the measured
    window (`until`: byte offsets), a count and the commonest kinds; and how many came
    after it, while the system shut down."""
    kinds: Counter[str] = Counter()
    first = ""
    later = 0
    for path in system.logs:
        if not path.exists():
            continue
        data = path.read_bytes()
        cut = until.get(path, 0)
        for part, during in ((data[:cut], True), (data[cut:], False)):
            for line in part.decode(errors="replace").splitlines():
                kind = _problem_kind(line)
                if kind is None:
                    continue
                if not during:
                    later += 1
                    continue
                kinds[kind] += 1
                first = first or line[:300]
    found: dict[str, Any] = {"log_problems": sum(kinds.values())}
    if kinds:
        found["log_kinds"] = dict(kinds.most_common(5))
        found["log_first_problem"] = first
    found["shutdown_log_problems"] = later
    return found


def _problem_kind(line: str) -> str | None:
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if record.get("level") in ("warning", "error", "critical"):
            return f"{record['level']}:{record.get('event', '?')}"
        return None
    if any(b in line for b in KANNEL_BENIGN):
        return None
    for marker in ("PANIC:", "ERROR:", "WARNING:", "Traceback"):
        if marker in line:
            return marker.rstrip(":") + ":" + line.split(marker, 1)[1].strip()[:60]
    return None


async def wait_for(
    stats: Callable[[], Awaitable[dict[str, Any]]], key: str, target: int, deadline: float
) -> dict[str, Any]:
    """Poll `stats()` until its counter `key` reaches `target` or the monotonic
    `deadline` passes; the last stats."""
    while True:
        got = await stats()
        if got[key] >= target or time.monotonic() >= deadline:
            return got
        await asyncio.sleep(POLL_S)


class Sink(JsonLineChild):
    """bench/smpp_sink.js in a node process; its counters on demand. With `target`, it
    also stamps the time its `target`-th receipt was acknowledged."""

    name = "SMPP sink"
    start_timeout_s = BIND_TIMEOUT_S
    stop_grace_s = STOP_GRACE_S

    def __init__(self, scenario: Scenario, placement: Placement, target: int = 0) -> None:
        super().__init__()
        self.scenario = scenario
        self.placement = placement
        self.target = target

    async def __aenter__(self) -> Sink:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed (make peers installs it)")
        await self.start(
            *self.placement.client,
            node,
            str(SINK_JS),
            "--system-id",
            SYSTEM_ID,
            "--password",
            SYSTEM_PASSWORD,
            "--resp-delay-ms",
            str(self.scenario.resp_delay_ms),
            "--receipt-delay-ms",
            str(self.scenario.receipt_delay_ms),
            "--target",
            str(self.target),
            env={**os.environ, "NODE_PATH": str(smpp_peer.NODE_MODULES)},
        )
        return self

    async def wait_for(self, key: str, target: int, deadline: float) -> dict[str, Any]:
        """Poll until counter `key` reaches `target` or the monotonic `deadline` passes."""
        return await wait_for(self.stats, key, target, deadline)


async def start_profiler(pid: int, placement: Placement, out: Path) -> asyncio.subprocess.Process:
    """py-spy on smsgw until SIGINT (a profiled run is not a measured one). Blocking
    (the process paused per sample: whole stacks) and `--threads` (each stack starts
    with its thread's id, which bench/smpp_profile.py matches to /proc's CPU)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        *placement.client,
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--format",
        "raw",
        "--threads",
        "-o",
        str(out),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def install_missing() -> str | None:
    """wrk and Kannel from Debian when missing (as root); why not, if they cannot be."""
    wanted = {"wrk": "wrk", "bearerbox": "kannel", "node": "nodejs npm"}
    missing = [
        pkg
        for tool, pkg in wanted.items()
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None
    ]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"missing Debian packages: {' '.join(missing)} (apt-get install them)"
    print(f"bench: installing {' '.join(missing)} (Debian)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    packages = " ".join(missing).split()
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)
    return None
