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
  each submit_sm after 5 ms and sends the receipt 1 s later; window 50 on both. Each
  gateway forwards every receipt to the hospital's system, one local HTTP receiver
  (bench/receipt_receiver.py): Kannel through the sendsms `dlr-url`, smsgw through a
  `[[webhooks]]` endpoint. The rate is N over the time from the first request until the
  receiver holds N delivered receipts; also given as a fraction of the protocol cap
  (window / answer time: 50 / 5 ms = 10,000/s).
- raw: no receipts, no SMSC latency; the rate is N over the time until N submits arrived.
- batch: raw, but smsgw gets the same messages through `POST /messages/batch` (100 per
  request); compared with Kannel's raw rate (Kannel has no batch interface).
- throttle: bench/smpp_throttle.py's carrier that throttles above a rate the route does
  not know (`throttle_ratio`; null while that module is absent).

Runs alternate (Kannel, smsgw, Kannel, smsgw, ...) on fresh data each; each figure is the
median of its runs. Then the issue's targets, and the last line is one JSON object with
the ratios (`ratio`, `raw_ratio`, `batch_ratio`, `throttle_ratio`), the targets, the
servers' CPU per message and the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import inspect
import json
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import harness
import loadgen
import profile_gateway
import smpp_profile
from harness import LOOPBACK, Server
from receipt_receiver import ReceiptReceiver
from smpp_kannel import KANNEL_PASSWORD, KANNEL_USER, kannel_binaries, kannel_system
from smpp_parts import (
    BIND_TIMEOUT_S,
    POLL_S,
    STOP_GRACE_S,
    SYSTEM_ID,
    SYSTEM_PASSWORD,
    WINDOW,
    Placement,
    Scenario,
    Settings,
    Sink,
    System,
    install_missing,
    log_findings,
    log_sizes,
    process_cpu_seconds,
    say,
    setup_placement,
    smpp_peer,
    start_profiler,
    wait_for,
)

# Names other bench scripts take from here (events.py, profile_dispatch.py,
# smpp_throttle.py), wherever they are defined now.
__all__ = [
    "KANNEL_PASSWORD",
    "KANNEL_USER",
    "POLL_S",
    "STOP_GRACE_S",
    "SYSTEM_ID",
    "SYSTEM_PASSWORD",
    "WINDOW",
    "Placement",
    "Settings",
    "Sink",
    "System",
]

LATEST = harness.BENCH_DIR / "results" / "smpp-latest.json"
BATCH = 100
RUN_TIMEOUT_S = 1800.0
TOKEN_PATTERN = r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}"  # noqa: S105 - a shape, no secret
DURABILITY_NOTE = (
    "smsgw fsyncs (SQLite synchronous=FULL) every accept, every state change and every"
    " receipt before acting on it or acknowledging it; Kannel's file store is written but"
    " never fsync'd, so a crash can lose what it acknowledged."
)
# Issue 16's targets for the summary's ratios (smsgw over Kannel; batch over Kannel raw).
TARGETS = {"ratio": 1.2, "raw_ratio": 0.8, "batch_ratio": 1.5, "throttle_ratio": 1.3}

SCENARIOS = (
    Scenario("clinical", True, 5, 1000, 0, ("kannel", "smsgw"), forward=True),
    Scenario("raw", False, 0, 0, 0, ("kannel", "smsgw")),
    Scenario("batch", False, 0, 0, BATCH, ("smsgw",)),
)
THROTTLE = "throttle"  # bench/smpp_throttle.py's scenario (i16-throttle), run through it


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


# The hospital's side of the clinical scenario: its system takes every receipt over a
# webhook, as it would in production. Delivery settings a hospital that acts on receipts
# would choose: `yield_to_sends = 0`, since a receipt is what tells the ward a critical
# result reached the patient (the default 1.0 lets a lane deliver only 50 events a second
# while sends are in flight, to favour sends over events nobody waits for); the other
# [outbox] keys keep their defaults. Only `message.status` events of final states (a
# ward acts on "delivered" or "failed", not on "sending" and "sent": one request a
# message, as Kannel's dlr-mask=1 sends one), no PHI (phi = false); the endpoint's
# `concurrency` keeps its default (16 in flight, each message's events in order).
_FORWARD_CONFIG = """\
# bench/smpp.py (clinical): every receipt to the hospital's receiver, as it comes.
[outbox]
yield_to_sends = 0.0

[[webhooks]]
name = "hospital"
url = "{url}"
events = ["message.status"]
states = ["delivered", "failed", "expired"]
secret_file = "{secret_file}"
allow_loopback = true
allow_plain_http = true
"""


