"""smsgw vs. Kannel over SMPP: HTTP in, SMPP out, the same SMSC sink, the same N.

    .venv/bin/python bench/smpp.py            # full: N per scenario, two alternating runs each
    .venv/bin/python bench/smpp.py --quick    # smaller N, one run each (about a minute)

Both systems take the same N messages from wrk (keep-alive, one thread, a Lua script that
stops once N sends were answered 2xx) and hand them to the same sink over one SMPP bind
with the same window: bench/smpp_sink.js, a small SMSC on the npm package `smpp` (code
neither side wrote). Kannel is Debian's `kannel` (bearerbox + smsbox, `sendsms` over HTTP,
its file store on, log level 2); smsgw is `smsgw run` with SQLite `synchronous = FULL`.

Scenarios:
- clinical (the headline): every message asks for a delivery receipt; the sink answers
  each submit_sm after 5 ms and sends the receipt 1 s later; window 50 on both. The rate is
  N over the time from the first request until the sink has had N receipts acknowledged
  (deliver_sm_resp), i.e. processed end to end.
- raw: no receipts, no SMSC latency; the rate is N over the time until N submits arrived.
- batch: raw, but smsgw gets the same messages through `POST /messages/batch` (100 per
  request); compared with Kannel's raw rate (Kannel has no batch interface).

Runs alternate (Kannel, smsgw, Kannel, smsgw, ...) on fresh data each; each figure is the
median of its runs. The last line is one JSON object with the ratios and the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import aiohttp
import harness
import loadgen
import profile_gateway
from harness import LOOPBACK, Server

# The sink runs on the npm package the interop tests pin (tests/peers/package.json).
sys.path.insert(0, str(harness.REPO))
smpp_peer = importlib.import_module("tests.peers.smpp_peer")
LATEST = harness.BENCH_DIR / "results" / "smpp-latest.json"
KANNEL_TEMPLATE = harness.BENCH_DIR / "kannel" / "kannel.conf.template"
SINK_JS = harness.BENCH_DIR / "smpp_sink.js"
SYSTEM_ID, SYSTEM_PASSWORD = "smsgw", "pw"
KANNEL_USER, KANNEL_PASSWORD = "bench", "benchpw"
WINDOW = 50
BATCH = 100
BIND_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
RUN_TIMEOUT_S = 1800.0
POLL_S = 0.02
TOKEN_PATTERN = r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}"  # noqa: S105 - a shape, no secret
DURABILITY_NOTE = (
    "smsgw fsyncs (SQLite synchronous=FULL) every accept, every state change and every"
    " receipt before acting on it or acknowledging it; Kannel's file store is written but"
    " never fsync'd, so a crash can lose what it acknowledged."
)
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


SCENARIOS = (
    Scenario("clinical", True, 5, 1000, 0, ("kannel", "smsgw")),
    Scenario("raw", False, 0, 0, 0, ("kannel", "smsgw")),
    Scenario("batch", False, 0, 0, BATCH, ("smsgw",)),
)


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


def self_cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def children_cpu_seconds() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def process_cpu_seconds(pids: Sequence[int]) -> float:
    return sum(sum(harness.thread_cpu_seconds(pid).values()) for pid in pids)


# -- wrk scripts ---------------------------------------------------------------------------

_KANNEL_LUA = Template(r"""
wrk.method = "GET"
local base = "$base"
local quota = $quota
$report
function request()
  return wrk.format(nil, base .. string.format("%04d", math.random(0, $last)))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    messages = messages + 1
  else
    bad = bad + 1
  end
  if quota > 0 and messages >= quota then wrk.thread:stop() end
end
""")


def kannel_script(path: Path, *, receipts: bool, quota: int) -> Path:
    """GET /cgi-bin/sendsms with the URL-encoded 160-character body (and dlr-mask=1 when
    receipts are wanted); the recipient's last four digits are drawn per request (the
    same range as smsgw's script)."""
    params = {"username": KANNEL_USER, "password": KANNEL_PASSWORD, "text": loadgen.BODY_160_GSM}
    if receipts:
        params["dlr-mask"] = "1"
    to = urllib.parse.quote(loadgen.RECIPIENT_PREFIX, safe="")
    base = f"/cgi-bin/sendsms?{urllib.parse.urlencode(params)}&to={to}"
    path.write_text(
        _KANNEL_LUA.substitute(
            base=base, last=loadgen.RECIPIENTS - 1, report=loadgen.REPORT_LUA, quota=quota
        )
    )
    return path


# -- the servers ---------------------------------------------------------------------------


