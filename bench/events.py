"""The SMPP scenario of bench/smpp.py with every event going out, against the same run
without: one webhook endpoint and MQTT subscribed to every event.

    .venv/bin/python bench/events.py            # N = 20,000, two alternating pairs of runs
    .venv/bin/python bench/events.py --quick    # N = 4,000, one pair

Each pair runs smsgw alone (bench/smpp.py's `measure`, the same sink, wrk script and
settings), then the same with `[mqtt]` on (Debian's mosquitto on loopback) and one
`[[webhooks]]` endpoint taking all three event types (phi = false), both receivers
counting in bench/event_receiver.py. Receivers, broker, sink and wrk share the load
generator's CPU; smsgw has its own. The rate is smsgw/smpp.py's (N over the time to the
N-th receipt acknowledged, clinical by default); after it, the run waits (smsgw still
up) until both receivers hold every event of the outbox, then compares ids: every
outbox event must reach each receiver (duplicates are counted, at-least-once allows
them). ratio = median rate with events / median rate without (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import smpp
from event_receiver import Broker, Receiver

LATEST = harness.BENCH_DIR / "results" / "events-latest.json"
DRAIN_POLL_S = 0.5
TARGET = 0.9

_EVENTS_CONFIG = """\
# bench/events.py: every event to one webhook endpoint and to MQTT.
[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_port}
client_id = "smsgw-bench"

[[webhooks]]
name = "bench"
url = "{url}"
secret_file = "{secret_file}"
allow_loopback = true
allow_plain_http = true
"""


def write_secret(work: Path) -> Path:
    """A fresh directory with the endpoint's `whsec_` secret file in it."""
    work.mkdir(parents=True)
    secret = work / "bench.whsec"
    secret.write_text("whsec_" + base64.b64encode(b"bench-secret-0123456789").decode())
    return secret


