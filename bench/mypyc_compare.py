"""A profile script run alternately on the pure tree and on bench/mypyc_build.py's copy.

    .venv/bin/python bench/mypyc_compare.py -- bench/profile_dispatch.py --n 5000
    .venv/bin/python bench/mypyc_compare.py --pairs 5 -- bench/profile_accept.py -c 64

Each pair runs the script once pure and once with the compiled copy first on PYTHONPATH
(the order swapped every pair), reads the thread CPU per message it prints last ("event
loop X us, other threads Y us" or "..., writer Y us") and ends with the medians and the
compiled total against the pure one. Thread CPU, not rates: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CPU_LINE = re.compile(r"event loop ([\d.]+) us, (?:other threads|writer) ([\d.]+) us")


def cpu_per_message(script: Sequence[str], compiled: Path | None) -> tuple[float, float]:
    """(event loop, other threads) µs per message of one run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if compiled is not None:
        env["PYTHONPATH"] = str(compiled)
    run = subprocess.run(
        [sys.executable, *script], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    found = CPU_LINE.findall(run.stdout)
    if run.returncode or not found:
        raise SystemExit(f"{' '.join(script)} failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    loop, others = found[-1]
    return float(loop), float(others)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--compiled", type=Path, default=Path("/tmp/smsgw-mypyc"))
    p.add_argument("script", nargs=argparse.REMAINDER, help="-- bench/<script>.py [options]")
    args = p.parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    runs: dict[str, list[tuple[float, float]]] = {"pure": [], "compiled": []}
    for pair in range(args.pairs):
        for mode in ("pure", "compiled") if pair % 2 == 0 else ("compiled", "pure"):
            loop, others = cpu_per_message(script, args.compiled if mode == "compiled" else None)
            runs[mode].append((loop, others))
            print(
                f"{mode:8s} event loop {loop:6.1f} + other {others:6.1f} = {loop + others:6.1f} us"
            )
    medians = {}
    for mode, rows in runs.items():
        totals = sorted(loop + others for loop, others in rows)
        medians[mode] = statistics.median(totals)
        print(
            f"{mode:8s} median: event loop {statistics.median(r[0] for r in rows):.1f}"
            f" + other {statistics.median(r[1] for r in rows):.1f}"
            f" = {medians[mode]:.1f} us ({totals[0]:.0f}-{totals[-1]:.0f})"
        )
    change = 100 * (medians["compiled"] - medians["pure"]) / medians["pure"]
    print(f"compiled against pure: {change:+.1f}% CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
