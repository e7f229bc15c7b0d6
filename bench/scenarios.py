"""The six benchmarks. Each starts its own servers on fresh data and stops them.

accept    durable single sends through the gateway vs. the raw ceiling, per concurrency
latency   accept p50/p99 at 64 clients (from the gateway's accept run at c=64)
batch     messages/s through `POST /api/v1/messages/batch`, 500 per request
drain     messages/s the scheduler pushes through an unlimited loopback route
rate      the send rate of a route limited to 100/s, against its configuration
priority  accept-to-sending time of critical messages behind a bulk backlog
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import client
import harness
import loadgen
from harness import GatewayHome, Pinning, RouteSpec, Server

# Accept and batch runs must not dispatch: the scheduler would steal the server's CPU.
# A rate of 0.001/s lets the route send its one burst token, then nothing for 1000 s.
NO_DISPATCH = RouteSpec(rate=0.001, burst=1)
DRAIN_ROUTE = RouteSpec(rate=None, window=1000, latency=0.0, receipt_delay=3600.0)
RATE_ROUTE = RouteSpec(rate=100.0, burst=10, window=20, latency=0.01, receipt_delay=3600.0)
PRIORITY_ROUTE = RouteSpec(rate=50.0, burst=1, window=10, latency=0.0, receipt_delay=3600.0)
LATENCY_CONCURRENCY = 64
POLL_S = 0.1
DRAIN_TIMEOUT_S = 180.0
PRIORITY_SETTLE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    warmup_s: float
    measure_s: float
    concurrencies: tuple[int, ...]
    batch_clients: int
    batch_size: int
    drain_messages: int
    rate_preload: int
    rate_settle_s: float
    rate_window_s: float
    priority_bulk: int
    priority_critical: int
    priority_gap_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        return cls(
            quick=quick,
            warmup_s=1 if quick else 2,
            measure_s=2 if quick else 8,
            concurrencies=(16, 64, 256),
            batch_clients=4,
            batch_size=client.BATCH_SIZE,
            drain_messages=5_000 if quick else 20_000,
            rate_preload=2_000 if quick else 7_000,
            rate_settle_s=1 if quick else 2,
            rate_window_s=10 if quick else 60,
            priority_bulk=20_000 if quick else 100_000,
            priority_critical=50 if quick else 200,
            priority_gap_s=0.02,
        )


@dataclass
class Context:
    settings: Settings
    pinning: Pinning
    root: Path
    results: list[dict[str, Any]] = field(default_factory=list)

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report(self, result: dict[str, Any]) -> None:
        """Record a benchmark's result and print it as its closing JSON line."""
        self.results.append(result)
        print(json.dumps(result), flush=True)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


LOG_MARKERS = ('"level": "warning"', '"level": "error"', "Traceback", " ERROR ", " WARNING ")


def log_check(log_path: Path, prefix: str = "") -> dict[str, Any]:
    """How many lines of a server's log are warnings or worse, and the first of them."""
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    problems = [line for line in lines if any(m in line for m in LOG_MARKERS)]
    found: dict[str, Any] = {f"{prefix}log_problems": len(problems)}
    if problems:
        found[f"{prefix}log_first_problem"] = problems[0][:300]
    return found


# -- loading one server with wrk -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """A measured wrk run, plus what the whole session (warm-up included) committed."""

    run: loadgen.WrkResult
    acknowledged: int
    cpu: harness.CpuUse
    exit_code: int | None

    def cpu_fields(self, prefix: str = "") -> dict[str, float]:
        main_us, threads_us = self.cpu.per_item_us(self.run.messages)
        return {
            f"{prefix}server_cpu": round(self.cpu.utilisation, 2),
            f"{prefix}loop_us_per_msg": round(main_us, 1),
            f"{prefix}threads_us_per_msg": round(threads_us, 1),
            f"{prefix}foreign_cpu_s": round(self.cpu.foreign_s, 2),
        }


