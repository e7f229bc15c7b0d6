"""smsgw vs. Kannel against a carrier that throttles: issue 16, point 4.

    .venv/bin/python bench/smpp_throttle.py             # N=3,000: 200/s, then 200 -> 50 -> 300/s
    .venv/bin/python bench/smpp_throttle.py --quick     # N=1,000, the steady carrier only

The SMSC is bench/smpp_sink_throttle.js (npm `smpp`, code neither side wrote): a token
bucket accepting the scheduled rate (saving up a second of it, `--burst-ms`) and
answering the excess with ESME_RTHROTTLED. Neither system is told the carrier's rate:
one SMPP bind, window 50, no rate configured (Kannel: no `throughput`; smsgw: no
`rate`). Each system gets N messages as fast as it takes them (smsgw: `POST
/messages/batch`, 100 a request; Kannel: `sendsms`, 32 at once), each with its own text
so the sink can tell how long a throttled message waited until the carrier accepted it.

Reported per system: the rate (N over the time from the sink's first submit to its N-th
accept) and that as a fraction of the carrier's (what the schedule would have let
through in the same time), and the rate before its first stall of 5 s (Kannel retries
what was throttled a minute later); the time from the first throttle until a one-second window
reaches 0.9 of the carrier's rate; the lowest one-second window after that (held); and
the longest a throttled message waited. `throttle_ratio` = smsgw's rate (all N) /
Kannel's before its stall, on the steady carrier. Runs are short (seconds) and
alternate Kannel, smsgw.

`run_throttle(...)` runs one schedule for the given systems and returns the figures;
bench/smpp.py imports it for its summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import harness
import loadgen
import smpp
from jsonline_child import JsonLineChild

SINK_JS = harness.BENCH_DIR / "smpp_sink_throttle.js"
LATEST = harness.BENCH_DIR / "results" / "smpp-throttle-latest.json"
STEADY = ((0.0, 200.0),)
CHANGING = ((0.0, 200.0), (5.0, 50.0), (10.0, 300.0))
BURST_MS = 1000  # the carrier saves up a second of its rate (as the sink did)
BATCH = 100
STALL_S = 5.0
KANNEL_CONCURRENCY = 32
RUN_TIMEOUT_S = 900.0
NOT_THROTTLING = smpp.Scenario("throttle", False, 0, 0, BATCH, ("kannel", "smsgw"))


class ThrottlingSink(JsonLineChild):
    """bench/smpp_sink_throttle.js in a node process; its figures on demand."""

    name = "throttling SMPP sink"
    start_timeout_s = smpp.BIND_TIMEOUT_S
    stop_grace_s = smpp.STOP_GRACE_S

    def __init__(
        self, schedule: Sequence[tuple[float, float]], prefix: tuple[str, ...], burst_ms: int
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.burst_ms = burst_ms
        self.prefix = prefix

    async def __aenter__(self) -> ThrottlingSink:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed (make peers installs it)")
        steps = ",".join(f"{t:g}:{r:g}" for t, r in self.schedule)
        await self.start(
            *self.prefix,
            node,
            str(SINK_JS),
            "--system-id",
            smpp.SYSTEM_ID,
            "--password",
            smpp.SYSTEM_PASSWORD,
            "--schedule",
            steps,
            "--burst-ms",
            str(self.burst_ms),
            env={**os.environ, "NODE_PATH": str(smpp.smpp_peer.NODE_MODULES)},
        )
        return self

    async def stats(self, detail: bool = False) -> dict[str, Any]:
        return await self.command("detail" if detail else "stats")


def carrier_rate(schedule: Sequence[tuple[float, float]], t: float) -> float:
    rate = schedule[0][1]
    for start, r in schedule:
        if t >= start:
            rate = r
    return rate


def carrier_allows(schedule: Sequence[tuple[float, float]], seconds: float, burst_ms: int) -> float:
    """Messages the carrier's schedule lets through in `seconds`: its first burst, then
    its rate's integral."""
    total = schedule[0][1] * burst_ms / 1000
    for i, (start, rate) in enumerate(schedule):
        end = schedule[i + 1][0] if i + 1 < len(schedule) else seconds
        total += max(0.0, min(end, seconds) - start) * rate
    return total


