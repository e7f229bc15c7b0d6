"""Webhook delivery: the rate from a preloaded outbox backlog, and the drain after a
receiver outage under load, exactly once by id.

    .venv/bin/python bench/webhooks.py                       # N = 20,000, a 600 s outage
    .venv/bin/python bench/webhooks.py --n 2000 --outage 60  # shorter

Both parts run `smsgw run` (CPU 0) with one loopback route (no rate limit, window 50,
a receipt 0.2 s after each send, so a message raises its sending, sent and delivered
events) and one `[[webhooks]]` endpoint taking every event, POSTing to
bench/event_receiver.py (CPU 1, with this script), which counts by `webhook-id`.

rate: the receiver is down (connection refused) while N messages go in through
`POST /messages/batch` and finish. Once the outbox stops growing the gateway stops, its
delivery attempts are forgotten (every event is new to the lane again, as if the
endpoint had never been tried, so the lane delivers them, not per-message retries), the
receiver comes up and the gateway starts again; the rate is the events received over
the time from the first to the last arrival, `server_cpu_us_per_event` the server's CPU
(all threads, /proc) from its start to the last arrival per event, less its idle CPU
(`server_idle_cores`, sampled for 3 s after) over as long.
`--concurrency K` sets the endpoint's `concurrency`, `--final-only` its `states` to the
final states (one event a delivered message instead of three), `--phi` its `phi = true`
(numbers and texts in every event, read and decrypted at delivery).

outage: the gateway's own back-off settings (`[outbox]` defaults unless
`--backoff-max`). `--load` messages per second go in throughout; after a 5 s warm-up the
receiver goes down for `--outage` seconds, then comes back. Reported: the events queued
while it was down, the time from its return to the first delivery (the lane's back-off
wait) and until it has every event that existed at its return; then the load stops,
everything drains, and each event id the outbox holds is checked at the receiver:
missing ones are a failure, duplicates are counted (at-least-once allows them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from client import Api
from event_receiver import Receiver
from events import compare, outbox_count, outbox_ids, write_secret
from harness import GatewayHome, Pinning, RouteSpec, Server
from loadgen import BODY_160_GSM, RECIPIENTS, recipient

LATEST = harness.BENCH_DIR / "results" / "webhooks-latest.json"
ROUTE = RouteSpec(rate=None, burst=1, window=50, latency=0.0, receipt_delay=0.2)
POLL_S = 0.25
SETTLE_S = 2.0
IDLE_SETTLE_S = 1.0
IDLE_SAMPLE_S = 3.0
WARMUP_S = 5.0
RUN_TIMEOUT_S = 7200.0

_HOOK = """
# bench/webhooks.py: one endpoint taking every event.
[outbox]
{outbox}
[[webhooks]]
name = "bench"
url = "{url}"
secret_file = "{secret_file}"
allow_loopback = true
allow_plain_http = true
{endpoint}
"""
FINAL_STATES = '["delivered", "failed", "expired"]'


def endpoint_keys(args: argparse.Namespace) -> str:
    """The endpoint's own keys the options ask for (absent: the gateway's defaults)."""
    keys = []
    if args.concurrency is not None:
        keys.append(f"concurrency = {args.concurrency}")
    if args.final_only:
        keys.append(f"states = {FINAL_STATES}")
    if args.phi:
        keys.append("phi = true")
    return "\n".join(keys)


def server_cpu(server: Server) -> float:
    return sum(harness.thread_cpu_seconds(server.pid).values())


def say(text: str) -> None:
    print(f"  {text}", flush=True)


async def gateway(
    work: Path, url: str, outbox: str, pinning: Pinning, endpoint: str = ""
) -> tuple[Server, GatewayHome]:
    secret = write_secret(work)
    home = await harness.init_gateway(work / "gw")
    server = harness.gateway_server(home, ROUTE, pinning, "smsgw")
    config = home.config_path.read_text()
    hook = _HOOK.format(outbox=outbox, url=url, secret_file=secret, endpoint=endpoint)
    home.config_path.write_text(config + hook)
    await server.start()
    return server, home


async def settled(api: Api, db: Path, deadline: float) -> int:
    """Wait until no message is queued or in flight and the outbox stopped growing."""
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = outbox_count(db)
        if count != last:
            last, since = count, time.monotonic()
        elif (await api.queue()).idle and time.monotonic() - since >= SETTLE_S:
            return count
        await asyncio.sleep(POLL_S)
    raise RuntimeError("the gateway did not settle in time")


async def received(receiver: Receiver, target: int, deadline: float) -> dict[str, Any]:
    """Poll until the receiver holds `target` distinct events (or the deadline)."""
    while True:
        stats: dict[str, Any] = (await receiver.command("stats"))["webhook"]
        if stats["unique"] >= target or time.monotonic() >= deadline:
            return stats
        await asyncio.sleep(POLL_S)


async def check_ids(receiver: Receiver, db: Path, work: Path) -> dict[str, int]:
    got = await receiver.ids(work / "ids.json")
    return compare(outbox_ids(db), got["webhook"])


def forget_attempts(db: Path) -> int:
    """With the gateway stopped: drop its delivery attempts, so that on restart every
    event of the backlog is new to the lane (as after a receiver that was never tried),
    delivered by the lane itself rather than by per-message retries."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE outbox_consumers SET position = 0")
            return conn.execute("DELETE FROM outbox_deliveries").rowcount
    finally:
        conn.close()


