"""smsgw vs. Kannel, HTTP accept to SMPP submit_sm, against the same SMSC sink.

    .venv/bin/python bench/smpp_kannel.py            # full run, about 2 minutes
    .venv/bin/python bench/smpp_kannel.py --quick    # short windows, under a minute
    .venv/bin/python bench/smpp_kannel.py --profile  # then py-spy smsgw at the top load

For each concurrency (20 and 64) this runs, on fresh data each time, (a) Kannel
(bearerbox + smsbox from the Debian package, `sendsms` over HTTP GET, one SMPP smsc with
max-pending-submits = 10, no throughput limit, store-type file, log-level warning) and
(b) smsgw (`smsgw init`, then one smpp route with window = 10 and no rate). Both bind to
the same kind of sink: `drivers.smpp.simulator.SmscSimulator`, run on this script's own
event loop. wrk (keep-alive, one thread) loads each for the same warm-up and window;
accept_per_s is wrk's 2xx count over its duration, submit_per_s the sink's `submits`
counter sampled when the measured wrk run starts and ends. Delivery receipts are off on
both sides (Kannel: no dlr-mask; smsgw: `want_receipt = false` for the `normal` class
the load uses). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import aiohttp
import harness
import loadgen
import profile_gateway
from harness import LOOPBACK, Server

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway import logs

KANNEL_TEMPLATE = harness.BENCH_DIR / "kannel" / "kannel.conf.template"
SYSTEM_ID, SYSTEM_PASSWORD = "smsgw", "pw"
KANNEL_USER, KANNEL_PASSWORD = "bench", "benchpw"
WINDOW = 10
CONCURRENCIES = (20, 64)
BIND_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
RUN_TIMEOUT_S = 900.0
TOKEN_PATTERN = r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}"  # noqa: S105 - a shape, no secret
DURABILITY_NOTE = (
    "smsgw fsyncs (SQLite synchronous=FULL) every accept and every state change"
    " (sending, sent) before acting on it; Kannel's file store is written but never"
    " fsync'd, so a crash can lose what it acknowledged."
)
# Kannel logs these on a fresh store (no store, .new or .bak file yet); not a problem.
KANNEL_BENIGN = ("kannel.store", "System error 2: No such file or directory")


@dataclass(frozen=True, slots=True)
class Settings:
    warmup_s: float
    measure_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        return cls(1.0, 3.0) if quick else cls(3.0, 10.0)


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
end
""")


