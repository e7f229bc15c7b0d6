"""The drain's CPU per message, checkout against checkout (what `accept.py --only drain`
drains, measured by the server's CPU rather than its wall-clock rate).

    .venv/bin/python bench/drain_cpu.py /tmp/wt-old /tmp/wt-new --rounds 3 --n 20000

Each checkout (a `git worktree add` of a commit; this virtualenv runs its code, as
`smsgw run` started with its folder as the working directory imports it first) gets one
`smsgw init` and N preloaded messages with the route held, kept as a pristine copy.
Then, in alternating rounds, a fresh copy of each is drained by `smsgw run` with
`accept.py`'s drain route, and the server's CPU from ready to idle is divided by the
messages that turned `sent` meanwhile: event loop and other threads apart. On a machine
others load, CPU per message moves far less than the rate. One JSON line per run, then
per checkout the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import client
import harness
from harness import CpuSnapshot, GatewayHome
from scenarios import DRAIN_ROUTE, DRAIN_TIMEOUT_S, NO_DISPATCH, wait_idle

SENT_SQL = "SELECT count(*) FROM messages WHERE state IN ('sent', 'delivered')"
IO_KEYS = ("syscr", "syscw", "write_bytes")


def io_counts(pid: int) -> dict[str, int]:
    """The process's read/write calls, bytes written to storage and voluntary switches."""
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in IO_KEYS:
            out[key] = int(value)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches"):
            out["vcsw"] = int(line.split()[1])
    return out


async def prepare(repo: Path, where: Path, n: int, pinning: harness.Pinning) -> GatewayHome:
    """`smsgw init` and N messages queued with the route held, by `repo`'s code."""
    harness.REPO = repo  # init_gateway runs `python -m gateway.cli` in this folder
    home = await harness.init_gateway(where)
    server = harness.gateway_server(home, NO_DISPATCH, pinning, "preload")
    server.cwd = repo
    await server.start()
    try:
        async with client.Api(server.url, home.token) as api:
            await api.preload(n, "normal")
    finally:
        await server.stop()
    return home


async def drain_once(
    repo: Path, pristine: GatewayHome, where: Path, pinning: harness.Pinning
) -> dict[str, Any]:
    shutil.copytree(pristine.data_dir, where)
    home = GatewayHome(where, pristine.token)
    server = harness.gateway_server(home, DRAIN_ROUTE, pinning, "drain")
    server.cwd = repo
    await server.start()
    try:
        before = CpuSnapshot.take(server.pid)
        io_before = io_counts(server.pid)
        sent_before = int(harness.query_one(home.db_path, SENT_SQL)[0])
        started = time.monotonic()
        async with client.Api(server.url, home.token) as api:
            await wait_idle(api, DRAIN_TIMEOUT_S)
        after = CpuSnapshot.take(server.pid)
        io_after = io_counts(server.pid)
        wall = time.monotonic() - started
    finally:
        await server.stop()
    sent = int(harness.query_one(home.db_path, SENT_SQL)[0]) - sent_before
    use = before.until(after)
    loop_us, other_us = use.per_item_us(sent)
    shutil.rmtree(where)
    return {
        "repo": str(repo),
        "sent": sent,
        "loop_us": round(loop_us, 1),
        "other_us": round(other_us, 1),
        "total_us": round(loop_us + other_us, 1),
        **{k: round((io_after[k] - io_before[k]) / max(sent, 1), 2) for k in io_after},
        "per_s": round(sent / wall, 1) if wall > 0 else None,
        "foreign_cpu_s": round(use.foreign_s, 2),
    }


async def main(args: argparse.Namespace) -> int:
    pinning = harness.setup_pinning()
    root = Path(tempfile.mkdtemp(prefix="drain-cpu-"))
    try:
        pristine = {}
        for i, repo in enumerate(args.repos):
            pristine[repo] = await prepare(repo.resolve(), root / f"pristine-{i}", args.n, pinning)
        runs: dict[Path, list[dict[str, Any]]] = {repo: [] for repo in args.repos}
        for r in range(args.rounds):
            order = args.repos if r % 2 == 0 else list(reversed(args.repos))
            for repo in order:
                result = await drain_once(repo.resolve(), pristine[repo], root / "run", pinning)
                runs[repo].append(result)
                print(json.dumps(result), flush=True)
        for repo, results in runs.items():
            summary = {
                key: statistics.median(x[key] for x in results)
                for key in ("loop_us", "other_us", "total_us")
            }
            ranges = {
                key: [min(x[key] for x in results), max(x[key] for x in results)]
                for key in ("loop_us", "other_us", "total_us")
            }
            print(json.dumps({"repo": str(repo), "median": summary, "range": ranges}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repos", nargs="+", type=Path, help="checkouts to compare")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=20_000)
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