def outbox_ids(db: Path) -> list[str]:
    """Every event id the gateway wrote, read after it stopped (read-only)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY seq")]
    finally:
        conn.close()


def outbox_count(db: Path) -> int:
    return int(harness.query_one(db, "SELECT count(*) FROM outbox")[0])


def compare(expected: list[str], got: dict[str, int]) -> dict[str, int]:
    wanted = set(expected)
    return {
        "expected": len(wanted),
        "received": sum(got.values()),
        "missing": len(wanted - got.keys()),
        "duplicates": sum(c - 1 for c in got.values() if c > 1),
        "unexpected": len(got.keys() - wanted),
    }


async def events_run(
    scenario: smpp.Scenario,
    settings: smpp.Settings,
    placement: smpp.Placement,
    work: Path,
    drain_timeout: float,
) -> dict[str, Any]:
    secret = write_secret(work)
    mqtt_port = harness.free_port()
    async with (
        Broker(work / "mosquitto", mqtt_port, placement.client),
        Receiver(placement.client, mqtt_port) as receiver,
    ):
        extra = _EVENTS_CONFIG.format(mqtt_port=mqtt_port, url=receiver.url, secret_file=secret)
        db = work / "gw" / "smsgw.db"

        async def drain(_system: smpp.System) -> dict[str, Any]:
            """With smsgw up: wait until both receivers hold as many distinct events as
            the outbox has, and the outbox stopped growing."""
            t0 = time.monotonic()
            last_total = -1
            while True:
                total = outbox_count(db)
                stats = await receiver.command("stats")
                done = min(stats["webhook"]["unique"], stats["mqtt"]["unique"]) >= total
                if (done and total == last_total) or time.monotonic() - t0 > drain_timeout:
                    break
                last_total = total
                await asyncio.sleep(DRAIN_POLL_S)
            return {
                "events_drain_s": round(time.monotonic() - t0, 2),
                "events_drained": done,
            }

        result = await smpp.measure(
            "smsgw",
            scenario,
            settings,
            placement,
            work / "gw",
            extra_config=extra,
            before_stop=drain,
        )
        got = await receiver.ids(work / "ids.json")
    expected = outbox_ids(db)
    result["events"] = len(expected)
    result["events_per_message"] = round(len(expected) / max(1, result["accepted"]), 2)
    result["webhook"] = compare(expected, got["webhook"])
    result["mqtt"] = compare(expected, got["mqtt"])
    return result


async def run_all(args: argparse.Namespace, placement: smpp.Placement, root: Path) -> int:
    settings = smpp.Settings.for_run(args.quick, args.n)
    scenario = next(s for s in smpp.SCENARIOS if s.name == args.scenario)
    rates: dict[str, list[float]] = {"base": [], "events": []}
    checks: list[dict[str, Any]] = []
    failures = 0
    for i in range(settings.repeats):
        for kind in ("base", "events"):
            work = root / f"{kind}-{i}"
            try:
                if kind == "base":
                    result = await smpp.measure("smsgw", scenario, settings, placement, work)
                else:
                    result = await events_run(
                        scenario, settings, placement, work, args.drain_timeout
                    )
            except (RuntimeError, OSError, TimeoutError) as e:
                failures += 1
                print(
                    json.dumps(
                        {"bench": "events", "run": kind, "error": f"{type(e).__name__}: {e}"}
                    ),
                    flush=True,
                )
                continue
            result["bench"] = "events"
            result["run"] = kind
            print(json.dumps(result), flush=True)
            rates[kind].append(result["per_s"])
            if kind == "events":
                checks.append(result)
    base = round(statistics.median(rates["base"]), 1) if rates["base"] else None
    with_events = round(statistics.median(rates["events"]), 1) if rates["events"] else None
    lost = sum(c[k]["missing"] for c in checks for k in ("webhook", "mqtt"))
    if lost or not checks or not all(c["events_drained"] for c in checks):
        failures += 1
    summary = {
        "bench": "events",
        "ratio": smpp.ratio(with_events, base),
        "target": TARGET,
        "base_per_s": base,
        "events_per_s": with_events,
        "events": [c["events"] for c in checks],
        "events_drain_s": [c["events_drain_s"] for c in checks],
        "webhook": [c["webhook"] for c in checks],
        "mqtt": [c["mqtt"] for c in checks],
        "all_events_delivered": bool(checks) and not lost,
        "settings": {
            "scenario": scenario.name,
            "n": settings.n,
            "runs_each": settings.repeats,
            "wrk_connections": settings.concurrency,
            "window": smpp.WINDOW,
            "consumers": "1 webhook (all events, phi=false, http loopback) + MQTT QoS 1",
            "receivers": "bench/event_receiver.py (aiohttp + aiomqtt), mosquitto",
            "placement": placement.text + "; receivers and mosquitto with wrk",
        },
    }
    print(
        f"\nsmsgw {scenario.name}: {base} /s alone, {with_events} /s with webhook + MQTT;"
        f" ratio {summary['ratio']} (target >= {TARGET}); every event at both receivers:"
        f" {summary['all_events_delivered']}"
    )
    harness.publish_summary(summary, LATEST)
    return 1 if failures else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 4,000, one pair of runs")
    p.add_argument("--n", type=int, help="messages per run (default 20000, quick 4000)")
    p.add_argument("--scenario", default="clinical", choices=[s.name for s in smpp.SCENARIOS[:2]])
    p.add_argument(
        "--drain-timeout", type=float, default=600.0, help="seconds to wait for the receivers"
    )
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = smpp.install_missing()
    for tool in ("wrk", "mosquitto"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            print(f"bench: {tool} is not installed; {problem or 'make peers installs it'}")
            return 2
    smpp.smpp_peer.ensure_installed()
    placement = smpp.setup_placement()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-events-"))
    settings = smpp.Settings.for_run(args.quick, args.n)
    print(
        f"events: smsgw {args.scenario}, N={settings.n}, {settings.repeats} pair(s) of runs"
        f" (alone, then with a webhook endpoint + MQTT); {placement.text}; data in {root}",
        flush=True,
    )
    return harness.run_bench(
        lambda: run_all(args, placement, root), root, args.keep, smpp.RUN_TIMEOUT_S
    )


if __name__ == "__main__":
    sys.exit(main())