async def rate_part(args: argparse.Namespace, pinning: Pinning, work: Path) -> dict[str, Any]:
    async with Receiver(pinning.client) as receiver:
        await receiver.command("down")
        keys = endpoint_keys(args)
        server, home = await gateway(work, receiver.url, "backoff_max = 1.0", pinning, keys)
        try:
            deadline = time.monotonic() + args.timeout
            async with Api(server.url, home.token) as api:
                say(f"rate: receiver down, preloading {args.n} messages")
                await api.preload(args.n, "normal")
                backlog = await settled(api, home.db_path, deadline)
        finally:
            await server.stop()
        forget_attempts(home.db_path)
        say(f"rate: {backlog} events in the outbox, none tried; receiver up, gateway again")
        await receiver.command("up")
        up_at = time.time()
        await server.start()
        try:
            cpu_before, t_before = server_cpu(server), time.monotonic()
            stats = await received(receiver, backlog, deadline)
            cpu, busy_s = server_cpu(server) - cpu_before, time.monotonic() - t_before
            # The gateway's own idle CPU (its loops, metrics) over as long a time is
            # not the deliveries': measured after them and taken out.
            await asyncio.sleep(IDLE_SETTLE_S)
            idle_before = server_cpu(server)
            await asyncio.sleep(IDLE_SAMPLE_S)
            idle_per_s = (server_cpu(server) - idle_before) / IDLE_SAMPLE_S
        finally:
            code = await server.stop()
        ids = await check_ids(receiver, home.db_path, work)
    span = stats["last"] - stats["first"]
    net = max(0.0, cpu - idle_per_s * busy_s)
    return {
        "bench": "webhooks",
        "part": "rate",
        "messages": args.n,
        "backlog": backlog,
        "delivered": stats["unique"],
        "per_s": round((stats["unique"] - 1) / span, 1) if span > 0 else None,
        "drain_s": round(span, 2),
        "first_after_up_s": round(stats["first"] - up_at, 2) if stats["first"] else None,
        # The server's CPU (all threads) from its start to the last event, less its idle
        # CPU over as long; and that idle CPU (cores).
        "server_cpu_us_per_event": round(net * 1e6 / max(1, stats["unique"]), 1),
        "server_cpu_us_per_message": round(net * 1e6 / args.n, 1),
        "server_idle_cores": round(idle_per_s, 4),
        "ids": ids,
        "exit_code": code,
    }


async def load(api: Api, per_s: int, stop: asyncio.Event) -> int:
    """`per_s` messages each second, one batch, until `stop`; returns how many."""
    sent = 0
    next_at = time.monotonic()
    while not stop.is_set():
        sent += await api.send_batch([_message(sent + i) for i in range(per_s)])
        next_at += 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    return sent


def _message(i: int) -> dict[str, str]:
    return {"to": recipient(i % RECIPIENTS), "body": BODY_160_GSM, "priority": "normal"}