def figures(
    accepted_ms: list[int], first_throttle_ms: int | None, schedule: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """Time to 0.9 of the carrier's rate after the first throttle, and the lowest
    one-second window after it (each against the carrier's rate at that time)."""
    times = sorted(t / 1000 for t in accepted_ms)
    if not times or first_throttle_ms is None:
        return {"to_0_9_s": None, "held_min": None}
    end = times[-1]
    schedule = list(schedule)
    first = first_throttle_ms / 1000

    def window_share(t: float) -> float:  # accepts in [t, t + 1) over the rate at t + 1
        lo = next((i for i, x in enumerate(times) if x >= t), len(times))
        hi = next((i for i, x in enumerate(times) if x >= t + 1), len(times))
        return (hi - lo) / carrier_rate(schedule, t + 1)

    starts = [first + k * 0.1 for k in range(int((end - 1 - first) / 0.1) + 1)]
    reached = next((t + 1 for t in starts if window_share(t) >= 0.9), None)
    per_second = [sum(1 for x in times if k <= x < k + 1) for k in range(int(end) + 1)]
    # Before the first pause of STALL_S with nothing accepted (Kannel's retries of what
    # was throttled come a minute later): the rate while it was sending.
    stall = next((i for i in range(1, len(times)) if times[i] - times[i - 1] > STALL_S), None)
    sent = times if stall is None else times[:stall]
    first_pass = {
        "first_pass_n": len(sent),
        "first_pass_per_s": round(len(sent) / max(sent[-1], 1e-3), 1),
    }
    if reached is None:
        return {**first_pass, "per_second": per_second, "to_0_9_s": None, "held_min": None}
    # held: every later one-second window, except those straddling a change of the
    # carrier's rate (the rate then takes time to find again; that is reported apart)
    changes = [s for s, _ in schedule[1:]]
    later = [
        window_share(t)
        for t in starts
        if t >= reached and not any(c - 1 < t < c + 10 for c in changes)
    ]
    phases = []
    for i, (start, r) in enumerate(schedule):
        stop = min(schedule[i + 1][0] if i + 1 < len(schedule) else end, end)
        if stop > start:
            got = sum(1 for x in times if start <= x < stop)
            phases.append(round(got / (r * (stop - start)), 3))
    return {
        **first_pass,
        "per_second": per_second,
        "to_0_9_s": round(reached - first, 2),
        "held_min": round(min(later), 3) if later else None,
        "of_carrier_per_phase": phases,
    }


async def _load_smsgw(url: str, token: str, n: int, tag: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for first in range(0, n, BATCH):
            items = [
                {
                    "to": f"{loadgen.RECIPIENT_PREFIX}{i % loadgen.RECIPIENTS:04d}",
                    "body": f"{tag} {i:06d}",
                }
                for i in range(first, min(n, first + BATCH))
            ]
            async with session.post(f"{url}/api/v1/messages/batch", json={"messages": items}) as r:
                if r.status >= 300:
                    raise RuntimeError(f"smsgw refused a batch: {r.status} {await r.text()}")


async def _smsgw_route(system: smpp.System) -> dict[str, Any]:
    """The route as `GET /routes` shows it: its rate now and the discovered one."""
    found = re.search(smpp.TOKEN_PATTERN, system.script.read_text())
    assert found is not None, "no token in the smsgw load script"
    headers = {"Authorization": f"Bearer {found.group(0)}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{system.url}/api/v1/routes") as r,
    ):
        routes: list[dict[str, Any]] = (await r.json())["routes"]
    return routes[0]


async def _load_kannel(url: str, n: int, tag: str) -> None:
    queue = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in queue:
            params = {
                "username": smpp.KANNEL_USER,
                "password": smpp.KANNEL_PASSWORD,
                "to": f"{loadgen.RECIPIENT_PREFIX}{i % loadgen.RECIPIENTS:04d}",
                "text": f"{tag} {i:06d}",
            }
            query = urllib.parse.urlencode(params)
            async with session.get(f"{url}/cgi-bin/sendsms?{query}") as r:
                if r.status >= 300:
                    raise RuntimeError(f"Kannel refused a send: {r.status}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(KANNEL_CONCURRENCY)))


async def run_one(
    name: str,
    schedule: Sequence[tuple[float, float]],
    n: int,
    placement: smpp.Placement,
    work: Path,
    deadline_s: float,
    burst_ms: int = BURST_MS,
) -> dict[str, Any]:
    """One system against one throttling carrier; its figures."""
    async with ThrottlingSink(schedule, placement.client, burst_ms) as sink:
        if name == "kannel":
            system = smpp.kannel_system(work, sink.port, placement, NOT_THROTTLING, n)
        else:
            system = await smpp.smsgw_system(work, sink.port, placement, NOT_THROTTLING, n)
        smpp.say(f"throttle {list(schedule)}: {name} starting (sink on port {sink.port})")
        await system.start()
        try:
            t0 = time.monotonic()
            while (await sink.stats())["binds"] < 1:
                if time.monotonic() - t0 > smpp.BIND_TIMEOUT_S:
                    raise RuntimeError(f"{name} did not bind to the sink in time")
                await asyncio.sleep(smpp.POLL_S)
            tag = f"thr-{name}"
            if name == "kannel":
                load = _load_kannel(system.url, n, tag)
            else:
                found = re.search(smpp.TOKEN_PATTERN, system.script.read_text())
                assert found is not None, "no token in the smsgw load script"
                load = _load_smsgw(system.url, found.group(0), n, tag)
            loader = asyncio.create_task(load)
            cpu0 = smpp.process_cpu_seconds(system.pids)
            t0 = time.monotonic()
            while True:
                stats = await sink.stats()
                if stats["accepted"] >= n or time.monotonic() - t0 > deadline_s:
                    break
                if loader.done() and loader.exception() is not None:
                    raise RuntimeError(f"loading {name} failed") from loader.exception()
                await asyncio.sleep(0.1)
            await loader
            detail = await sink.stats(detail=True)
            cpu = smpp.process_cpu_seconds(system.pids) - cpu0
            route = await _smsgw_route(system) if name == "smsgw" else {}
        finally:
            codes = await system.stop()
    elapsed = max(1e-3, (detail["last_accept_ms"] - detail["first_submit_ms"]) / 1000)
    done = min(detail["accepted"], n)
    allowed = carrier_allows(schedule, elapsed, burst_ms)
    return {
        "system": name,
        "n": n,
        "completed": done,
        "per_s": round(done / elapsed, 1),
        "of_carrier": round(done / allowed, 3) if allowed else None,
        "elapsed_s": round(elapsed, 2),
        "throttled_submits": detail["throttled"],
        "throttled_messages": detail["throttled_messages"],
        "max_wait_s": round(max(detail["max_wait_ms"], detail["longest_waiting_ms"]) / 1000, 2),
        **figures(detail["accepted_at"], detail["first_throttle_ms"], schedule),
        "server_cpu_ms_per_msg": round(1000 * cpu / max(1, done), 3),
        "route_rate": route.get("rate"),
        "discovered_rate": route.get("discovered_rate"),
        "exit_codes": codes,
    }


async def run_throttle(
    root: Path,
    placement: smpp.Placement | None = None,
    *,
    n: int = 3000,
    schedules: Sequence[Sequence[tuple[float, float]]] = (STEADY, CHANGING),
    systems: Sequence[str] = ("kannel", "smsgw"),
    deadline_s: float = 300.0,
    burst_ms: int = BURST_MS,
) -> dict[str, Any]:
    """Every system against every schedule (alternating systems); the figures and
    `throttle_ratio` (smsgw's rate over Kannel's on the first schedule)."""
    placement = placement or smpp.setup_placement()
    runs: list[dict[str, Any]] = []
    for k, schedule in enumerate(schedules):
        for name in systems:
            work = root / f"{name}-{k}"
            result = await run_one(name, schedule, n, placement, work, deadline_s, burst_ms)
            result["schedule"] = [list(step) for step in schedule]
            smpp.say(json.dumps(result))
            runs.append(result)

    def rate(system: str) -> float | None:
        """smsgw: all N over the time to the N-th; Kannel, to its favour: the rate before
        it stalled (its throttled messages wait a minute for a retry)."""
        first = [list(step) for step in schedules[0]]
        key = "per_s" if system == "smsgw" else "first_pass_per_s"
        found = [r.get(key) for r in runs if r["system"] == system and r["schedule"] == first]
        return found[0] if found else None

    smsgw = [r for r in runs if r["system"] == "smsgw"]
    return {
        "bench": "smpp_throttle",
        "n": n,
        "burst_ms": burst_ms,
        "throttle_ratio": smpp.ratio(rate("smsgw"), rate("kannel")),
        "smsgw_of_carrier": smsgw[0]["of_carrier"] if smsgw else None,
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N=1,000, the steady carrier only")
    p.add_argument("--n", type=int, help="messages per run (default 3,000; quick 1,000)")
    p.add_argument("--system", action="append", choices=["kannel", "smsgw"], help="only these")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    p.add_argument("--burst-ms", type=int, default=BURST_MS, help="the carrier's bucket, in ms")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds a run may take")
    args = p.parse_args(argv)
    smpp.smpp_peer.ensure_installed()
    placement = smpp.setup_placement()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-throttle-"))
    n = args.n or (1000 if args.quick else 3000)
    schedules = (STEADY,) if args.quick else (STEADY, CHANGING)
    systems = tuple(args.system or ("kannel", "smsgw"))
    if "kannel" in systems and isinstance(smpp.kannel_binaries(), str):
        print(f"bench: {smpp.kannel_binaries()}; smsgw only", file=sys.stderr)
        systems = ("smsgw",)
    print(
        f"smpp_throttle: N={n}; carrier schedules {[list(s) for s in schedules]} (s: msgs/s),"
        f" burst {args.burst_ms} ms; one bind, window {smpp.WINDOW}, no rate configured;"
        f" {placement.text}; data in {root}",
        flush=True,
    )

    async def go() -> int:
        summary = await run_throttle(
            root,
            placement,
            n=n,
            schedules=schedules,
            systems=systems,
            deadline_s=args.deadline,
            burst_ms=args.burst_ms,
        )
        harness.publish_summary(summary, LATEST)
        return 0

    return harness.run_bench(go, root, args.keep, RUN_TIMEOUT_S)


if __name__ == "__main__":
    raise SystemExit(main())
