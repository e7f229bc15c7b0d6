"""A cProfile dump's own time summed per module: which of our modules carry the CPU.

    PROFILE_DUMP=/tmp/accept.pstats .venv/bin/python bench/profile_accept.py -c 64 --cprofile 1
    .venv/bin/python bench/cpu_by_module.py /tmp/accept.pstats --per 40000

Our modules are named by their path in the repository (`drivers/smpp/pdu.py`), other
Python by its top-level package (`aiohttp`, `asyncio`), C functions (builtins, uvloop's,
sqlite3's) as `C: <name>`. Own time only: what a compiled module could save is at most
its own line here, since what it calls stays where it is.
"""

from __future__ import annotations

import argparse
import pstats
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OURS = ("gateway", "drivers")


def module_of(filename: str, function: str) -> str:
    if filename == "~":
        return f"C: {function.strip('<>').removeprefix('built-in method ')}"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for top in OURS:
        if top in parts:
            return "/".join(parts[parts.index(top) :])
    if "lib" in parts and len(parts) > parts.index("lib") + 2:
        after = parts[parts.index("lib") + 2 :]  # lib/python3.11/<module or package>
        return after[0].removesuffix(".py")
    return filename


def by_module(stats: pstats.Stats) -> list[tuple[str, float]]:
    """(module, own seconds), largest first."""
    totals: dict[str, float] = defaultdict(float)
    table = stats.stats  # type: ignore[attr-defined]  # pstats' undocumented table
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in table.items():
        totals[module_of(filename, function)] += tottime
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dump", type=Path)
    p.add_argument("--per", type=int, default=1, help="messages in the profile: us per message")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    rows = by_module(pstats.Stats(str(args.dump)))
    total = sum(seconds for _, seconds in rows)
    ours = sum(seconds for name, seconds in rows if name.startswith(OURS))
    print(f"{1e6 * total / args.per:.1f} us per message in all, ours {100 * ours / total:.0f}%")
    for name, seconds in rows[: args.top]:
        print(f"{1e6 * seconds / args.per:8.1f} us {100 * seconds / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