def forward_config(work: Path, url: str) -> str:
    """smsgw's tables for forwarding receipts to `url`, its secret written beside `work`."""
    secret = work.parent / f"{work.name}.whsec"
    secret.write_text("whsec_" + base64.b64encode(b"bench-receipts-0123456789").decode())
    secret.chmod(0o600)
    return _FORWARD_CONFIG.format(url=url, secret_file=secret)


# -- one measurement -----------------------------------------------------------------------


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
    forward: bool = False,
) -> dict[str, Any]:
    """One run. With `forward` (the clinical scenario), each system forwards its
    receipts to a receiver (bench/receipt_receiver.py) and the rate counts what arrived
    there; else what the sink saw. `before_stop`, if given, runs once the N-th message
    is done and wrk has stopped, with smsgw still up (bench/events.py waits there for its
    receivers); what it returns joins the result."""
    n = settings.n
    async with AsyncExitStack() as stack:
        sink = await stack.enter_async_context(Sink(scenario, placement, target=n))
        receiver = None
        if forward:
            receiver = await stack.enter_async_context(ReceiptReceiver(placement.client, n))
        if name == "kannel":
            dlr_url = None if receiver is None else receiver.kannel_url
            system = kannel_system(work, sink.port, placement, scenario, n, dlr_url)
        else:
            hook = "" if receiver is None else forward_config(work, receiver.webhook_url)
            extra = "\n\n".join(x.strip() for x in (extra_config, hook) if x)
            system = await smsgw_system(work, sink.port, placement, scenario, n, extra)
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
            hearer = [] if receiver is None else [receiver.pid]
            cpu0 = (process_cpu_seconds(system.pids), process_cpu_seconds(hearer))
            pid = system.pids[0]
            threads0 = harness.thread_cpu_seconds(pid)
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
            got: dict[str, Any] = {}
            if receiver is not None:
                got = await wait_for(receiver.stats, "delivered", n, t0 + settings.deadline_s)
                done = await sink.stats()
                count, stamp_ms = got["delivered"], got["target_ms"]
            else:
                done = await sink.wait_for(key, n, t0 + settings.deadline_s)
                count = done[key]
                stamp_ms = done["last_receipt_ack_ms" if scenario.receipts else "last_submit_ms"]
            elapsed = time.monotonic() - t0
            if count >= n and stamp_ms:
                # The sink's (receiver's) own clock stamps the N-th event; polling only
                # adds lag.
                elapsed = min(elapsed, stamp_ms / 1000 - t0_wall)
            cpu1 = (process_cpu_seconds(system.pids), process_cpu_seconds(hearer))
            threads1 = harness.thread_cpu_seconds(pid)
            stop_wrk.set()
            run = await wrk
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await asyncio.wait_for(spy.wait(), 60)
            after = {} if before_stop is None else await before_stop(system)
            sizes = log_sizes(system)
        finally:
            codes = await system.stop()
    server_cpu, receiver_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    completed = min(count, n)
    result: dict[str, Any] = {
        "bench": "smpp",
        "scenario": scenario.name,
        "system": name,
        "n": n,
        "completed": completed,
        "per_s": round(completed / elapsed, 1),
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
        "server_cpu_us_per_msg": round(server_cpu / max(1, completed) * 1e6, 1),
        "exit_codes": codes,
    }
    if receiver is not None:
        result.update(forwarded(got, done, n, t0_wall))
        result["receiver_cpu_us_per_msg"] = round(receiver_cpu / max(1, completed) * 1e6, 1)
    if profile is not None:
        # Per thread of the first process, by OS thread id (bench/smpp_profile.py).
        result["server_pid"] = pid
        result["thread_cpu_s"] = {
            str(pid if k == "main" else int(k.split()[1])): round(v - threads0.get(k, 0.0), 3)
            for k, v in threads1.items()
        }
    result.update(after)
    result.update(log_findings(system, sizes))
    return result


def forwarded(got: dict[str, Any], sink: dict[str, Any], n: int, t0_wall: float) -> dict[str, Any]:
    """What the receiver counted, and how far behind the sink's N-th acknowledged
    receipt its N-th arrived (the forwarding's own delay)."""
    found: dict[str, Any] = {
        "forwarded_delivered": got["delivered"],
        "forwarded_duplicates": got["duplicates"],
        "forwarded_other": got["other"],
        "forwarded_unreadable": got["bad"],
        "forward_connections": got["connections"],
    }
    if sink["target_receipt_ack_ms"]:
        found["sink_receipts_s"] = round(sink["target_receipt_ack_ms"] / 1000 - t0_wall, 2)
        if got["target_ms"]:
            lag = (got["target_ms"] - sink["target_receipt_ack_ms"]) / 1000
            found["forward_lag_s"] = round(lag, 2)
    return found


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