async def load_with_wrk(ctx: Context, server: Server, script: Path, connections: int) -> Loaded:
    """Start `server`, warm it up, measure, stop it (always)."""
    s = ctx.settings
    await server.start()
    try:
        warm = await loadgen.run_wrk(
            ctx.pinning.client, server.url, script, connections, s.warmup_s
        )
        before = harness.CpuSnapshot.take(server.pid)
        run = await loadgen.run_wrk(
            ctx.pinning.client, server.url, script, connections, s.measure_s
        )
        cpu = before.until(harness.CpuSnapshot.take(server.pid))
    finally:
        code = await server.stop()
    return Loaded(run, warm.messages + run.messages, cpu, code)


def durability(db_path: Path, loaded: Loaded) -> dict[str, Any]:
    """Rows in the stopped server's database against the 2xx it answered."""
    rows = harness.count_messages(db_path)
    return {
        "rows": rows,
        "acknowledged": loaded.acknowledged,
        "durable": rows >= loaded.acknowledged,
    }


# -- 1 + 3: accept and latency --------------------------------------------------------------


async def accept(ctx: Context) -> None:
    gateway_at_64: loadgen.WrkResult | None = None
    for connections in ctx.settings.concurrencies:
        result, gateway_run = await accept_at(ctx, connections)
        ctx.report(result)
        if connections == LATENCY_CONCURRENCY:
            gateway_at_64 = gateway_run
    if gateway_at_64 is not None:
        ctx.report(latency_result(gateway_at_64))


async def accept_at(ctx: Context, connections: int) -> tuple[dict[str, Any], loadgen.WrkResult]:
    say(f"accept, c={connections}: raw ceiling")
    work = ctx.workdir(f"accept-c{connections}")
    ceiling = harness.ceiling_server(work / "ceiling", ctx.pinning)
    home = await harness.init_gateway(work / "gateway")
    script = loadgen.write_script(work / "send.lua", home.token)
    raw = await load_with_wrk(ctx, ceiling, script, connections)
    ceiling_check = durability(work / "ceiling" / "ceiling.db", raw)
    say(f"accept, c={connections}: gateway ({NO_DISPATCH.describe()})")
    server = harness.gateway_server(home, NO_DISPATCH, ctx.pinning, "gateway")
    gw = await load_with_wrk(ctx, server, script, connections)
    check = durability(home.db_path, gw)
    say(
        f"gateway {gw.run.ok_per_s:,.0f}/s (server CPU {gw.cpu.utilisation:.0%}),"
        f" ceiling {raw.run.ok_per_s:,.0f}/s (server CPU {raw.cpu.utilisation:.0%}),"
        f" rows {check['rows']} >= 2xx {check['acknowledged']}: {check['durable']}"
    )
    result = {
        "bench": "accept",
        "concurrency": connections,
        "gateway_per_s": round(gw.run.ok_per_s, 1),
        "ceiling_per_s": round(raw.run.ok_per_s, 1),
        "ratio": round(gw.run.ok_per_s / raw.run.ok_per_s, 3),
        "gateway_p50_ms": gw.run.p50_ms,
        "gateway_p99_ms": gw.run.p99_ms,
        "ceiling_p50_ms": raw.run.p50_ms,
        "ceiling_p99_ms": raw.run.p99_ms,
        **gw.cpu_fields("gateway_"),
        **raw.cpu_fields("ceiling_"),
        "gateway_non_2xx": gw.run.bad,
        "socket_errors": gw.run.socket_errors + raw.run.socket_errors,
        **{f"gateway_{k}": v for k, v in check.items()},
        "ceiling_durable": ceiling_check["durable"],
        **log_check(server.log_path, "gateway_"),
        "route": NO_DISPATCH.describe(),
        "seconds": round(gw.run.duration_s, 2),
    }
    return result, gw.run


def latency_result(run: loadgen.WrkResult) -> dict[str, Any]:
    return {
        "bench": "latency",
        "concurrency": LATENCY_CONCURRENCY,
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "p90_ms": run.p90_ms,
        "max_ms": run.max_ms,
        "per_s": round(run.ok_per_s, 1),
        "source": f"wrk --latency of the gateway accept run at c={LATENCY_CONCURRENCY}",
    }


# -- 2: batch ------------------------------------------------------------------------------