@dataclass
class Box(Server):
    """A server that is ready once `ready_url` answers at all (any HTTP status)."""

    ready_url: str = ""

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + harness.READY_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    break
                try:
                    timeout = aiohttp.ClientTimeout(total=1)
                    async with session.get(self.ready_url, timeout=timeout):
                        return
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(harness.READY_POLL_S)
        await self.stop()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")


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


def kannel_binaries() -> tuple[Path, Path] | str:
    """(bearerbox, smsbox), or why Kannel cannot run here."""
    found = []
    for name in ("bearerbox", "smsbox"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if path is None:
            return f"{name} not found: install the Debian package (apt-get install kannel)"
        found.append(Path(path))
    return found[0], found[1]


def kannel_system(
    work: Path, sink_port: int, placement: Placement, scenario: Scenario, quota: int
) -> System:
    binaries = kannel_binaries()
    if isinstance(binaries, str):
        raise RuntimeError(binaries)
    bearerbox, smsbox = binaries
    work.mkdir(parents=True)
    admin, smsbox_port, sendsms = (harness.free_port() for _ in range(3))
    conf = work / "kannel.conf"
    conf.write_text(
        Template(KANNEL_TEMPLATE.read_text()).substitute(
            admin_port=admin,
            admin_password="bench-admin",  # noqa: S106 - loopback only, per run
            smsbox_port=smsbox_port,
            sendsms_port=sendsms,
            workdir=work,
            username=KANNEL_USER,
            password=KANNEL_PASSWORD,
            smsc_port=sink_port,
            system_id=SYSTEM_ID,
            system_password=SYSTEM_PASSWORD,
            window=WINDOW,
        )
    )
    # -v 2: warnings and worse on the console too; the log files get the same level.
    bb = Box(
        "bearerbox",
        [*placement.server, str(bearerbox), "-v", "2", str(conf)],
        admin,
        work / "bearerbox.out",
        ready_url=f"http://{LOOPBACK}:{admin}/status",
    )
    sb = Box(
        "smsbox",
        [*placement.server, str(smsbox), "-v", "2", str(conf)],
        sendsms,
        work / "smsbox.out",
        ready_url=f"http://{LOOPBACK}:{sendsms}/cgi-bin/sendsms",
    )
    logs_ = [work / n for n in ("bearerbox.out", "smsbox.out", "bearerbox.log", "smsbox.log")]
    script = kannel_script(work / "kannel.lua", receipts=scenario.receipts, quota=quota)
    return System("kannel", [bb, sb], sb.url, script, logs_)


_SMSGW_EXTRA = """\
# bench/smpp.py: receipts for the class the load uses as the scenario asks (Kannel's
# dlr-mask likewise); the rest of the class as the default.
[queue.classes.normal]
expires_after = 86400.0
max_attempts = 8
min_share = 0.05
want_receipt = {want_receipt}

# bench/smpp.py: one SMPP route (one transceiver bind) to the sink, the same window as
# Kannel's max-pending-submits, no rate limit.
[[routes]]
name = "sink"
type = "smpp"
host = "127.0.0.1"
port = {port}
system_id = "{system_id}"
password = "{password}"
window = {window}
session_window = {window}
"""


async def smsgw_system(
    work: Path,
    sink_port: int,
    placement: Placement,
    scenario: Scenario,
    quota: int,
    extra_config: str = "",
) -> System:
    """`extra_config`: TOML tables added before the route (bench/events.py: outbox
    consumers)."""
    home = await harness.init_gateway(work)
    if not re.fullmatch(TOKEN_PATTERN, home.token):
        raise RuntimeError(f"smsgw init printed no token: {home.token!r}")
    config = home.config_path.read_text()
    head, _, _ = config.partition("[[routes]]")
    home.config_path.write_text(
        head.rstrip()
        + "\n\n"
        + (extra_config.strip() + "\n\n" if extra_config else "")
        + _SMSGW_EXTRA.format(
            port=sink_port,
            system_id=SYSTEM_ID,
            password=SYSTEM_PASSWORD,
            window=WINDOW,
            want_receipt="true" if scenario.receipts else "false",
        )
    )
    port = harness.free_port()
    argv = harness.python_argv(
        harness.Pinning(server=placement.server, client=placement.client),
        "-m",
        "gateway.cli",
        "run",
        "--config",
        str(home.config_path),
        "--listen",
        f"{LOOPBACK}:{port}",
    )
    server = Server("smsgw", argv, port, work / "gateway.log")
    script = loadgen.write_script(
        work.parent / f"{work.name}.lua", home.token, batch=scenario.batch, quota=quota
    )
    return System("smsgw", [server], server.url, script, [server.log_path])


# -- one measurement -----------------------------------------------------------------------


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


class Sink:
    """bench/smpp_sink.js in a node process; its counters on demand."""

    def __init__(self, scenario: Scenario, placement: Placement) -> None:
        self.scenario = scenario
        self.placement = placement
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    async def __aenter__(self) -> Sink:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed (make peers installs it)")
        self.process = await asyncio.create_subprocess_exec(
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
            env={**os.environ, "NODE_PATH": str(smpp_peer.NODE_MODULES)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        first = await self._line()
        self.port = int(first["port"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), BIND_TIMEOUT_S)
        if not raw:
            raise RuntimeError("the SMPP sink exited")
        line: dict[str, Any] = json.loads(raw)
        return line

    async def stats(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b'{"cmd":"stats"}\n')
        await self.process.stdin.drain()
        return await self._line()

    async def wait_for(self, key: str, target: int, deadline: float) -> dict[str, Any]:
        """Poll until counter `key` reaches `target` or the monotonic `deadline` passes."""
        while True:
            stats = await self.stats()
            if stats[key] >= target or time.monotonic() >= deadline:
                return stats
            await asyncio.sleep(POLL_S)


async def start_profiler(pid: int, placement: Placement, out: Path) -> asyncio.subprocess.Process:
    """py-spy on smsgw until SIGINT (a profiled run is not a measured one)."""
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
        "--nonblocking",
        "-o",
        str(out),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def measure(
    name: str,
    scenario: Scenario,
    settings: Settings,
    placement: Placement,
    work: Path,
    profile: Path | None = None,
    *,
    extra_config: str = "",
    before_stop: Callable[[System], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """One run. `before_stop`, if given, runs once the N-th message is done and wrk has
    stopped, with smsgw still up (bench/events.py waits there for its receivers); what
    it returns joins the result."""
    n = settings.n
    async with Sink(scenario, placement) as sink:
        if name == "kannel":
            system = kannel_system(work, sink.port, placement, scenario, n)
        else:
            system = await smsgw_system(work, sink.port, placement, scenario, n, extra_config)
        say(f"{scenario.name}: {name} starting (sink on port {sink.port})")
        await system.start()
        try:
            bound = await sink.wait_for("binds", 1, time.monotonic() + BIND_TIMEOUT_S)
            if bound["binds"] < 1:
                raise RuntimeError(f"{system.name} did not bind to the sink in time")
            key = "receipts_acked" if scenario.receipts else "submits"
            spy = None
            if profile is not None:
                spy = await start_profiler(system.pids[0], placement, profile)
            cpu0 = (process_cpu_seconds(system.pids), children_cpu_seconds())
            t0_wall, t0 = time.time(), time.monotonic()
            stop_wrk = asyncio.Event()
            wrk = asyncio.create_task(
                loadgen.run_wrk(
                    placement.client,
                    system.url,
                    system.script,
                    settings.concurrency,
                    settings.deadline_s,
                    stop_wrk,
                )
            )
            done = await sink.wait_for(key, n, t0 + settings.deadline_s)
            elapsed = time.monotonic() - t0
            last_ms = done["last_receipt_ack_ms" if scenario.receipts else "last_submit_ms"]
            if done[key] >= n and last_ms:
                # The sink's own clock stamps the N-th event; polling only adds lag.
                elapsed = min(elapsed, last_ms / 1000 - t0_wall)
            cpu1 = (process_cpu_seconds(system.pids), children_cpu_seconds())
            stop_wrk.set()
            run = await wrk
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await asyncio.wait_for(spy.wait(), 60)
            after = {} if before_stop is None else await before_stop(system)
            sizes = log_sizes(system)
        finally:
            codes = await system.stop()
    server_cpu, _ = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    result: dict[str, Any] = {
        "bench": "smpp",
        "scenario": scenario.name,
        "system": name,
        "n": n,
        "completed": min(done[key], n),
        "per_s": round(min(done[key], n) / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "accepted": run.messages,
        "submits": done["submits"],
        "receipts_acked": done["receipts_acked"],
        "receipts_refused": done["receipts_refused"],
        "non_2xx": run.bad,
        "socket_errors": run.socket_errors,
        "p50_ms": round(run.p50_ms, 1),
        "p99_ms": round(run.p99_ms, 1),
        "server_cpu": round(server_cpu / elapsed, 2),
        "exit_codes": codes,
    }
    result.update(after)
    result.update(log_findings(system, sizes))
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


async def run_all(args: argparse.Namespace, placement: Placement, root: Path) -> int:
    settings = Settings.for_run(args.quick, args.n)
    kannel_problem = kannel_binaries()
    if isinstance(kannel_problem, str):
        print(json.dumps({"bench": "smpp", "system": "kannel", "error": kannel_problem}))
    failures = 0
    medians: dict[tuple[str, str], float] = {}
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    for scenario in chosen:
        print(f"\n== {scenario.name}", flush=True)
        runs: dict[str, list[float]] = {}
        kannel_ok = not isinstance(kannel_problem, str)
        systems = [s for s in scenario.systems if kannel_ok or s != "kannel"]
        for i in range(settings.repeats):
            for name in systems:
                work = root / f"{scenario.name}-{name}-{i}"
                try:
                    result = await measure(name, scenario, settings, placement, work)
                except (RuntimeError, OSError, TimeoutError) as e:
                    failures += 1
                    failed = {"bench": "smpp", "scenario": scenario.name, "system": name}
                    print(json.dumps({**failed, "error": str(e)}), flush=True)
                    continue
                print(json.dumps(result), flush=True)
                runs.setdefault(name, []).append(result["per_s"])
        for name, rates in runs.items():
            medians[(scenario.name, name)] = statistics.median(rates)

    def get(scenario: str, system: str) -> float | None:
        return medians.get((scenario, system))

    summary = {
        "bench": "smpp",
        "ratio": ratio(get("clinical", "smsgw"), get("clinical", "kannel")),
        "raw_ratio": ratio(get("raw", "smsgw"), get("raw", "kannel")),
        "batch_ratio": ratio(get("batch", "smsgw"), get("raw", "kannel")),
        "smsgw_clinical_per_s": get("clinical", "smsgw"),
        "kannel_clinical_per_s": get("clinical", "kannel"),
        "smsgw_raw_per_s": get("raw", "smsgw"),
        "kannel_raw_per_s": get("raw", "kannel"),
        "smsgw_batch_per_s": get("batch", "smsgw"),
        "settings": {
            "n": settings.n,
            "runs_each": settings.repeats,
            "wrk_connections": settings.concurrency,
            "window": WINDOW,
            "batch": BATCH,
            "clinical": "receipt per message, submit_sm_resp after 5 ms, receipt after 1 s",
            "raw": "no receipts, no SMSC latency",
            "smsgw_sync": "FULL",
            "sink": "bench/smpp_sink.js (npm smpp)",
            "placement": placement.text,
        },
    }
    harness.publish_summary(summary, LATEST)  # bench/floors.py reads Kannel's rates here
    if args.profile:
        scenario = next(s for s in SCENARIOS if s.name == args.profile)
        out = harness.BENCH_DIR / "results" / f"profile-smpp-{scenario.name}.txt"
        print(f"\n== profile: smsgw, {scenario.name}, under py-spy (not a measured run)")
        await measure("smsgw", scenario, settings, placement, root / "profile", out)
        print(f"stacks in {out.relative_to(harness.REPO)}")
        print(profile_gateway.summarize(out.read_text(), 30) if out.exists() else "no profile")
    return 1 if failures else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller N, one run each")
    p.add_argument(
        "--scenario", action="append", choices=[s.name for s in SCENARIOS], help="only these"
    )
    p.add_argument("--n", type=int, help="messages per run (default 20000, quick 4000)")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    p.add_argument(
        "--profile", choices=[s.name for s in SCENARIOS], help="then py-spy smsgw in this one"
    )
    return p.parse_args(argv)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = install_missing()
    if shutil.which("wrk") is None:
        print(f"bench: wrk is not installed; {problem}", file=sys.stderr)
        return 2
    smpp_peer.ensure_installed()  # the npm `smpp` package the sink runs on
    placement = setup_placement()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-smpp-"))
    settings = Settings.for_run(args.quick, args.n)
    print(
        f"smpp ({'quick' if args.quick else 'full'}): N={settings.n} per run,"
        f" {settings.repeats} run(s) each, alternating; wrk -t1 -c{settings.concurrency}"
        f" keep-alive; SMPP window {WINDOW}, one bind, no rate limit; {placement.text};"
        f" data in {root}"
    )
    print(f"note: {DURABILITY_NOTE}", flush=True)
    return harness.run_bench(lambda: run_all(args, placement, root), root, args.keep, RUN_TIMEOUT_S)


if __name__ == "__main__":
    raise SystemExit(main())