async def run_all(args: argparse.Namespace, placement: Placement, root: Path) -> int:
    settings = Settings.for_run(args.quick, args.n)
    kannel_problem = kannel_binaries()
    if isinstance(kannel_problem, str):
        print(json.dumps({"bench": "smpp", "system": "kannel", "error": kannel_problem}))
    failures = 0
    medians: dict[tuple[str, str], float] = {}
    cpu_medians: dict[tuple[str, str], float] = {}  # server CPU µs per message
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    for scenario in chosen:
        print(f"\n== {scenario.name}", flush=True)
        runs: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        kannel_ok = not isinstance(kannel_problem, str)
        systems = [s for s in scenario.systems if kannel_ok or s != "kannel"]
        for i in range(settings.repeats):
            for name in systems:
                work = root / f"{scenario.name}-{name}-{i}"
                try:
                    result = await measure(
                        name, scenario, settings, placement, work, forward=scenario.forward
                    )
                except (RuntimeError, OSError, TimeoutError) as e:
                    failures += 1
                    failed = {"bench": "smpp", "scenario": scenario.name, "system": name}
                    print(json.dumps({**failed, "error": str(e)}), flush=True)
                    continue
                print(json.dumps(result), flush=True)
                runs.setdefault(name, []).append(result["per_s"])
                cpus.setdefault(name, []).append(result["server_cpu_us_per_msg"])
        for name, rates in runs.items():
            medians[(scenario.name, name)] = statistics.median(rates)
            cpu_medians[(scenario.name, name)] = statistics.median(cpus[name])
    throttle: dict[str, Any] | None = None
    if not args.scenario or THROTTLE in args.scenario:
        print(f"\n== {THROTTLE} (bench/smpp_throttle.py)", flush=True)
        throttle = await run_throttle(placement, root / THROTTLE)
        failures += "error" in throttle
    if args.profile:
        scenario = next(s for s in SCENARIOS if s.name == args.profile)
        out = harness.BENCH_DIR / "results" / f"profile-smpp-{scenario.name}.txt"
        print(f"\n== profile: smsgw, {scenario.name}, under py-spy (not a measured run)")
        work = root / "profile"
        profiled = await measure(
            "smsgw", scenario, settings, placement, work, out, forward=scenario.forward
        )
        threads = {int(k): v for k, v in profiled.pop("thread_cpu_s").items()}
        print(json.dumps(profiled))
        print(f"stacks in {out.relative_to(harness.REPO)}")
        if out.exists():
            raw = out.read_text()
            # profile_gateway reads stacks without --threads' leading thread frame.
            bare = [x.partition(";")[2] if x.startswith("thread (") else x for x in raw.split("\n")]
            print(profile_gateway.summarize("\n".join(bare), 30))
            main_tid = profiled["server_pid"]  # the main thread's id is the pid
            print(smpp_profile.report(raw, threads, main_tid, profiled["completed"]))
        else:
            print("no profile")
    summary = summarize(medians, cpu_medians, throttle, settings, placement)
    print_targets(summary)
    harness.publish_summary(summary, LATEST)  # bench/floors.py reads Kannel's rates here
    return 1 if failures else 0