async def batch(ctx: Context) -> None:
    s = ctx.settings
    work = ctx.workdir("batch")
    home = await harness.init_gateway(work / "gateway")
    script = loadgen.write_script(work / "batch.lua", home.token, batch=s.batch_size)
    say(f"batch: {s.batch_clients} clients x {s.batch_size} messages ({NO_DISPATCH.describe()})")
    server = harness.gateway_server(home, NO_DISPATCH, ctx.pinning, "gateway")
    loaded = await load_with_wrk(ctx, server, script, s.batch_clients)
    check = durability(home.db_path, loaded)
    ctx.report(
        {
            "bench": "batch",
            "messages_per_s": round(loaded.run.messages_per_s, 1),
            "batch_size": s.batch_size,
            "clients": s.batch_clients,
            "requests_per_s": round(loaded.run.ok_per_s, 2),
            "p50_ms": loaded.run.p50_ms,
            "p99_ms": loaded.run.p99_ms,
            **loaded.cpu_fields(),
            "non_2xx": loaded.run.bad,
            **check,
            **log_check(server.log_path),
            "route": NO_DISPATCH.describe(),
        }
    )


# -- 4: drain ------------------------------------------------------------------------------


async def drain(ctx: Context) -> None:
    n = ctx.settings.drain_messages
    home = await harness.init_gateway(ctx.workdir("drain") / "gateway")
    say(f"drain: preloading {n:,} messages with the route held ({NO_DISPATCH.describe()})")
    await preload_and_stop(ctx, home, n, "normal")
    say(f"drain: restarting with {DRAIN_ROUTE.describe()}")
    server = harness.gateway_server(home, DRAIN_ROUTE, ctx.pinning, "gateway-drain")
    started = time.time()
    await server.start()
    try:
        async with client.Api(server.url, home.token) as api:
            await wait_idle(api, DRAIN_TIMEOUT_S)
        wall = time.time() - started
    finally:
        await server.stop()
    sent, first_sending, last_sent = harness.query_one(
        home.db_path,
        "SELECT count(*), (SELECT min(at) FROM message_events WHERE state = 'sending'"
        " AND at >= ?1), max(at) FROM message_events WHERE state = 'sent' AND at >= ?1",
        (started,),
    )
    span = float(last_sent) - float(first_sending)
    ctx.report(
        {
            "bench": "drain",
            "messages": int(sent),
            "per_s": round(int(sent) / span, 1),
            "span_s": round(span, 3),
            "wall_s_incl_start": round(wall, 2),
            **log_check(server.log_path),
            "route": DRAIN_ROUTE.describe(),
            "timing": "first 'sending' to last 'sent' event after the restart",
        }
    )


async def preload_and_stop(ctx: Context, home: GatewayHome, total: int, priority: str) -> None:
    server = harness.gateway_server(home, NO_DISPATCH, ctx.pinning, "gateway-preload")
    await server.start()
    try:
        async with client.Api(server.url, home.token) as api:
            seconds = await api.preload(total, priority)
    finally:
        await server.stop()
    say(f"preloaded {total:,} in {seconds:.1f} s ({total / seconds:,.0f}/s)")


async def wait_idle(api: client.Api, limit_s: float) -> None:
    """Poll the queue until nothing is queued, sending or in flight (at most `limit_s`)."""
    async with asyncio.timeout(limit_s):
        while True:
            if (await api.queue()).idle:
                return
            await asyncio.sleep(POLL_S)


# -- 5: rate -------------------------------------------------------------------------------