async def outage_part(args: argparse.Namespace, pinning: Pinning, work: Path) -> dict[str, Any]:
    outbox = "" if args.backoff_max is None else f"backoff_max = {args.backoff_max!r}"
    async with Receiver(pinning.client) as receiver:
        server, home = await gateway(work, receiver.url, outbox, pinning)
        db = home.db_path
        try:
            async with Api(server.url, home.token) as api:
                stop = asyncio.Event()
                loader = asyncio.create_task(load(api, args.load, stop))
                try:
                    await asyncio.sleep(WARMUP_S)
                    await receiver.command("down")
                    at_down = outbox_count(db)
                    say(f"outage: receiver down for {args.outage:g} s under {args.load}/s")
                    await asyncio.sleep(args.outage)
                    at_up = outbox_count(db)
                    before = (await receiver.command("stats"))["webhook"]
                    up_at, t_up = time.time(), time.monotonic()
                    await receiver.command("up")
                    say(f"outage: receiver up, {at_up - before['unique']} events waiting")
                    deadline = t_up + args.timeout
                    caught = await received(receiver, at_up, deadline)
                    drain_s = time.monotonic() - t_up
                    first = caught["first_since_up"] - up_at if caught["first_since_up"] else None
                finally:
                    stop.set()
                    messages = await loader
                final = await settled(api, db, deadline)
                done = await received(receiver, final, deadline)
        finally:
            code = await server.stop()
        ids = await check_ids(receiver, db, work)
    return {
        "bench": "webhooks",
        "part": "outage",
        "outage_s": args.outage,
        "load_per_s": args.load,
        "messages": messages,
        "events_during_outage": at_up - at_down,
        "waiting_at_return": at_up - before["unique"],
        "first_delivery_after_return_s": None if first is None else round(first, 2),
        "drain_after_return_s": round(drain_s, 2) if caught["unique"] >= at_up else None,
        "events": final,
        "all_delivered": done["unique"] >= final,
        "ids": ids,
        "exit_code": code,
    }


async def run_all(args: argparse.Namespace, pinning: Pinning, root: Path) -> int:
    results: dict[str, dict[str, Any]] = {}
    failures = 0
    for part, fn in (("rate", rate_part), ("outage", outage_part)):
        if args.only and part != args.only:
            continue
        try:
            result = await fn(args, pinning, root / part)
        except (RuntimeError, OSError, TimeoutError) as e:
            failures += 1
            error = f"{type(e).__name__}: {e}"
            print(json.dumps({"bench": "webhooks", "part": part, "error": error}), flush=True)
            continue
        print(json.dumps(result), flush=True)
        results[part] = result
        failures += result["ids"]["missing"] > 0
    rate, outage = results.get("rate", {}), results.get("outage", {})
    summary = {
        "bench": "webhooks",
        "per_s": rate.get("per_s"),
        "backlog": rate.get("backlog"),
        "server_cpu_us_per_event": rate.get("server_cpu_us_per_event"),
        "server_cpu_us_per_message": rate.get("server_cpu_us_per_message"),
        "outage_s": outage.get("outage_s"),
        "events_during_outage": outage.get("events_during_outage"),
        "first_delivery_after_return_s": outage.get("first_delivery_after_return_s"),
        "drain_after_return_s": outage.get("drain_after_return_s"),
        "missing": sum(r["ids"]["missing"] for r in results.values()),
        "duplicates": sum(r["ids"]["duplicates"] for r in results.values()),
        "settings": {
            "n": args.n,
            "load_per_s": args.load,
            "route": ROUTE.describe(),
            "backoff_max": args.backoff_max or "default (600 s)",
            "endpoint": f"1 webhook, all events, phi={str(args.phi).lower()}, http loopback"
            + (f", concurrency={args.concurrency}" if args.concurrency else "")
            + (f", states={FINAL_STATES}" if args.final_only else ""),
            "placement": pinning.describe() + "; the receiver with the bench",
        },
    }
    print(
        f"\nwebhooks: {summary['per_s']} events/s from a backlog of {summary['backlog']}"
        f" ({summary['server_cpu_us_per_event']} µs of server CPU an event);"
        f" after a {summary['outage_s']} s outage: {summary['events_during_outage']} events"
        f" queued, drained {summary['drain_after_return_s']} s after the return;"
        f" missing {summary['missing']}, duplicates {summary['duplicates']}"
    )
    harness.publish_summary(summary, LATEST)
    return 1 if failures else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000, help="messages preloaded (rate part)")
    p.add_argument("--outage", type=float, default=600.0, help="seconds the receiver is down")
    p.add_argument("--load", type=int, default=20, help="messages per second in the outage part")
    p.add_argument("--backoff-max", type=float, help="[outbox] backoff_max (default: its default)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per wait, at most")
    p.add_argument("--only", choices=("rate", "outage"))
    p.add_argument("--concurrency", type=int, help="the endpoint's concurrency (default: its)")
    p.add_argument(
        "--final-only", action="store_true", help=f"the endpoint's states = {FINAL_STATES}"
    )
    p.add_argument("--phi", action="store_true", help="the endpoint's phi = true")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = harness.setup_pinning()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-webhooks-"))
    print(
        f"webhooks: N={args.n}, outage {args.outage:g} s under {args.load} msg/s;"
        f" {pinning.describe()}; data in {root}",
        flush=True,
    )
    return harness.run_bench(lambda: run_all(args, pinning, root), root, args.keep, RUN_TIMEOUT_S)


if __name__ == "__main__":
    sys.exit(main())
