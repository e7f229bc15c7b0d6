"""Processes under test: CPU pinning, free ports, start/ready/stop, CPU time, row counts.

Every server is started by this module and stopped by its own PID (SIGTERM, then
SIGKILL after a bounded wait); nothing is left running. Servers go on CPU 0 and load
generators (wrk, and this process itself) on CPU 1 when `taskset` and two CPUs exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0
READY_POLL_S = 0.05
STOP_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Pinning:
    """Command prefixes that put servers on one CPU and clients on another."""

    server: tuple[str, ...] = ()
    client: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.server)

    def describe(self) -> str:
        if not self.active:
            return "unpinned (taskset or a second CPU missing)"
        return "server on CPU 0, wrk and bench client on CPU 1 (taskset)"


def setup_pinning() -> Pinning:
    """Pin this process to CPU 1 and return the prefixes for children, if possible."""
    cpus = os.sched_getaffinity(0)
    if shutil.which("taskset") is None or not {0, 1} <= cpus:
        return Pinning()
    os.sched_setaffinity(0, {1})
    return Pinning(server=("taskset", "-c", "0"), client=("taskset", "-c", "1"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread of a process ("main", or "thread TID")."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = "main" if task.name == str(pid) else f"thread {task.name}"
        out[name] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def machine_busy_seconds() -> float:
    """Process and stolen CPU time of the whole machine so far (interrupts left out)."""
    line = Path("/proc/stat").read_text().splitlines()[0]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, line.split()[1:9])
    return (user + nice + system + steal) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU of this process plus its reaped children (wrk runs end inside an interval)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU over an interval: the server's event-loop thread, its other threads (SQLite
    writer, aiosqlite read pool), and foreign load (machine CPU that was neither the server,
    this process nor the wrk it ran): runs with foreign load are suspect."""

    seconds: float
    main_s: float
    threads_s: float
    foreign_s: float

    @property
    def utilisation(self) -> float:
        return (self.main_s + self.threads_s) / self.seconds

    def per_item_us(self, items: int) -> tuple[float, float]:
        """(event loop, other threads) CPU microseconds per item."""
        if items <= 0:
            return (0.0, 0.0)
        return (1e6 * self.main_s / items, 1e6 * self.threads_s / items)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    at: float
    threads: dict[str, float]
    machine_busy: float
    own: float

    @classmethod
    def take(cls, pid: int) -> CpuSnapshot:
        threads = thread_cpu_seconds(pid)
        return cls(time.monotonic(), threads, machine_busy_seconds(), own_cpu_seconds())

    def until(self, later: CpuSnapshot) -> CpuUse:
        used = {k: v - self.threads.get(k, 0.0) for k, v in later.threads.items()}
        main = used.pop("main", 0.0)
        threads = sum(used.values())
        foreign = (later.machine_busy - self.machine_busy) - main - threads - (later.own - self.own)
        return CpuUse(later.at - self.at, main, threads, max(0.0, foreign))


@dataclass
class Server:
    """One server process, its log file, and how to reach it."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    cwd: Path = REPO  # the checkout whose code runs (bench/growth.py --server-repo)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    async def start(self) -> None:
        self._log = _open_log(self.log_path)
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    break
                if await _healthy(session, self.url + "/api/v1/healthz"):
                    return
                await asyncio.sleep(READY_POLL_S)
        await self.stop()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")

    async def stop(self) -> int | None:
        """SIGTERM, wait (bounded), SIGKILL if needed; returns the exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                code = await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def python_argv(pinning: Pinning, *args: str) -> list[str]:
    return [*pinning.server, sys.executable, *args]


# -- the database, read after (or beside) the server --------------------------------------


