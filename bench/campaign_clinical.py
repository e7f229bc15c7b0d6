"""A bulk campaign beside clinical traffic (issue 15, point 10).

    .venv/bin/python bench/campaign_clinical.py            # N = 100,000 (make bench-campaign)
    .venv/bin/python bench/campaign_clinical.py --n 2000   # a short check
    .venv/bin/python bench/campaign_clinical.py --rate 500 # a carrier's contracted rate
    .venv/bin/python bench/campaign_clinical.py --n 30000 --stages  # where the time goes

A fresh `smsgw init` runs as a subprocess (`smsgw run`, on CPU 0) with one SMPP route to
the SMSC simulator (`drivers/smpp/simulator.py`, in this process on CPU 1; window 50, no
rate unless `--rate`; receipts 1 s after each submit). N contacts are imported through
the product's import job (`POST /contacts/imports`, bench/contacts_import.py) and put in
a group; a campaign to the group (class bulk, purpose `informational`, which needs no
recorded consent, only no opt-out) is created and started through
`POST /api/v1/campaigns` at `--campaign-rate` (`[campaigns] max_rate` raised in this
bench's config only). From the start request until the whole campaign has left, a
clinical message (purpose `results`, class high, each to its own number) is sent every
100 ms through `POST /messages`.

Printed: the clinical messages' accept-to-`sending` time (the `sending` event's time
minus the `queued` event's, from `GET /messages/{id}`) p50/p99/max (target p99 < 50 ms),
also split into those sent while the campaign runner was still queuing and those sent
after; the campaign's throughput at the carrier (bulk submits over the time from the
start request to the last); and the gateway's CPU and bytes written per message, which
hold on a busy machine. The last line is the summary as JSON, kept in
bench/results/campaign-latest.json. `--stages` adds where the clinical sends' time went
(`stages_ms`: prepared → its accept job in the writer → commit back on the loop →
claim asked → claim committed, the writer's transactions with the campaign's passes
apart, the event loop's lag), from bench/stage_trace/sitecustomize.py in the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import campaign_api
import client
import contacts_import
import harness
import loadgen
import modems
import scenarios
import structlog
from diskwrites import Io
from harness import GatewayHome, Pinning
from scenarios import percentile

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator

LATEST = harness.BENCH_DIR / "results" / "campaign-latest.json"
ROUTE = "carrier"
SYSTEM_ID = "smsgw"
CLINICAL_EVERY_S = 0.1
CLINICAL_PURPOSE = "results"
RUN_TIMEOUT_S = 3600.0
TARGET_P99_MS = 50.0

_ROUTE = """
[[routes]]
name = "{name}"
type = "smpp"
{rate}burst = 10
window = 50
host = "127.0.0.1"
port = {port}
system_id = "{system_id}"
password = "{password}"
session_window = 50
reconnect_min = 0.5
reconnect_max = 5.0
"""

# The clinical sends at any hour and without the clinical caps (each goes to its own
# number anyway): the bench must not depend on the time of day. (`smsgw init` already
# opens the informational purpose's window, which the campaign takes.)
_PURPOSES = f"""
[consent.purposes.{CLINICAL_PURPOSE}]
window = ""
caps = []
"""


@dataclass(frozen=True, slots=True)
class Settings:
    n: int
    rate: float | None  # the route's (the carrier's contract)
    campaign_rate: float  # the campaign's send rate, below the route's: room for clinical
    stages: bool = False  # time each clinical send's stages (bench/stage_trace)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def configure(home: GatewayHome, settings: Settings, smsc_port: int, password: str) -> None:
    """Replace the routes `smsgw init` wrote by the simulator's; open the clinical purpose."""
    head, _, _ = home.config_path.read_text().partition("[[routes]]")
    route = _ROUTE.format(
        name=ROUTE,
        rate="" if settings.rate is None else f"rate = {settings.rate!r}\n",
        port=smsc_port,
        system_id=SYSTEM_ID,
        password=password,
    )
    campaigns = f"\n[campaigns]\nmax_rate = {max(50.0, settings.campaign_rate)!r}\n"
    home.config_path.write_text(head.rstrip() + "\n" + campaigns + _PURPOSES + route)


def campaign_spec(group_id: str, rate: float) -> dict[str, Any]:
    """The campaign: class bulk, purpose informational, to the group, at `rate`."""
    return {
        "name": "bench campaign",
        "audience": {"groups": [group_id]},
        "purpose": "informational",
        "priority": "bulk",
        "text": loadgen.BODY_160_GSM,
        "rate": rate,
    }