def kannel_script(path: Path) -> Path:
    """GET /cgi-bin/sendsms with the URL-encoded 160-character body; the recipient's
    last four digits are drawn per request (the same range as smsgw's script)."""
    query = urllib.parse.urlencode(
        {"username": KANNEL_USER, "password": KANNEL_PASSWORD, "text": loadgen.BODY_160_GSM}
    )
    to = urllib.parse.quote(loadgen.RECIPIENT_PREFIX, safe="")
    base = f"/cgi-bin/sendsms?{query}&to={to}"
    path.write_text(
        _KANNEL_LUA.substitute(base=base, last=loadgen.RECIPIENTS - 1, report=loadgen.REPORT_LUA)
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


def kannel_system(work: Path, sink_port: int, placement: Placement) -> System:
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
    return System("kannel", [bb, sb], sb.url, kannel_script(work / "kannel.lua"), logs_)


_SMSGW_EXTRA = """\
# bench/smpp_kannel.py: no delivery receipts for the class the load uses (Kannel asks
# for none either); the rest of the class as the default.
[queue.classes.normal]
expires_after = 86400.0
max_attempts = 8
min_share = 0.05
want_receipt = false

# bench/smpp_kannel.py: one SMPP route to the bench's sink, window 10, no rate.
[[routes]]
name = "sink"
type = "smpp"
host = "127.0.0.1"
port = {port}
system_id = "{system_id}"
password = "{password}"
window = {window}
"""


async def smsgw_system(work: Path, sink_port: int, placement: Placement) -> System:
    home = await harness.init_gateway(work)
    if not re.fullmatch(TOKEN_PATTERN, home.token):
        raise RuntimeError(f"smsgw init printed no token: {home.token!r}")
    config = home.config_path.read_text()
    head, _, _ = config.partition("[[routes]]")
    home.config_path.write_text(
        head.rstrip()
        + "\n\n"
        + _SMSGW_EXTRA.format(
            port=sink_port, system_id=SYSTEM_ID, password=SYSTEM_PASSWORD, window=WINDOW
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
    script = loadgen.write_script(work.parent / f"{work.name}.lua", home.token)
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


async def wait_bound(sink: SmscSimulator, system: System) -> None:
    try:
        await asyncio.wait_for(sink.wait_until(lambda: sink.binds >= 1), BIND_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(f"{system.name} did not bind to the sink in time") from None


async def measure(
    name: str, concurrency: int, settings: Settings, placement: Placement, work: Path
) -> dict[str, Any]:
    config = SimulatorConfig(
        port=0, system_id=SYSTEM_ID, password=SYSTEM_PASSWORD, receipt_delay=3600.0
    )
    async with SmscSimulator(config) as sink:
        if name == "kannel":
            system = kannel_system(work, sink.port, placement)
        else:
            system = await smsgw_system(work, sink.port, placement)
        say(f"{name}, c={concurrency}: starting (sink on port {sink.port})")
        await system.start()
        try:
            await wait_bound(sink, system)
            warm = await loadgen.run_wrk(
                placement.client, system.url, system.script, concurrency, settings.warmup_s
            )
            t0, s0 = time.monotonic(), sink.submits
            cpu0 = (process_cpu_seconds(system.pids), self_cpu_seconds(), children_cpu_seconds())
            run = await loadgen.run_wrk(
                placement.client, system.url, system.script, concurrency, settings.measure_s
            )
            t1, s1 = time.monotonic(), sink.submits
            cpu1 = (process_cpu_seconds(system.pids), self_cpu_seconds(), children_cpu_seconds())
            sizes = log_sizes(system)
        finally:
            codes = await system.stop()
        window = t1 - t0
        server_cpu, sink_cpu, wrk_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
        accepted = warm.ok + run.ok
        result: dict[str, Any] = {
            "bench": "smpp_e2e",
            "system": name,
            "concurrency": concurrency,
            "accept_per_s": round(run.ok_per_s, 1),
            "submit_per_s": round((s1 - s0) / window, 1),
            "window_s": round(window, 2),
            "accepted": run.ok,
            "submitted": s1 - s0,
            "backlog_at_end": accepted - s1,  # accepted (warm-up too) not yet submitted
            "non_2xx": run.bad,
            "socket_errors": run.socket_errors,
            "p50_ms": round(run.p50_ms, 1),
            "p99_ms": round(run.p99_ms, 1),
            "server_cpu": round(server_cpu / window, 2),
            "sink_cpu": round(sink_cpu / window, 2),
            "wrk_cpu": round(wrk_cpu / window, 2),
            "exit_codes": codes,
        }
    result.update(log_findings(system, sizes))
    return result


# -- profiling smsgw (optional) ------------------------------------------------------------


async def profile_smsgw(
    concurrency: int, settings: Settings, placement: Placement, work: Path
) -> str:
    """py-spy on smsgw under the same load; the top frames (not a measured run)."""
    config = SimulatorConfig(
        port=0, system_id=SYSTEM_ID, password=SYSTEM_PASSWORD, receipt_delay=3600.0
    )
    out = harness.BENCH_DIR / "results" / f"profile-smpp-smsgw-c{concurrency}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    async with SmscSimulator(config) as sink:
        system = await smsgw_system(work, sink.port, placement)
        await system.start()
        try:
            await wait_bound(sink, system)
            await loadgen.run_wrk(
                placement.client, system.url, system.script, concurrency, settings.warmup_s
            )
            seconds = round(settings.measure_s)
            spy = await asyncio.create_subprocess_exec(
                *placement.client,
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(system.pids[0]),
                "--rate",
                "250",
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await loadgen.run_wrk(placement.client, system.url, system.script, concurrency, seconds)
            await asyncio.wait_for(spy.wait(), seconds + 30)
        finally:
            await system.stop()
    text = profile_gateway.summarize(out.read_text(), 25) if out.exists() else "no profile"
    return f"stacks in {out.relative_to(harness.REPO)}\n{text}"


# -- main ----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


async def run_all(args: argparse.Namespace, placement: Placement, root: Path) -> int:
    settings = Settings.for_run(args.quick)
    kannel_problem = kannel_binaries()
    kannel_ok = not isinstance(kannel_problem, str)
    if isinstance(kannel_problem, str):
        print(json.dumps({"bench": "smpp_e2e", "system": "kannel", "error": kannel_problem}))
    failures = 0
    for c in CONCURRENCIES:
        print(f"\n== c={c}", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for name in ("kannel", "smsgw") if kannel_ok else ("smsgw",):
            try:
                results[name] = await measure(name, c, settings, placement, root / f"{name}-c{c}")
            except (RuntimeError, OSError, TimeoutError) as e:
                failures += 1
                error = {"bench": "smpp_e2e", "system": name, "concurrency": c, "error": str(e)}
                print(json.dumps(error), flush=True)
                continue
            print(json.dumps(results[name]), flush=True)
        if len(results) == 2:
            k, s = results["kannel"], results["smsgw"]
            line = {
                "bench": "smpp_vs_kannel",
                "concurrency": c,
                "accept_ratio": ratio(s["accept_per_s"], k["accept_per_s"]),
                "submit_ratio": ratio(s["submit_per_s"], k["submit_per_s"]),
            }
            print(json.dumps(line), flush=True)
    if args.profile:
        c = max(CONCURRENCIES)
        print(f"\n== profile: smsgw under py-spy, c={c} (not a measured run)", flush=True)
        print(await profile_smsgw(c, settings, placement, root / "profile"), flush=True)
    return 1 if failures else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows")
    p.add_argument("--profile", action="store_true", help="py-spy smsgw afterwards")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        print("bench: --profile needs py-spy (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    logs.configure(format="console", level="warning")  # the sink's info lines stay out
    placement = setup_placement()
    root = Path(tempfile.mkdtemp(prefix="smsgw-smpp-kannel-"))
    settings = Settings.for_run(args.quick)
    print(
        f"smpp_e2e ({'quick' if args.quick else 'full'}): warm-up {settings.warmup_s:g} s,"
        f" window {settings.measure_s:g} s, wrk -t1 keep-alive, SMPP window {WINDOW},"
        f" no rate limit, no receipts; {placement.text}; data in {root}"
    )
    print(f"note: {DURABILITY_NOTE}", flush=True)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(asyncio.wait_for(run_all(args, placement, root), RUN_TIMEOUT_S))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
