"""Profile the gateway under wrk load with py-spy and list the hot spots.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_gateway.py                  # single sends, c=64
    .venv/bin/python bench/profile_gateway.py --batch 500 -c 4 # batch endpoint

Starts a gateway on fresh data (CPU 0, dispatch held as in the accept benchmark),
warms it up, then samples it with `py-spy record --format raw` (on CPU 1, beside wrk)
while wrk loads it. Writes the collapsed stacks to `bench/results/profile-*.txt` and
prints the top frames by own time (file:line) and by inclusive time (function).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import harness
import loadgen
from scenarios import NO_DISPATCH

RESULTS = harness.BENCH_DIR / "results"
WARMUP_S = 2.0
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--batch", type=int, default=0, help="messages per request (0: single)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--target", choices=("gateway", "ceiling"), default="gateway", help="server to profile"
    )
    return p.parse_args(argv)


def short(path: str) -> str:
    """A frame's file relative to the repo or site-packages."""
    for marker in (str(harness.REPO) + "/", "site-packages/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def frames(stack: str) -> list[tuple[str, str, str]]:
    """(function, file, line) per frame of one collapsed stack, outermost first."""
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame)
        if m:
            out.append((m["func"], short(m["file"]), m["line"] or "?"))
    return out


def summarize(raw: str, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        stack_frames = frames(stack)
        if not stack_frames:
            continue
        func, file, lineno = stack_frames[-1]
        own[f"{file}:{lineno} {func}"] += count
        for name in {f"{file} {func}" for func, file, _ in stack_frames}:
            inclusive[name] += count
    lines = [f"{total} samples (threads not idle)", "", "own time (file:line function):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time (file function):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Profiled:
    run: loadgen.WrkResult
    cpu: harness.CpuUse


async def profile(args: argparse.Namespace, work: Path, out: Path) -> Profiled:
    pinning = harness.setup_pinning()
    home = await harness.init_gateway(work / "gateway")
    script = loadgen.write_script(work / "load.lua", home.token, batch=args.batch)
    if args.target == "gateway":
        server = harness.gateway_server(home, NO_DISPATCH, pinning, "gateway")
    else:
        server = harness.ceiling_server(work / "ceiling", pinning)
    await server.start()
    try:
        await loadgen.run_wrk(pinning.client, server.url, script, args.concurrency, WARMUP_S)
        spy = await asyncio.create_subprocess_exec(
            *pinning.client,
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            str(args.rate),
            "--duration",
            str(args.seconds),
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        before = harness.CpuSnapshot.take(server.pid)
        run = await loadgen.run_wrk(
            pinning.client, server.url, script, args.concurrency, args.seconds
        )
        cpu = before.until(harness.CpuSnapshot.take(server.pid))
        await asyncio.wait_for(spy.wait(), args.seconds + 30)
    finally:
        await server.stop()
    return Profiled(run, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(sys.executable).parent / "py-spy").exists():
        print("profile: install py-spy first (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    kind = f"{args.target}-" + (f"batch{args.batch}" if args.batch else "single")
    out = RESULTS / f"profile-{kind}-c{args.concurrency}.txt"
    work = Path(tempfile.mkdtemp(prefix="smsgw-profile-"))
    try:
        profiled = asyncio.run(profile(args, work, out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run = profiled.run
    print(
        f"{kind} c={args.concurrency}: {run.messages_per_s:,.0f} msg/s,"
        f" p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms"
    )
    cpu = profiled.cpu
    loop_us, threads_us = cpu.per_item_us(run.messages)
    print(
        f"server CPU {cpu.utilisation:.0%} of one core; per message: event loop {loop_us:.0f} us,"
        f" other threads (SQLite writer) {threads_us:.0f} us"
    )
    print(f"(under py-spy at {args.rate} Hz); stacks in {out.relative_to(harness.REPO)}\n")
    print(summarize(out.read_text(), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