@dataclass
class Clinical:
    """Clinical sends every 100 ms, each to its own number, until `stop` is set."""

    ids: list[tuple[float, str]]  # (when sent, monotonic; message id)
    round_trips: list[float]  # ms from the POST to its 202 (which follows the commit)
    stop: asyncio.Event

    async def run(self, api: client.Api) -> None:
        start = time.monotonic()
        for i in range(loadgen.RECIPIENTS):
            if self.stop.is_set():
                return
            sms = {
                "to": loadgen.recipient(i),
                "body": f"Your result {i} is ready; please call the clinic.",
                "purpose": CLINICAL_PURPOSE,
            }
            sent = time.monotonic()
            self.ids.append((sent, await api.send(sms)))
            self.round_trips.append(1000 * (time.monotonic() - sent))
            next_at = start + (i + 1) * CLINICAL_EVERY_S
            try:
                await asyncio.wait_for(self.stop.wait(), max(0.0, next_at - time.monotonic()))
            except TimeoutError:
                continue


def latency(delays: list[float]) -> dict[str, Any]:
    if not delays:
        return {"count": 0}
    return {
        "count": len(delays),
        "p50_ms": round(percentile(delays, 50), 1),
        "p99_ms": round(percentile(delays, 99), 1),
        "max_ms": round(max(delays), 1),
        "over_target": sum(d >= TARGET_P99_MS for d in delays),
    }


def trace_stages(work: Path) -> Path:
    """The gateway started after this imports bench/stage_trace/sitecustomize.py, which
    writes its stage timestamps to the path returned when it exits."""
    path = work / "stages.json"
    folder = str(harness.BENCH_DIR / "stage_trace")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
    os.environ["SMSGW_STAGE_TRACE"] = str(path)
    return path


async def measure(settings: Settings, pinning: Pinning, work: Path) -> dict[str, Any]:
    home = await harness.init_gateway(work)
    stages = trace_stages(work) if settings.stages else None
    password = secrets.token_hex(4)  # SMPP 3.4 passwords hold at most 8 characters
    sim_config = SimulatorConfig(system_id=SYSTEM_ID, password=password, receipt_delay=1.0)
    async with SmscSimulator(sim_config) as sim:
        configure(home, settings, sim.port, password)
        server = modems.gateway(home, pinning)
        await server.start()
        try:
            async with client.Api(server.url, home.token) as api:
                group, job, import_s = await contacts_import.audience_group(
                    api.session, server.url, home.token, settings.n, work.parent
                )
                say(f"{job['created']:,} contacts imported in {import_s:.1f} s, one group")
                log_start = server.log_path.stat().st_size
                cpu0, io0 = harness.CpuSnapshot.take(server.pid), Io.of(server.pid)
                clinical = Clinical([], [], asyncio.Event())
                campaign = await campaign_api.create_and_start(
                    api.session, server.url, campaign_spec(group, settings.campaign_rate)
                )
                clinical_task = asyncio.create_task(clinical.run(api))
                found = await campaign_api.wait_done(
                    api.session, server.url, campaign.id, RUN_TIMEOUT_S
                )
                queued_s = campaign.since_start(found["campaign"]["done_at"])
                queued_at = campaign.at + queued_s
                say(f"campaign of {settings.n:,} queued in {queued_s:.1f} s; dispatching")
                await scenarios.wait_idle(api, RUN_TIMEOUT_S)
                clinical.stop.set()
                await clinical_task
                await scenarios.wait_idle(api, RUN_TIMEOUT_S)  # the last clinical send has left too
                cpu = cpu0.until(harness.CpuSnapshot.take(server.pid))
                written = Io.of(server.pid).written - io0.written
                log_end = server.log_path.stat().st_size
                delays = await scenarios.sending_delays(api, [mid for _, mid in clinical.ids])
                found = await campaign_api.detail(api.session, server.url, campaign.id)
        finally:
            code = await server.stop()
        arrivals = [at for at, _ in sim.arrivals]
    while_queueing = [d for (at, _), d in zip(clinical.ids, delays, strict=True) if at < queued_at]
    while_sending = [d for (at, _), d in zip(clinical.ids, delays, strict=True) if at >= queued_at]
    bulk = len(arrivals) - len(clinical.ids)
    span = arrivals[-1] - campaign.at if arrivals else 0.0
    totals = found["progress"]["totals"]
    overall = latency(delays)
    result: dict[str, Any] = {
        "bench": "campaign_clinical",
        "n": settings.n,
        "clinical": overall,
        "clinical_while_queueing": latency(while_queueing),
        "clinical_while_dispatching": latency(while_sending),
        # Where the slow ones lost their time: an accept's commit comes before the
        # scheduler sees the message, so a slow 202 means a slow `queued` to `sending` too.
        "clinical_accept_round_trip": latency(clinical.round_trips),
        "target": f"clinical p99 < {TARGET_P99_MS:g} ms",
        "met": overall.get("p99_ms", 0.0) < TARGET_P99_MS,
        "bulk_submits": bulk,
        "bulk_per_s": round(bulk / span, 1) if span else None,
        "bulk_span_s": round(span, 2),
        "campaign": {
            "state": found["campaign"]["state"],
            "handled": found["progress"]["handled"],
            "rate": settings.campaign_rate,
            "queueing_s": round(queued_s, 2),
            **{
                k: totals[k]
                for k in ("queued", "sent", "delivered", "failed", "blocked", "skipped")
            },
        },
        "import_s": round(import_s, 2),
        "gateway_cpu": round(cpu.utilisation, 2),
        # Load-independent: the gateway's CPU (all threads) per message it took and sent,
        # from the campaign's start until the queue was idle, whatever else ran.
        "gateway_cpu_s": round(cpu.main_s + cpu.threads_s, 2),
        "gateway_written_kb_per_message": round(written / 1024 / (bulk + len(clinical.ids)), 1),
        "gateway_cpu_us_per_message": {
            k: round(v, 1)
            for k, v in zip(
                ("event_loop", "other_threads"),
                cpu.per_item_us(bulk + len(clinical.ids)),
                strict=True,
            )
        },
        "foreign_cpu_s": round(cpu.foreign_s, 2),
        "exit_code": code,
    }
    result.update(modems.log_problems(server.log_path, log_start, log_end))
    if stages is not None:
        from stage_trace.sitecustomize import summarise

        result["stages_ms"] = summarise(stages)
    return result


