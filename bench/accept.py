"""smsgw benchmarks, one command: accept vs. raw ceiling, batch, latency, drain, rate, priority.

    .venv/bin/python bench/accept.py            # full run, about 3-4 minutes
    .venv/bin/python bench/accept.py --quick    # under a minute, shorter windows

Everything runs on 127.0.0.1 against servers this script starts on fresh data in a
temporary directory and stops by PID. Each benchmark prints progress lines, then one
JSON line; a summary table against the targets closes the run, and all results go to
`bench/results/latest.json`. See `bench/README.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import harness
import scenarios
from scenarios import Context, Settings

Benchmark = Callable[[Context], Awaitable[None]]
BENCHMARKS: dict[str, Benchmark] = {
    "accept": scenarios.accept,  # also reports "latency"
    "batch": scenarios.batch,
    "drain": scenarios.drain,
    "rate": scenarios.rate,
    "priority": scenarios.priority,
}
RESULTS_FILE = harness.BENCH_DIR / "results" / "latest.json"
RUN_TIMEOUT_S = {True: 180.0, False: 600.0}
Row = tuple[str, str, str, str]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows, under a minute")
    p.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks"
    )
    p.add_argument("--keep", action="store_true", help="keep the data and logs of the run")
    return p.parse_args(argv)


async def run_all(ctx: Context, names: Sequence[str]) -> None:
    for name in names:
        print(f"\n== {name}", flush=True)
        await BENCHMARKS[name](ctx)


# -- summary -------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


FOREIGN_LIMIT_S = 1.0


def summary_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for r in results:
        rows.extend(_rows_for(r))
    return rows + _foreign_load_row(results)


def _foreign_load_row(results: list[dict[str, Any]]) -> list[Row]:
    """Flag the run when other processes used the CPU during a measurement."""
    foreign = [v for r in results for k, v in r.items() if k.endswith("foreign_cpu_s")]
    worst = max(foreign, default=0.0)
    ok = worst < FOREIGN_LIMIT_S
    value = f"max {worst:.2f} CPU-s in one measurement"
    return [("foreign load", value, f"< {FOREIGN_LIMIT_S:g} s", "ok" if ok else "SUSPECT")]


def _rows_for(r: dict[str, Any]) -> list[Row]:
    bench = r["bench"]
    if bench == "accept":
        value = f"{r['ratio']:.2f} ({r['gateway_per_s']:,.0f} vs {r['ceiling_per_s']:,.0f}/s)"
        return [
            (
                f"accept c={r['concurrency']}",
                value,
                ">= 0.70 of ceiling",
                verdict(r["ratio"] >= 0.7),
            ),
            (
                f"durable c={r['concurrency']}",
                f"{r['gateway_rows']:,} rows / {r['gateway_acknowledged']:,} 2xx",
                "rows >= 2xx",
                verdict(r["gateway_durable"]),
            ),
        ]
    if bench == "latency":
        return [
            ("latency p50 c=64", f"{r['p50_ms']:.1f} ms", "<= 10 ms", verdict(r["p50_ms"] <= 10)),
            ("latency p99 c=64", f"{r['p99_ms']:.1f} ms", "<= 25 ms", verdict(r["p99_ms"] <= 25)),
        ]
    if bench == "batch":
        ok = r["messages_per_s"] >= 20_000
        return [
            ("batch", f"{r['messages_per_s']:,.0f} msg/s", ">= 20,000 msg/s", verdict(ok)),
            (
                "batch durable",
                f"{r['rows']:,} / {r['acknowledged']:,}",
                "rows >= 2xx",
                verdict(r["durable"]),
            ),
        ]
    if bench == "drain":
        return [("drain", f"{r['per_s']:,.0f} msg/s ({r['messages']:,})", "(no target)", "-")]
    if bench == "rate":
        value = f"{r['measured_per_s']:.2f}/s ({r['error_pct']:+.2f}%)"
        return [("rate 100/s", value, "within +-2%", verdict(abs(r["error_pct"]) <= 2))]
    if bench == "priority":
        value = f"p99 {r['p99_ms']:.1f} ms (p50 {r['p50_ms']:.1f}, max {r['max_ms']:.1f})"
        label = f"critical behind {r['bulk_queued']:,} bulk"
        return [(label, value, "p99 < 50 ms", verdict(r["p99_ms"] < 50))]
    return []


def print_table(rows: list[Row]) -> None:
    header: Row = ("benchmark", "measured", "target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print()
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=harness.REPO,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_results(ctx: Context, rows: list[Row], started: float, names: Sequence[str]) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "revision": git_revision(),
        "host": platform.node(),
        "python": platform.python_version(),
        "pinning": ctx.pinning.describe(),
        "benchmarks": list(names),
        "settings": asdict(ctx.settings),
        "results": ctx.results,
        "summary": [
            dict(zip(("benchmark", "measured", "target", "verdict"), r, strict=True)) for r in rows
        ],
    }
    RESULTS_FILE.write_text(json.dumps(document, indent=2) + "\n")


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    names = args.only or list(BENCHMARKS)
    started = time.time()
    pinning = harness.setup_pinning()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-"))
    ctx = Context(Settings.for_run(args.quick), pinning, root)
    print(
        f"smsgw bench ({'quick' if args.quick else 'full'}); {pinning.describe()}; data in {root}"
    )
    try:
        asyncio.run(asyncio.wait_for(run_all(ctx, names), RUN_TIMEOUT_S[args.quick]))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rows = summary_rows(ctx.results)
    print_table(rows)
    write_results(ctx, rows, started, names)
    print(f"\nresults: {RESULTS_FILE.relative_to(harness.REPO)} ({time.time() - started:.0f} s)")
    durable = all(r.get("durable", r.get("gateway_durable", True)) for r in ctx.results)
    return 0 if durable else 1


if __name__ == "__main__":
    raise SystemExit(main())
