"""The campaign runner's passes and its progress count, in this process, by thread CPU.

    .venv/bin/python bench/profile_campaign.py                 # 5,000 recipients
    .venv/bin/python bench/profile_campaign.py --n 20000 --cprofile 25

What the runner does under `make bench-campaign`, without the carrier and the clinical
traffic: a fresh `smsgw init` opened in this process with no dispatch, N contacts in a
group (rows written as the import writes them), a campaign to the group (bulk,
informational, free text) started through the use case, then passes of `--batch`
recipients (`CampaignRunner.run_pass`, the runner's own call) until it finishes.
Printed: CPU per recipient of the SQLite writer thread (the pass is one writer job)
and of the event loop (handing the messages to the scheduler), the writer's CPU per
pass (the longest a clinical accept or claim waits behind a pass), and the CPU of one
progress count (the five queries `GET /campaigns/{id}` runs) once all N are queued.
Thread CPU barely depends on what else the machine runs; `--cprofile N` prints the
writer thread's top N functions by own time (inflated by the profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import harness

if TYPE_CHECKING:
    from gateway.app import Gateway

GROUP = "bench"
TEXT = "Flu shots at the clinic this week: walk in 8-6."
TEMPLATE = "flu"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="recipients (5,000)")
    p.add_argument("--batch", type=int, default=200, help="recipients per pass (200)")
    p.add_argument("--cprofile", type=int, default=0, help="print the writer's top N functions")
    p.add_argument(
        "--template", action="store_true", help="a template with two variants, not free text"
    )
    args = p.parse_args(argv)
    if args.n < 1 or args.batch < 1:
        p.error("--n and --batch take counts of at least 1")
    return args


async def save_template(gw: Gateway) -> None:
    """A template with two weighted variants and a variable, as the panel saves one."""
    from gateway.templates import store as templates
    from gateway.templates.store import Draft, Variant

    draft = Draft(
        TEMPLATE,
        "en",
        "informational",
        (),
        (Variant("A", TEXT, 3), Variant("B", "Get your flu shot at the clinic this week.", 1)),
    )
    now = gw.clock.time()
    await gw.store.writer.run(lambda conn: templates.save(conn, draft, "bench", now))


async def add_contacts(gw: Gateway, n: int) -> None:
    """N contacts in one group, E.164 numbers encrypted under their row, as imported."""
    from gateway.consent.ledger import contact_row_id

    store = gw.store
    cipher = store.cipher
    assert cipher is not None
    now = gw.clock.time()

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO contact_groups VALUES (?, ?, NULL, ?, ?)", (GROUP, "Bench", now, now)
        )
        for i in range(n):
            number = f"+1202{5550000 + i:07d}"
            idx = store.blind_index(number)
            conn.execute(
                "INSERT INTO contacts (idx, number_ct, created_at, updated_at) VALUES (?,?,?,?)",
                (idx, cipher.encrypt(number, contact_row_id(idx), "number"), now, now),
            )
            conn.execute("INSERT INTO contact_group_members VALUES (?, ?, ?)", (GROUP, idx, now))

    await store.writer.run(job)


def count_cpu(path: Path, campaign_id: str) -> float:
    """Thread CPU (ms) of one progress count: the five queries, on a connection of our own."""
    from gateway.campaigns import store as sql

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    created_at = conn.execute(
        "SELECT created_at FROM campaigns WHERE id = ?", (campaign_id,)
    ).fetchone()[0]

    def count() -> None:  # as `Campaigns.progress` counts
        args, since = (campaign_id,), (campaign_id, created_at)
        states = conn.execute(sql.STATES_SQL, args).fetchall()
        if sql.any_blocked(states):
            conn.execute(sql.BLOCKED_SQL, args).fetchall()
        conn.execute(sql.SKIPPED_SQL, args).fetchall()
        conn.execute(sql.REPLIES_SQL, since).fetchall()
        conn.execute(sql.OPT_OUTS_SQL, since).fetchall()

    count()  # warm the page cache, as a poller's connection is
    rounds = 5
    started = time.thread_time()
    for _ in range(rounds):
        count()
    conn.close()
    return (time.thread_time() - started) / rounds * 1000


async def run(args: argparse.Namespace) -> dict[str, float]:
    from gateway import config as gateway_config
    from gateway import logs
    from gateway.app import Gateway
    from gateway.campaigns.model import CampaignSpec
    from gateway.contacts.audience import AudienceSpec
    from gateway.usecases.caller import Caller

    root = Path(tempfile.mkdtemp(prefix="smsgw-profile-campaign-"))
    try:
        home = await harness.init_gateway(root / "gateway")
        with (root / "gateway.log").open("w") as log_file:
            logs.configure("json", "warning", stream=log_file)
            gw = await Gateway.open(gateway_config.load(home.config_path))
            try:
                await gw.start(dispatch=False)
                await add_contacts(gw, args.n)
                admin = Caller("bench", None, sees_all=True, may_send=True, may_read_phi=False)
                content: dict[str, str | None] = {"text": TEXT}
                if args.template:
                    await save_template(gw)
                    content = {"text": None, "template": TEMPLATE}
                spec = CampaignSpec(
                    name="bench",
                    audience=AudienceSpec(groups=[GROUP]),
                    purpose="informational",
                    priority="bulk",
                    rate=10.0,
                    **content,  # type: ignore[arg-type]  # text or template
                )
                campaign = await gw.campaigns.create(admin, spec)
                campaign = await gw.campaigns.start(admin, campaign.id)
                writer = gw.store.writer
                prof = cProfile.Profile(time.thread_time) if args.cprofile else None
                if prof is not None:
                    await writer.call_outside_transaction(lambda _c: prof.enable())
                w0 = await writer.call_outside_transaction(lambda _c: time.thread_time())
                l0, t0 = time.thread_time(), time.perf_counter()
                queued = passes = 0
                while True:
                    result = await gw.campaign_runner.run_pass(campaign, args.batch)
                    queued, passes = queued + len(result.prepared), passes + 1
                    if result.state is None or result.state.done:
                        break
                loop_cpu, wall = time.thread_time() - l0, time.perf_counter() - t0
                writer_cpu = await writer.call_outside_transaction(lambda _c: time.thread_time())
                writer_cpu -= w0
                if prof is not None:
                    await writer.call_outside_transaction(lambda _c: prof.disable())
                count_ms = count_cpu(gw.store.path, campaign.id)
            finally:
                await gw.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = args.n
    print(
        f"{queued:,} of {n:,} recipients queued in passes of {args.batch} in {wall:.2f} s;"
        f" CPU per recipient: writer {writer_cpu / n * 1e6:.1f} us, event loop"
        f" {loop_cpu / n * 1e6:.1f} us; writer per pass {writer_cpu / passes * 1e3:.1f} ms"
        f" (what a clinical accept may wait behind); one progress count of {n:,}:"
        f" {count_ms:.1f} ms CPU"
    )
    if prof is not None:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(args.cprofile)
        body = text.getvalue()
        print(body[body.find("   ncalls") :].rstrip())
    return {
        "writer_us": round(writer_cpu / n * 1e6, 1),
        "loop_us": round(loop_cpu / n * 1e6, 1),
        "writer_ms_per_pass": round(writer_cpu / passes * 1e3, 2),
        "progress_count_ms": round(count_ms, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # This script's folder comes first on sys.path, and its hl7.py would shadow the hl7
    # package the gateway imports: the gateway's modules are imported without it.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != harness.BENCH_DIR]
    summary = asyncio.run(run(args))
    print(json.dumps({"bench": "profile_campaign", "n": args.n, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