async def run_throttle(
    placement: Placement, work: Path, module_name: str = "smpp_throttle"
) -> dict[str, Any]:
    """The throttle scenario, which bench/smpp_throttle.py (i16-throttle) owns: its
    `run_throttle(root, placement)` (a coroutine function or a plain one; its own N and
    carrier schedules) returns a dict with `throttle_ratio`. Without that module, the
    ratio is null and says why."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        missing = {"throttle_ratio": None, "missing": f"bench/{module_name}.py is not there"}
        print(json.dumps({"bench": "smpp", "scenario": THROTTLE, **missing}), flush=True)
        return missing
    try:
        result = module.run_throttle(root=work, placement=placement)
        if inspect.isawaitable(result):
            result = await result
    except (RuntimeError, OSError, TimeoutError) as e:
        print(json.dumps({"bench": "smpp", "scenario": THROTTLE, "error": str(e)}), flush=True)
        return {"throttle_ratio": None, "error": str(e)}
    found: dict[str, Any] = dict(result)
    print(json.dumps({"bench": "smpp", "scenario": THROTTLE, **found}), flush=True)
    return found


def summarize(
    medians: dict[tuple[str, str], float],
    cpu_medians: dict[tuple[str, str], float],
    throttle: dict[str, Any] | None,
    settings: Settings,
    placement: Placement,
) -> dict[str, Any]:
    def get(scenario: str, system: str) -> float | None:
        return medians.get((scenario, system))

    clinical = next(s for s in SCENARIOS if s.name == "clinical")
    cap = clinical.protocol_cap_per_s
    assert cap is not None
    n = settings.n
    # With N messages the last receipt comes `receipt_delay_ms` after the last answer.
    cap_for_n = n / (n / cap + clinical.receipt_delay_ms / 1000)
    summary: dict[str, Any] = {
        "bench": "smpp",
        "ratio": ratio(get("clinical", "smsgw"), get("clinical", "kannel")),
        "raw_ratio": ratio(get("raw", "smsgw"), get("raw", "kannel")),
        "batch_ratio": ratio(get("batch", "smsgw"), get("raw", "kannel")),
        "throttle_ratio": None if throttle is None else throttle.get("throttle_ratio"),
        "smsgw_clinical_per_s": get("clinical", "smsgw"),
        "kannel_clinical_per_s": get("clinical", "kannel"),
        "clinical_cap_per_s": round(cap, 1),
        "clinical_cap_for_n_per_s": round(cap_for_n, 1),
        "smsgw_clinical_of_cap": ratio(get("clinical", "smsgw"), cap),
        "kannel_clinical_of_cap": ratio(get("clinical", "kannel"), cap),
        "smsgw_raw_per_s": get("raw", "smsgw"),
        "kannel_raw_per_s": get("raw", "kannel"),
        "smsgw_batch_per_s": get("batch", "smsgw"),
        # Load-independent beside the rates: the servers' CPU per message (a busy machine
        # stretches wall-clock rates, hardly these).
        "cpu_us_per_msg": {f"{sc}/{system}": v for (sc, system), v in cpu_medians.items()},
        "targets": TARGETS,
    }
    summary["met"] = {
        key: None if summary[key] is None else summary[key] >= target
        for key, target in TARGETS.items()
    }
    if throttle is not None:  # its runs were printed as it went; the figures here
        summary["throttle"] = {k: v for k, v in throttle.items() if k != "runs"}
    summary["settings"] = {
        "n": n,
        "runs_each": settings.repeats,
        "wrk_connections": settings.concurrency,
        "window": WINDOW,
        "batch": BATCH,
        "clinical": (
            f"receipt per message, submit_sm_resp after {clinical.resp_delay_ms} ms, receipt"
            f" after {clinical.receipt_delay_ms} ms, each forwarded to one HTTP receiver"
            " (Kannel dlr-url, smsgw webhook; yield_to_sends = 0); rate = N over the time"
            " until the receiver had N delivered receipts"
        ),
        "clinical_cap": f"one bind, window {WINDOW} / {clinical.resp_delay_ms} ms answer",
        "raw": "no receipts, no SMSC latency",
        "smsgw_sync": "FULL",
        "sink": "bench/smpp_sink.js (npm smpp)",
        "receiver": "bench/receipt_receiver.py (aiohttp, with wrk and the sink)",
        "placement": placement.text,
    }
    return summary


def print_targets(summary: dict[str, Any]) -> None:
    print("\nsmsgw against Kannel (issue 16's targets):")
    for key, target in TARGETS.items():
        value, met = summary[key], summary["met"][key]
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        print(f"  {key:15} {value!s:>8}  target >= {target}  {verdict}")
    if summary["smsgw_clinical_per_s"] is None and summary["kannel_clinical_per_s"] is None:
        return
    print(
        f"  clinical as a fraction of the protocol cap ({summary['clinical_cap_per_s']}/s):"
        f" smsgw {summary['smsgw_clinical_of_cap']}, Kannel {summary['kannel_clinical_of_cap']}"
        f" (N={summary['settings']['n']} can reach at most"
        f" {summary['clinical_cap_for_n_per_s']}/s: the last receipt comes"
        " after the receipt delay)",
        flush=True,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller N, one run each")
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*(s.name for s in SCENARIOS), THROTTLE],
        help="only these",
    )
    p.add_argument("--n", type=int, help="messages per run (default 20000, quick 4000)")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    p.add_argument(
        "--profile", choices=[s.name for s in SCENARIOS], help="then py-spy smsgw in this one"
    )
    return p.parse_args(argv)


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
