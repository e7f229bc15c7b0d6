"""Which b-trees each commit of a real `smsgw run` writes, by kind of commit.

    .venv/bin/python bench/wal_commits.py                          # 200 messages at 10/s
    .venv/bin/python bench/wal_commits.py --source /tmp/<commit>   # an older checkout
    .venv/bin/python bench/wal_commits.py --idle 180               # nothing sent

`bench/wal_pages.py` drives the store in-process, step by step; this runs the whole
gateway as `bench/diskwrites.py` does (its embedded SMSC simulator, a receipt 2 s after
each submit, 160-character reminders), so every commit is the product's own: the
accept's, the claim's, the lazy work's, the sweeps', the analytics rollup's. A copy of
`--source` is run with the writer's automatic checkpoints off (the two constants in
`gateway/store/writer.py` set to 0), so that the WAL keeps every frame of the window;
after the warm-up the new frames are read (one whole page each, a commit ending at a
frame that carries the database size) and named by `dbstat`. Prints frames and commits
per message, frames per message by b-tree, and the commits grouped by the set of
b-trees they wrote; the last line is JSON. `sqlite_schema` is page 1, rewritten when the
file grows (its header holds the size in pages); `(freed or new)` are pages `dbstat`
names no b-tree of (the pointer maps of `auto_vacuum`, pages freed since). Checkpoint
bytes are not counted here (`bench/diskwrites.py` measures bytes on the device).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diskwrites

ROOT = Path(__file__).resolve().parent.parent
WAL_HEADER = 32
FRAME_HEADER = 24
COPY_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "tests", "bench", "__pycache__", "*.db*"
)
NO_CHECKPOINTS = {
    r"^WAL_AUTOCHECKPOINT = \d+$": "WAL_AUTOCHECKPOINT = 0",
    r"^WAL_AUTOCHECKPOINT_QUIET = \d+$": "WAL_AUTOCHECKPOINT_QUIET = 0",
}


def copy_without_checkpoints(source: Path, into: Path) -> Path:
    """`source`'s gateway, its writer never checkpointing by itself."""
    shutil.copytree(source, into, ignore=COPY_IGNORED)
    writer = into / "gateway" / "store" / "writer.py"
    text = writer.read_text()
    for pattern, replacement in NO_CHECKPOINTS.items():
        text, found = re.subn(pattern, replacement, text, flags=re.M)
        if found != 1:
            raise SystemExit(f"{writer}: no single line matching {pattern!r}")
    writer.write_text(text)
    return into


def wal_frames(path: Path) -> list[tuple[int, bool]]:
    """Each frame of the WAL at `path`: its page number, and whether it ends a commit."""
    data = path.read_bytes()
    if len(data) < WAL_HEADER:
        return []
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    frames, offset = [], WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        header = data[offset : offset + FRAME_HEADER]
        if header[8:16] != salts:
            break
        frames.append((int.from_bytes(header[:4], "big"), header[4:8] != b"\0\0\0\0"))
        offset += FRAME_HEADER + page_size
    return frames


def page_names(db: Path) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {int(p): str(n) for n, p in conn.execute("SELECT name, pageno FROM dbstat")}
    finally:
        conn.close()


async def observe(source: Path, work: Path, args: argparse.Namespace) -> list[list[str]]:
    """The commits (each the b-tree names of its frames) of one window of a real run."""
    gw = diskwrites.start_gateway(work / "data", "FULL", False, source)
    try:
        headers = {"Authorization": f"Bearer {gw.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            await diskwrites.until_up(http, gw.url)
            await diskwrites.scenario(gw, http, "warm-up", 20, None)
            await asyncio.sleep(3)  # the warm-up's receipts settle
            wal = work / "data" / "smsgw.db-wal"
            start = len(wal_frames(wal))
            if args.idle:
                await asyncio.sleep(args.idle)
            else:
                rate = args.rate or None
                await diskwrites.scenario(gw, http, "window", args.messages, rate, args.body_chars)
            frames = wal_frames(wal)[start:]
            names = page_names(work / "data" / "smsgw.db")
    finally:
        diskwrites.stop(gw)
    return commits_of(frames, names)


def commits_of(frames: list[tuple[int, bool]], names: dict[int, str]) -> list[list[str]]:
    """The WAL's frames grouped by commit: each commit's pages named by their b-tree."""
    commits: list[list[str]] = []
    current: list[str] = []
    for page, ends in frames:
        current.append(names.get(page, "(freed or new)"))
        if ends:
            commits.append(current)
            current = []
    return commits


def summary(commits: list[list[str]], per: int) -> dict[str, Any]:
    frames = [name for c in commits for name in c]
    kinds: Counter[tuple[str, ...]] = Counter()
    kind_frames: Counter[tuple[str, ...]] = Counter()
    for c in commits:
        kind = tuple(sorted(set(c)))
        kinds[kind] += 1
        kind_frames[kind] += len(c)
    return {
        "per": per,
        "commits": len(commits),
        "frames_per": round(len(frames) / per, 2),
        "commits_per": round(len(commits) / per, 3),
        "by_btree": {k: round(v / per, 2) for k, v in Counter(frames).most_common()},
        "kinds": [
            {"commits": n, "frames_each": round(kind_frames[k] / n, 1), "btrees": list(k)}
            for k, n in kinds.most_common()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=ROOT, help="the checkout to run")
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0, help="messages/s (0: all at once)")
    p.add_argument("--idle", type=float, default=0.0, help="send nothing for this many seconds")
    p.add_argument("--body-chars", type=int, default=160)
    args = p.parse_args(argv)
    # Under the repository, on its disk, as diskwrites.py (the WAL is read, not timed).
    work = Path(tempfile.mkdtemp(prefix="walcommits-", dir=ROOT / "bench"))
    try:
        source = copy_without_checkpoints(args.source.resolve(), work / "source")
        commits = asyncio.run(observe(source, work, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per = 1 if args.idle else args.messages
    result = summary(commits, per)
    result["window"] = (
        f"idle {args.idle:g} s" if args.idle else f"{args.messages} at {args.rate:g}/s"
    )
    unit = "in the window" if args.idle else "per message"
    print(
        f"{result['commits']} commits; {unit}: {result['frames_per']} frames,"
        f" {result['commits_per']} commits"
    )
    print("frames by b-tree:", ", ".join(f"{k} {v}" for k, v in result["by_btree"].items()))
    for kind in result["kinds"]:
        print(f"{kind['commits']:6} x {kind['frames_each']:5} frames: {', '.join(kind['btrees'])}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
