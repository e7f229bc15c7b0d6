"""CPU of the queue's views and of a start-up with a big queue, in one process: the
figures of `bench/growth.py` that a busy machine's wall clock hides (issue 16, point 5).

    .venv/bin/python bench/growth_views.py /dev/shm/smsgw-growth/gw        # this checkout
    /work/main/.venv/bin/python bench/growth_views.py DIR --repo /work/main  # another one

DIR is a data directory `bench/growth.py` built (`--reuse` keeps it). Opens the gateway
on it without its loops, then: process CPU (every thread: the read pool's SQLite too) of
`Gateway.start` (loading the queue), VmRSS after it, and CPU per call of the queue's
status (`/api/v1/queue`), the metrics refresh (`/metrics`) and the dashboard's snapshot,
then microseconds of CPU per call of the scheduler's `depths()` and `depths_by_route()`.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def measure(data_dir: Path, calls: int) -> dict[str, Any]:
    from gateway import metrics_state
    from gateway.admin.dashboard import EventTail, build_snapshot
    from gateway.app import Gateway
    from gateway.config import load
    from gateway.store import crypto

    config = load(data_dir / "smsgw.toml")
    gw = await Gateway.open(config, None, crypto.read_master_key(config.master_key_path))
    out: dict[str, Any] = {"bench": "growth_views", "rss_mb_opened": _rss_mb()}
    t = time.process_time()
    await gw.start(dispatch=False)
    out["start_cpu_s"] = round(time.process_time() - t, 3)
    out["rss_mb_loaded"] = _rss_mb()
    out["waiting"] = sum(sum(d.values()) for d in gw.scheduler.depths().values())
    views = {
        "queue": gw.usecases.status.queue,
        "metrics": lambda: metrics_state.refresh(gw),
        "dashboard": lambda: build_snapshot(gw, EventTail(gw.usecases.activity, gw.clock)),
    }
    for name, view in views.items():
        await view()  # warm
        t = time.process_time()
        for _ in range(calls):
            await view()
        out[f"{name}_cpu_ms"] = round((time.process_time() - t) * 1000 / calls, 2)
    # The scheduler's counts alone, which every one of those reads (once per request).
    for name, count in (
        ("depths", gw.scheduler.depths),
        ("depths_by_route", gw.scheduler.depths_by_route),
    ):
        t = time.process_time()
        for _ in range(calls * 10):
            count()
        out[f"{name}_us"] = round((time.process_time() - t) * 1e6 / (calls * 10), 1)
    await gw.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    sys.path[0] = str(args.repo)  # not bench/: its hl7.py would hide the hl7 package
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # quiet
    print(json.dumps(asyncio.run(measure(args.data_dir, args.calls))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
