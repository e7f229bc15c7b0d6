"""Which tables and indexes each step of a message's life dirties: pages per commit.

    .venv/bin/python bench/wal_pages.py                     # 200 messages, one commit per step
    .venv/bin/python bench/wal_pages.py --prefill 100000    # in a store already holding 100,000
    .venv/bin/python bench/wal_pages.py --trickle --lag 20  # 10/s: one commit per message
    .venv/bin/python bench/wal_pages.py --inbound apart     # MOs, each mark cleared alone

The real store (`gateway/store/`, in this process, `synchronous = FULL`) with its
auto-checkpoint off: each message is accepted, claimed, marked `sent` and given its
receipt, one commit per step, as at a trickle. After each commit the new WAL frames
are read (each frame is one whole page) and named by `dbstat` (which table or index the
page belongs to). With `--prefill`, the store first holds that many delivered messages
(to as many numbers), so that the index by recipient is as deep and wide as a real
store's. Prints frames per commit by step and by b-tree, and the distinct pages the
checkpoint that follows would write into the file; the last line is JSON.

This counts pages, not bytes on the device: `bench/diskwrites.py` measures those around
a real `smsgw run`. Pages are the lever this explains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.inbound_doubt import KEEP_SECONDS, Marked, Settle  # noqa: E402
from gateway.models import Priority, new_message_id  # noqa: E402
from gateway.store import outbox_sql, writer  # noqa: E402
from gateway.store.store import NewMessage, Store  # noqa: E402

ROUTE = "smsc-sim"
WAL_HEADER = 32
FRAME_HEADER = 24


class WalReader:
    """Reads the frames appended to a WAL file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = WAL_HEADER

    def reset(self) -> None:
        self.offset = WAL_HEADER

    def new_frames(self) -> list[int]:
        data = self.path.read_bytes()
        if len(data) < WAL_HEADER:
            return []
        page_size = struct.unpack(">I", data[8:12])[0]
        salts = data[16:24]
        pages = []
        while self.offset + FRAME_HEADER + page_size <= len(data):
            header = data[self.offset : self.offset + FRAME_HEADER]
            if header[8:16] != salts:
                break
            pages.append(struct.unpack(">I", header[:4])[0])
            self.offset += FRAME_HEADER + page_size
        return pages


BODY_CHARS = 60


def message(i: int, now: float) -> NewMessage:
    text = f"Reminder {i}: your appointment is tomorrow at 10:30. " * 20
    return NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to=f"+1202{i % 10_000_000:07d}",
        body=text[:BODY_CHARS],
        encoding="gsm7",
        segments=1,
        created_at=now,
        expires_at=now + 86_400,
    )


async def life(store: Store, m: NewMessage, carrier_id: str, step: Any = None) -> None:
    """One message through its life; `step(name)` after each commit."""
    now = time.time()
    await store.insert(store.insert_statements(m))
    if step:
        step("accept")
    claimed = await store.claim(m.id, ROUTE, now)
    assert claimed is not None and not isinstance(claimed, tuple), claimed
    if step:
        step("claim")
    await store.mark_sent(m.id, ROUTE, [carrier_id], now)
    if step:
        step("sent")
    outcome = await store.apply_receipt(ROUTE, carrier_id, "delivered", None, now)
    assert outcome is not None, "the receipt did not deliver the message"
    if step:
        step("receipt")


async def saturated(store: Store, count: int, lag: int, group: int, step: Any) -> None:
    """As at a route's saturation: the messages accepted together, then `group` claims
    per commit (1: today's dispatch at the demo's 50/s; more: a faster route, or claims
    grouped), each commit carrying the previous group's `sent` and the receipts of the
    messages `lag` earlier (lazy work joining the claims)."""
    now = time.time()
    batch = [message(i, now) for i in range(count)]
    await asyncio.gather(*(store.insert(store.insert_statements(m)) for m in batch))
    step("accept")
    for start in range(0, count, group):
        work = [store.claim(m.id, ROUTE, now) for m in batch[start : start + group]]
        for i in range(max(0, start - group), start):
            work.append(store.mark_sent(batch[i].id, ROUTE, [f"c{i}"], now))
            if i >= lag:
                work.append(store.apply_receipt(ROUTE, f"c{i - lag}", "delivered", None, now))
        await asyncio.gather(*work)
        step("claim+sent+receipt")


