"""The accept path in this process under wrk: CPU per message per thread, GC, groups.

    .venv/bin/python bench/profile_accept.py -c 64                  # the gateway
    .venv/bin/python bench/profile_accept.py -c 64 --target ceiling # the raw ceiling
    .venv/bin/python bench/profile_accept.py -c 4 --batch 500 --cprofile 30

The server is built here as `smsgw run` builds it (a fresh `smsgw init`, the accept
benchmark's route that never dispatches, uvloop, the same GC tuning) or as
`ceiling_server.py` builds the ceiling, and runs on CPU 0 with wrk on CPU 1. After a
warm-up it prints, for the measured window: messages per second, CPU per message of
the event loop (`time.thread_time`) and of the other threads (the SQLite writer),
the garbage collector's collections with their CPU, and the writer's mean group size
(messages per transaction). `--cprofile N`: the loop's top N functions by own time and
its Python calls per message (a count the machine's load does not move: compare the
gateway's with the ceiling's). `--warm-numbers`: normalise the load's 10,000 numbers
before the run, so a short run measures a warm numbers' cache.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ceiling_server
import harness
import loadgen
import sql_cost
from scenarios import NO_DISPATCH

WARMUP_S = 2.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--batch", type=int, default=0, help="messages per request (0: single)")
    p.add_argument("--target", choices=("gateway", "ceiling"), default="gateway")
    p.add_argument("--cprofile", type=int, default=0, metavar="TOP", help="0: no profiler")
    p.add_argument("--warm-numbers", action="store_true")
    p.add_argument("--sql", type=int, default=0, metavar="TOP", help="the writer's top statements")
    return p.parse_args(argv)


class GcClock:
    """CPU the collector takes, per generation (gc.callbacks, thread CPU)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.by_generation: dict[int, list[float]] = {}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.thread_time()
        else:
            took = time.thread_time() - self.started
            self.by_generation.setdefault(info["generation"], []).append(took)


async def serve(args: argparse.Namespace, work: Path) -> tuple[Any, Any, Any]:
    """(runner, site, writer) of the server under test, listening on a free port."""
    from aiohttp import web

    from gateway import cli, custody, logs
    from gateway import config as config_mod
    from gateway.app import Gateway
    from gateway.http_app import build_runner
    from gateway.intake import normalise_number
    from gateway.web.connections import GuardedTCPSite

    home = await harness.init_gateway(work / "gateway")
    port = harness.free_port()
    home.configure(NO_DISPATCH, port)
    args.token = home.token
    if args.target == "ceiling":
        writer = await ceiling_server.open_writer(work / "ceiling.db")
        template = ceiling_server.row_template(work / "ceiling.db")
        runner: Any = web.AppRunner(
            ceiling_server.build_app(writer, template), access_log=None, handle_signals=False
        )
        await runner.setup()
        site: Any = web.TCPSite(runner, harness.LOOPBACK, port, backlog=1024)
        args.gateway = None
    else:
        config = config_mod.load(str(home.config_path))
        logs.configure(config.log.format, config.log.level)
        gateway = await Gateway.open(config, None, custody.load_master_key(config))
        await gateway.start()
        if args.warm_numbers:
            for i in range(loadgen.RECIPIENTS):
                normalise_number(f"{loadgen.RECIPIENT_PREFIX}{i:04d}", "US")
        cli._tune_gc()  # as `smsgw run` does once it has started
        runner = build_runner(gateway)
        await runner.setup()
        site = GuardedTCPSite(runner, harness.LOOPBACK, port, backlog=1024)
        writer = gateway.store.writer
        args.gateway = gateway
    await site.start()
    args.url = f"http://{harness.LOOPBACK}:{port}"
    return runner, site, writer


async def measure(args: argparse.Namespace, work: Path) -> None:
    if args.sql:
        sql_cost.install()
    pinning = harness.setup_pinning()
    if pinning.active:
        os.sched_setaffinity(0, {0})  # the server is this process; wrk goes on CPU 1
    runner, _site, writer = await serve(args, work)
    script = loadgen.write_script(work / "load.lua", args.token, batch=args.batch)
    try:
        await loadgen.run_wrk(pinning.client, args.url, script, args.concurrency, WARMUP_S)
        collector = GcClock()
        gc.callbacks.append(collector)
        profiler = cProfile.Profile(time.thread_time) if args.cprofile else None
        on_writer = cProfile.Profile(time.thread_time) if args.cprofile else None
        if on_writer is not None:
            await writer.call_outside_transaction(lambda _conn: on_writer.enable())
        batches, items = writer.batches, writer.items
        sql_cost.reset()
        before = harness.CpuSnapshot.take(os.getpid())
        loop_cpu = time.thread_time()
        if profiler is not None:
            profiler.enable()
        run = await loadgen.run_wrk(
            pinning.client, args.url, script, args.concurrency, args.seconds
        )
        if profiler is not None:
            profiler.disable()
        if on_writer is not None:
            await writer.call_outside_transaction(lambda _conn: on_writer.disable())
        loop_cpu = time.thread_time() - loop_cpu
        cpu = before.until(harness.CpuSnapshot.take(os.getpid()))
        gc.callbacks.remove(collector)
        report(args, run, loop_cpu, cpu, collector, writer, batches, items, profiler)
        if args.sql:
            print("\n".join(sql_cost.top(args.sql, max(1, run.messages))))
        if on_writer is not None:
            out = io.StringIO()
            stats = pstats.Stats(on_writer, stream=out)
            n = max(1, run.messages)
            print(f"  writer: {stats.total_calls / n:.0f} Python calls per message")  # type: ignore[attr-defined]
            stats.sort_stats("tottime").print_stats(args.cprofile)
            print(out.getvalue())
    finally:
        await runner.cleanup()
        if args.gateway is not None:
            await args.gateway.stop()
        else:
            await writer.close()


def report(
    args: argparse.Namespace,
    run: loadgen.WrkResult,
    loop_cpu: float,
    cpu: harness.CpuUse,
    collector: GcClock,
    writer: Any,
    batches: int,
    items: int,
    profiler: cProfile.Profile | None,
) -> None:
    n = max(1, run.messages)
    groups = writer.batches - batches
    print(
        f"{args.target} c={args.concurrency} batch={args.batch}: {run.messages_per_s:,.0f} msg/s,"
        f" p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms"
    )
    print(
        f"  CPU per message: event loop {1e6 * loop_cpu / n:.1f} us,"
        f" other threads {1e6 * cpu.threads_s / n:.1f} us; foreign load {cpu.foreign_s:.2f} CPU-s"
    )
    print(f"  writer: {groups} transactions, {(writer.items - items) / max(1, groups):.1f} per")
    for generation, took in sorted(collector.by_generation.items()):
        print(
            f"  gc gen{generation}: {len(took)} collections, {1e6 * sum(took) / n:.2f} us per"
            f" message, longest {1e3 * max(took):.1f} ms"
        )
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        print(f"  loop: {stats.total_calls / n:.0f} Python calls per message")  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(args.cprofile)
        print(out.getvalue())
        if os.environ.get("PROFILE_DUMP"):
            stats.dump_stats(os.environ["PROFILE_DUMP"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # This script's folder comes first on sys.path, and its hl7.py would shadow the hl7
    # package the gateway imports (the bench modules above are imported already).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != harness.BENCH_DIR]
    work = Path(tempfile.mkdtemp(prefix="smsgw-accept-profile-"))
    try:
        import uvloop

        uvloop.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