async def rate(ctx: Context) -> None:
    s = ctx.settings
    home = await harness.init_gateway(ctx.workdir("rate") / "gateway")
    server = harness.gateway_server(home, RATE_ROUTE, ctx.pinning, "gateway")
    say(f"rate: {RATE_ROUTE.describe()}; preload {s.rate_preload:,}, window {s.rate_window_s:g} s")
    await server.start()
    try:
        async with client.Api(server.url, home.token) as api:
            await api.preload(s.rate_preload, "normal")
            await asyncio.sleep(s.rate_settle_s)
            samples = await sample_sent(api, RATE_ROUTE.name, s.rate_window_s)
            backlog = (await api.queue()).queued
    finally:
        await server.stop()
    configured = float(RATE_ROUTE.rate or 0)
    measured = window_rate(samples[0], samples[-1])
    worst = max(
        (abs(window_rate(a, b) - configured) for a, b in ten_second_windows(samples)), default=0.0
    )
    ctx.report(
        {
            "bench": "rate",
            "configured": configured,
            "measured_per_s": round(measured, 2),
            "error_pct": round(100 * (measured - configured) / configured, 2) or 0.0,
            "window_s": round(samples[-1][0] - samples[0][0], 2),
            "worst_10s_error_pct": round(100 * worst / configured, 2),
            "backlog_left": backlog,
            **log_check(server.log_path),
            "route": RATE_ROUTE.describe(),
        }
    )


Sample = tuple[float, int]


async def sample_sent(api: client.Api, route: str, window_s: float) -> list[Sample]:
    """(monotonic time, sent count) once a second over the window, both ends included."""
    start = time.monotonic()
    samples: list[Sample] = []
    for tick in range(int(window_s) + 1):
        await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
        before = time.monotonic()
        count = await api.sent_count(route)
        samples.append(((before + time.monotonic()) / 2, count))
    return samples


def window_rate(first: Sample, last: Sample) -> float:
    return (last[1] - first[1]) / (last[0] - first[0])


def ten_second_windows(samples: list[Sample]) -> list[tuple[Sample, Sample]]:
    return [(samples[i], samples[i + 10]) for i in range(0, len(samples) - 10, 10)]


# -- 6: priority ---------------------------------------------------------------------------


async def priority(ctx: Context) -> None:
    s = ctx.settings
    home = await harness.init_gateway(ctx.workdir("priority") / "gateway")
    server = harness.gateway_server(home, PRIORITY_ROUTE, ctx.pinning, "gateway")
    say(f"priority: {PRIORITY_ROUTE.describe()}; preload {s.priority_bulk:,} bulk")
    await server.start()
    try:
        async with client.Api(server.url, home.token) as api:
            seconds = await api.preload(s.priority_bulk, "bulk")
            say(f"preloaded {s.priority_bulk:,} bulk in {seconds:.1f} s")
            bulk_queued = (await api.queue()).bulk_queued
            ids = await post_critical(api, s.priority_critical, s.priority_gap_s)
            delays = await sending_delays(api, ids)
            bulk_left = (await api.queue()).bulk_queued
    finally:
        await server.stop()
    ctx.report(
        {
            "bench": "priority",
            "bulk_queued": bulk_queued,
            "critical": len(delays),
            "p50_ms": round(percentile(delays, 50), 1),
            "p99_ms": round(percentile(delays, 99), 1),
            "max_ms": round(max(delays), 1),
            "mean_ms": round(sum(delays) / len(delays), 1),
            "bulk_left": bulk_left,
            **log_check(server.log_path),
            "route": PRIORITY_ROUTE.describe(),
            "timing": "events: 'sending' at minus 'queued' at (ms resolution)",
        }
    )


async def post_critical(api: client.Api, count: int, gap_s: float) -> list[str]:
    rng = random.Random(2)
    ids = []
    for _ in range(count):
        ids.append(await api.send(client.message("critical", rng, "emergency")))
        await asyncio.sleep(gap_s)
    return ids


async def sending_delays(api: client.Api, ids: list[str]) -> list[float]:
    """Milliseconds from `queued` to `sending` per message, waiting (bounded) for each."""
    deadline = time.monotonic() + PRIORITY_SETTLE_TIMEOUT_S
    delays = []
    for message_id in ids:
        while True:
            events = first_events(await api.message(message_id))
            if "sending" in events:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"critical message {message_id} never left the queue")
            await asyncio.sleep(POLL_S)
        delays.append(1000 * (events["sending"] - events["queued"]))
    return delays


def first_events(view: dict[str, Any]) -> dict[str, float]:
    """The time each state was first entered, from a message's `events`."""
    first: dict[str, float] = {}
    for event in view["events"]:
        first.setdefault(event["state"], client.parse_iso(event["at"]))
    return first