async def run(settings: Settings, pinning: Pinning, root: Path) -> int:
    result = await measure(settings, pinning, root / "gateway")
    rate = "none" if settings.rate is None else f"{settings.rate:g}/s"
    result["settings"] = {
        "route": f"one SMPP bind to the SMSC simulator, rate {rate}, burst 10, window 50",
        "campaign": (
            "contacts imported (POST /contacts/imports), a group, a campaign (POST"
            f" /campaigns, then /start), bulk, purpose informational, at"
            f" {settings.campaign_rate:g}/s"
        ),
        "clinical": f"purpose {CLINICAL_PURPOSE} (class high), POST /messages every 100 ms",
        "timing": "events: 'sending' at minus 'queued' at (ms resolution)",
        "placement": modems.placement(pinning).replace("the emulators", "the simulator"),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
    }
    harness.publish_summary(result, LATEST)
    return 0 if result["exit_code"] == 0 else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="campaign recipients (100,000)")
    p.add_argument("--rate", type=float, default=1000.0, help="the route's rate (1000/s; 0: none)")
    p.add_argument("--campaign-rate", type=float, default=700.0, help="campaign send rate (700/s)")
    p.add_argument("--keep", action="store_true", help="keep the data, config and log")
    p.add_argument(
        "--stages", action="store_true", help="time the clinical sends' stages (stage_trace)"
    )
    args = p.parse_args(argv)
    if args.n < 1 or args.rate < 0 or not 0 < args.campaign_rate <= 10_000:
        p.error("--n takes a count of at least 1, --rate >= 0, --campaign-rate (0, 10000]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(args.n, args.rate or None, args.campaign_rate, args.stages)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pinning = harness.setup_pinning()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-campaign-"))
    print(
        f"campaign_clinical: N = {settings.n:,} bulk, a clinical send every 100 ms;"
        f" {modems.placement(pinning).replace('the emulators', 'the simulator')};"
        f" data in {root}",
        flush=True,
    )
    try:
        # Plain asyncio: loop.time() (the simulator's arrival times) is time.monotonic().
        return asyncio.run(run(settings, pinning, root))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