async def trickle(store: Store, count: int, lag: int, step: Any) -> None:
    """As at 10/s with claims made in the accept's transaction (`Scheduler.
    claim_with_accept`): each commit carries a message's accept and claim, the previous
    message's lazy `sent` and the receipt of the message `lag` earlier."""
    now = time.time()
    store.writer.lazy_delay = 3600.0  # lazy work rides the accept's commit only
    batch = [message(i, now) for i in range(count)]
    for i, m in enumerate(batch):
        work: list[Any] = []
        if i >= 1:
            work.append(store.mark_sent(batch[i - 1].id, ROUTE, [f"c{i - 1}"], now))
        if i > lag:
            work.append(store.apply_receipt(ROUTE, f"c{i - 1 - lag}", "delivered", None, now))
        lazy = [asyncio.ensure_future(w) for w in work]
        await asyncio.sleep(0)  # handed to the writer (lazy: no transaction yet)
        accepted = store.writer.insert(store.insert_statements(m))
        claimed = store.claim_group_soon([m.id], ROUTE, now)  # in the same transaction
        await asyncio.gather(accepted, claimed, *lazy)
        step("accept+claim+sent+receipt")


async def inbound(store: Store, count: int, mode: str, step: Any) -> None:
    """Mobile-originated messages stored one at a time, as the sink stores them. `plain`:
    no mark in doubt (as before SQLite migration 43); `apart`: each with its mark, and
    the mark's clear committed alone (MOs further apart than the sink's settle delay);
    `close`: each MO's commit carrying the previous one's clear (MOs close together)."""
    now = time.time()
    cleared: list[tuple[bytes, str]] = []
    for i in range(count):
        iid, body = new_message_id(), f"YES {i}"
        sender = f"+1202{i % 10_000_000:07d}"
        if mode == "plain":
            await store.insert_inbound(iid, ROUTE, sender, body, "+15550100", None, now)
            step("inbound")
            continue
        digest = store.inbound_digest(f"route:{ROUTE}", sender, "+15550100", body)
        riding = Settle(tuple(cleared))
        cleared = []
        marked = Marked(digest, KEEP_SECONDS, riding)
        once = await store.insert_inbound_once(
            iid, ROUTE, sender, body, "+15550100", None, now, marked
        )
        assert once.stored
        step("inbound+mark" if not riding else "inbound+mark+clear")
        if mode == "apart":
            await store.settle_inbound_doubt(Settle(((digest, iid),)))
            step("clear")
        else:
            cleared.append((digest, iid))


async def prefill(store: Store, count: int, chunk: int = 2000) -> None:
    for start in range(0, count, chunk):
        now = time.time()
        batch = [message(start + i, now) for i in range(min(chunk, count - start))]
        await asyncio.gather(*(life(store, m, f"pre{start + i}") for i, m in enumerate(batch)))


