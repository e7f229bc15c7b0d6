"""Start-up of `smsgw run` on a built growth store, before/after (issue 16, point 5).

    .venv/bin/python bench/startup.py /dev/shm/smsgw-growth --runs 5
    .venv/bin/python bench/startup.py DIR --runs 5 --server-repo /path/to/other/checkout

DIR is a `bench/growth.py --dir` (its store built; `--reuse` keeps it). Each run starts
`smsgw run` on it (pinned as `bench/growth.py` pins it) and measures: process start to
the first 200 of `/api/v1/healthz` (wall), the server's CPU (utime + stime, every
thread) at that moment, VmRSS then and once the queue is whole in memory (the
`queue_loaded_later` log line, or ready for a checkout without it), the machine's load
average, and the stages of the server's own `started` log line (wall, CPU and CPU wait
per stage, where the checkout writes one). With `--server-repo`, runs alternate between
this checkout and that one. The sources are byte-compiled first, as an installed smsgw's
are (a checkout run with PYTHONDONTWRITEBYTECODE set compiles ~340 modules at every
start: 0.3-0.4 s of CPU). One JSON line per run, then a summary line (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness

GROWTH_HOME = "gw"


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


async def _settled(log: Path, limit: float = 300.0) -> bool:
    """Wait (polling the log file: the server writes it, not us) for the later load."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(e.get("event") == "queue_loaded_later" for e in _events(log)):
            return True
        await asyncio.sleep(0.1)
    return False


async def one_run(
    home: harness.GatewayHome, repo: Path, pinning: harness.Pinning
) -> dict[str, Any]:
    server = harness.gateway_server(home, harness.RouteSpec(rate=None), pinning, "startup")
    if repo != harness.REPO:
        python = repo / ".venv" / "bin" / "python"
        server.argv = [*pinning.server, str(python), *server.argv[len(pinning.server) + 1 :]]
        server.cwd = repo
    server.log_path.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    await server.start()
    wall = time.perf_counter() - t0
    pid = server.pid
    out: dict[str, Any] = {
        "repo": str(repo),
        "load_avg_1m": round(load, 1),
        "startup_s": round(wall, 2),
        "startup_cpu_s": round(_proc_cpu_s(pid), 2),
        "rss_mb_ready": _rss_mb(pid),
    }
    try:
        started = [e for e in _events(server.log_path) if e.get("event") == "started"]
        if started:  # this checkout's: the rest of the queue is read after ready
            out["server_wall_s"] = started[0]["wall_s"]
            out["server_cpu_wait_s"] = started[0].get("cpu_wait_s")
            out["stages"] = started[0]["stages"]
            if await _settled(server.log_path):
                out["rss_mb_whole_queue"] = _rss_mb(pid)
                out["cpu_s_whole_queue"] = round(_proc_cpu_s(pid), 2)
        else:  # the whole queue was read before ready
            out["rss_mb_whole_queue"] = out["rss_mb_ready"]
            out["cpu_s_whole_queue"] = out["startup_cpu_s"]
    finally:
        await server.stop()
    return out


async def main(args: argparse.Namespace) -> int:
    harness.READY_TIMEOUT_S = 300.0
    repos = [harness.REPO] + ([args.server_repo] if args.server_repo else [])
    for repo in repos:
        for package in ("gateway", "drivers"):
            compileall.compile_dir(repo / package, quiet=1)
    home = harness.GatewayHome(args.dir / GROWTH_HOME, "")
    pinning = harness.setup_pinning()
    results: dict[str, list[dict[str, Any]]] = {str(r): [] for r in repos}
    for _ in range(args.runs):
        for repo in repos:
            r = await one_run(home, repo, pinning)
            results[str(repo)].append(r)
            print(json.dumps(r), flush=True)
    summary = {
        repo: {
            key: statistics.median(r[key] for r in runs if key in r)
            for key in ("startup_s", "startup_cpu_s", "rss_mb_ready", "rss_mb_whole_queue",
                        "load_avg_1m")
            if any(key in r for r in runs)
        }
        for repo, runs in results.items()
    }  # fmt: skip
    print(json.dumps({"bench": "startup", "runs": args.runs, "median": summary}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="a bench/growth.py --dir with its store built")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--server-repo", type=Path, help="another checkout, alternated with this one"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