def query_one(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """One row from a read-only connection (safe beside a running gateway in WAL mode)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row: tuple[Any, ...] = conn.execute(sql, params).fetchone()
        return row
    finally:
        conn.close()


def count_messages(db_path: Path) -> int:
    return int(query_one(db_path, "SELECT count(*) FROM messages")[0])


# -- a gateway of our own ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """The one loopback route a benchmark gives its gateway."""

    rate: float | None
    burst: int = 1
    window: int = 10
    latency: float = 0.0
    receipt_delay: float = 3600.0
    name: str = "bench"

    def toml(self) -> str:
        lines = [
            "[[routes]]",
            f'name = "{self.name}"',
            'type = "loopback"',
            f"burst = {self.burst}",
            f"window = {self.window}",
            f"latency = {self.latency!r}",
            f"receipt_delay = {self.receipt_delay!r}",
        ]
        if self.rate is not None:
            lines.insert(3, f"rate = {self.rate!r}")
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        rate = "unlimited" if self.rate is None else f"{self.rate:g}/s"
        return (
            f"loopback rate={rate} burst={self.burst} window={self.window}"
            f" latency={self.latency:g}s receipt_delay={self.receipt_delay:g}s"
        )


# Every send has a purpose (MSG-1). The benches' loads name none: they take this one,
# with the policy checks on and no sending window, so a run does not depend on the hour
# (bench/consent.py measures the checks themselves and writes its own table).
BENCH_CONSENT = """
[consent]
default_purpose = "informational"

[consent.purposes.informational]
window = ""
"""

_CONFIG = (
    """\
# written by bench/harness.py for one benchmark run
data_dir = "{data_dir}"

[http]
listen = "{listen}"
# wrk's 256 connections all come from 127.0.0.1; the default cap (128) would refuse half
max_connections_per_address = 1024

[store]
path = "smsgw.db"
master_key_file = "master.key"
synchronous = "FULL"

[queue]
default_region = "US"
"""
    + BENCH_CONSENT
    + """
{routes}"""
)


@dataclass(frozen=True, slots=True)
class GatewayHome:
    """A data directory made by `smsgw init`, with the token it printed."""

    data_dir: Path
    token: str

    @property
    def config_path(self) -> Path:
        return self.data_dir / "smsgw.toml"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "smsgw.db"

    def configure(self, route: RouteSpec, port: int) -> None:
        self.config_path.write_text(
            _CONFIG.format(data_dir=self.data_dir, listen=f"{LOOPBACK}:{port}", routes=route.toml())
        )


async def init_gateway(data_dir: Path) -> GatewayHome:
    """`smsgw init --data-dir DIR`; the first token is the line that starts `smsgw_`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "init",
        "--data-dir",
        str(data_dir),
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), READY_TIMEOUT_S)
    tokens = [x.strip() for x in out.decode().splitlines() if x.startswith("smsgw_")]
    if process.returncode != 0 or len(tokens) != 1:
        raise RuntimeError(f"smsgw init failed in {data_dir}: {out.decode()!r}")
    home = GatewayHome(data_dir, tokens[0])
    head, routes, tail = home.config_path.read_text().partition("[[routes]]")
    home.config_path.write_text(head.rstrip() + "\n" + BENCH_CONSENT + "\n" + routes + tail)
    return home


def gateway_server(home: GatewayHome, route: RouteSpec, pinning: Pinning, name: str) -> Server:
    """A `smsgw run` process for `home`, configured with `route` (not started yet)."""
    port = free_port()
    home.configure(route, port)
    argv = python_argv(
        pinning,
        "-m",
        "gateway.cli",
        "run",
        "--config",
        str(home.config_path),
        "--listen",
        f"{LOOPBACK}:{port}",
    )
    return Server(name, argv, port, home.data_dir / "gateway.log")


def ceiling_server(data_dir: Path, pinning: Pinning) -> Server:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = python_argv(
        pinning,
        str(BENCH_DIR / "ceiling_server.py"),
        "--db",
        str(data_dir / "ceiling.db"),
        "--listen",
        f"{LOOPBACK}:{port}",
    )
    return Server("ceiling", argv, port, data_dir / "ceiling.log")


def run_bench(main: Callable[[], Awaitable[int]], root: Path, keep: bool, timeout: float) -> int:
    """Run a bench's coroutine (on uvloop when installed, as `smsgw run` is), bounded
    by `timeout`; then remove its scratch folder `root` unless `keep`."""
    try:
        import uvloop

        runner: Callable[[Awaitable[int]], int] = uvloop.run
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]  # a coroutine is what it runs

    async def bounded() -> int:
        return await asyncio.wait_for(main(), timeout)

    try:
        return runner(bounded())
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def publish_summary(summary: dict[str, Any], latest: Path) -> None:
    """A bench's last line: the summary as JSON, printed and kept in `latest`."""
    print(json.dumps(summary), flush=True)
    latest.parent.mkdir(exist_ok=True)
    latest.write_text(json.dumps(summary) + "\n")