def page_names(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {int(p): str(n) for n, p in conn.execute("SELECT name, pageno FROM dbstat")}
    finally:
        conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="walpages-", dir=ROOT / "bench"))
    try:
        path = work / "smsgw.db"
        global BODY_CHARS
        BODY_CHARS = args.body_chars
        if args.page_size:
            writer.PAGE_SIZE = args.page_size
        # Off for the run: the writer sets its own before each transaction, and a WAL
        # restarted by a checkpoint would hide the frames written over the old ones.
        writer.WAL_AUTOCHECKPOINT = writer.WAL_AUTOCHECKPOINT_QUIET = 0
        writer.WAL_AUTOCHECKPOINT_BULK = 0
        store = Store(path, os.urandom(32))
        await store.open()
        store.writer.lazy_delay = 0.0  # one commit per step here, at once
        await store.writer.call_outside_transaction(
            lambda c: c.execute("PRAGMA wal_autocheckpoint = 0")
        )
        for index in args.drop_index:  # a lever measured before it is built
            await store.writer.call_outside_transaction(
                lambda c, index=index: c.execute(f"DROP INDEX {index}")
            )
        if not args.outbox:  # as a gateway with no webhook or event consumer
            await store.writer.call_outside_transaction(lambda c: outbox_sql.keep_only(c, ()))
        await prefill(store, args.prefill)
        await store.writer.call_outside_transaction(
            lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        )
        wal = WalReader(Path(f"{path}-wal"))
        per_step: dict[str, list[list[int]]] = {}

        def step(name: str) -> None:
            per_step.setdefault(name, []).append(wal.new_frames())

        now = time.time()
        if args.inbound:
            await inbound(store, args.messages, args.inbound, step)
        elif args.saturated:
            await saturated(store, args.messages, args.lag, args.group, step)
        elif args.trickle:
            await trickle(store, args.messages, args.lag, step)
        else:
            for i in range(args.messages):
                await life(store, message(args.prefill + i, now), f"c{i}", step)
        names = page_names(path)
        await store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.messages
    rows: dict[str, Any] = {
        "prefill": args.prefill,
        "messages": n,
        "page_size": writer.PAGE_SIZE,
        "outbox": args.outbox,
        "body_chars": args.body_chars,
        "group": args.group,
        "steps": {},
    }
    distinct: set[int] = set()
    total = 0
    for name, commits in per_step.items():
        frames = [p for c in commits for p in c]
        total += len(frames)
        distinct.update(frames)
        by_tree = Counter(names.get(p, "(freed or new)") for p in frames)
        rows["steps"][name] = {
            "frames_per_commit": round(len(frames) / max(1, len(commits)), 2),
            "by_btree": {k: round(v / len(commits), 2) for k, v in by_tree.most_common()},
        }
    rows["frames_per_message"] = round(total / n, 2)
    rows["checkpoint_pages_per_message"] = round(len(distinct) / n, 2)
    # A checkpoint every N frames (`wal_autocheckpoint` N) writes the distinct pages of
    # those N frames into the file: a page rewritten by many commits is written once.
    stream = [p for commits in per_step.values() for c in commits for p in c]
    rows["checkpoint_every"] = {
        every: round(
            sum(len(set(stream[i : i + every])) for i in range(0, len(stream), every)) / n, 2
        )
        for every in args.checkpoint_every
    }
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--prefill", type=int, default=0)
    p.add_argument("--page-size", type=int, help="a new store's page size (default: the store's)")
    p.add_argument("--saturated", action="store_true", help="claims one by one, lazy work joining")
    p.add_argument(
        "--trickle", action="store_true", help="one commit per message: accept, claim, lazy work"
    )
    p.add_argument(
        "--inbound",
        choices=["plain", "apart", "close"],
        help="MOs instead: without marks, marks cleared alone, or each clear riding the next MO",
    )
    p.add_argument("--group", type=int, default=1, help="claims per commit (with --saturated)")
    p.add_argument("--lag", type=int, default=100, help="messages between a submit and its receipt")
    p.add_argument("--body-chars", type=int, default=BODY_CHARS, help="each message's length")
    p.add_argument("--outbox", action="store_true", help="as with a webhook consumer")
    p.add_argument(
        "--drop-index",
        nargs="*",
        default=[],
        help="indexes dropped before the run: what each would save (readers not served)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        nargs="*",
        default=[1000, 4000, 16000],
        help="checkpoint pages per message were the WAL checkpointed every N frames",
    )
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    for name, step in result["steps"].items():
        trees = ", ".join(f"{k} {v}" for k, v in step["by_btree"].items())
        print(f"{name:8} {step['frames_per_commit']:5} pages/commit: {trees}")
    print(
        f"WAL pages per message {result['frames_per_message']},"
        f" checkpoint pages per message {result['checkpoint_pages_per_message']}"
    )
    for every, pages in result["checkpoint_every"].items():
        print(f"checkpoint every {every} frames: {pages} pages per message into the file")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
