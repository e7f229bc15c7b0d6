"""An emergency broadcast over every route at once (issue 15, point 4).

    .venv/bin/python bench/broadcast.py              # N = 100,000 (make bench-broadcast)
    .venv/bin/python bench/broadcast.py --n 2000     # a short check
    .venv/bin/python bench/broadcast.py --smpp-rate 200 --banks 1 --modems 4

A fresh `smsgw init` runs as a subprocess (`smsgw run`, on CPU 0) with one SMPP route to
the SMSC simulator (`drivers/smpp/simulator.py`, rate `--smpp-rate`) and `--banks` modem
routes, each a bank of `--modems` emulated modems on real pseudo-terminals
(`drivers/modem/emulator.py`, `--send-latency` seconds per part) limited to
`--modem-rate` parts per second per modem, below what the emulators could do, so the
routes' configured rates are the limits. The simulator and the emulators run in this
process (CPU 1). Every route carries every class; the critical class spreads
(`[queue] spread_classes`, the default).

N contacts are imported through the product's import job (`POST /contacts/imports`,
bench/contacts_import.py) and put in a group; then an emergency campaign to that group
(purpose `emergency`: class critical, no consent needed, no quiet hours) is created and
started through `POST /api/v1/campaigns`, at `--campaign-rate` (default 1.25 x the
routes' combined rate, so the queue never runs dry; `[campaigns] max_rate` is raised in
this bench's config only). Timing runs from the start request to the last submit any
peer received (the simulator's arrival times, each modem's part times). Printed: time to
the last submit, the achieved rate, the routes' combined configured rate and the ratio
of the two (target >= 0.9), and per route its count and its own rate against its
configured one; counts are taken at the peers and checked against the routes the
gateway recorded. The last line is the summary as JSON, kept in
bench/results/broadcast-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import secrets
import shutil
import sqlite3
import tempfile
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
import structlog
from harness import GatewayHome, Pinning

from drivers.modem.emulator import ModemBankEmulator
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator

LATEST = harness.BENCH_DIR / "results" / "broadcast-latest.json"
SMPP_ROUTE = "carrier"
SYSTEM_ID = "smsgw"
ROUTES_UP_TIMEOUT_S = 60.0
POLL_S = 0.02
RUN_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    n: int
    smpp_rate: float
    banks: int
    modems: int  # per bank
    modem_rate: float  # parts per second per modem
    send_latency: float
    spread: bool = True
    campaign_rate: float | None = None  # None: 1.25 x the routes' combined rate

    @property
    def bank_rate(self) -> float:
        return self.modems * self.modem_rate

    @property
    def combined_rate(self) -> float:
        return self.smpp_rate + self.banks * self.bank_rate

    @property
    def feed_rate(self) -> float:
        return self.campaign_rate or round(1.25 * self.combined_rate)

    def bank_names(self) -> list[str]:
        return [f"bank{i + 1}" for i in range(self.banks)]


def say(text: str) -> None:
    print(f"  {text}", flush=True)


_SMPP = """
[[routes]]
name = "{name}"
type = "smpp"
rate = {rate!r}
burst = 10
window = 50
host = "127.0.0.1"
port = {port}
system_id = "{system_id}"
password = "{password}"
session_window = 50
reconnect_min = 0.5
reconnect_max = 5.0
"""

_BANK = """
[[routes]]
name = "{name}"
type = "modem"
rate = {rate!r}
burst = {window}
window = {window}
modems = [
{modems}
]
"""


def configure(
    home: GatewayHome, settings: Settings, smsc_port: int, password: str, ports: list[str]
) -> None:
    """Replace the routes `smsgw init` wrote by the carrier and the banks."""
    head, _, _ = home.config_path.read_text().partition("[[routes]]")
    head = head.rstrip() + f"\n\n[campaigns]\nmax_rate = {max(50.0, settings.feed_rate)!r}\n"
    if not settings.spread:  # the comparison: critical waits for the first route
        head = head.replace("[queue]\n", "[queue]\nspread_classes = []\n", 1)
    routes = [
        _SMPP.format(
            name=SMPP_ROUTE,
            rate=settings.smpp_rate,
            port=smsc_port,
            system_id=SYSTEM_ID,
            password=password,
        )
    ]
    for b, name in enumerate(settings.bank_names()):
        mine = ports[b * settings.modems : (b + 1) * settings.modems]
        tables = ",\n".join(
            f'  {{ name = "{name}-m{i + 1}", port = "{port}" }}' for i, port in enumerate(mine)
        )
        routes.append(
            _BANK.format(name=name, rate=settings.bank_rate, window=len(mine), modems=tables)
        )
    home.config_path.write_text(head.rstrip() + "\n" + "".join(routes))


def broadcast_spec(group_id: str, rate: float) -> dict[str, Any]:
    """The emergency campaign: purpose emergency (its class, critical) to the group."""
    return {
        "name": "bench broadcast",
        "audience": {"groups": [group_id]},
        "purpose": "emergency",
        "text": loadgen.BODY_160_GSM,
        "rate": rate,
    }


async def routes_up(api: client.Api, names: Sequence[str]) -> None:
    async with asyncio.timeout(ROUTES_UP_TIMEOUT_S):
        while True:
            states = {r["name"]: r["state"] for r in await api.routes()}
            if all(states.get(name) == "up" for name in names):
                return
            await asyncio.sleep(POLL_S)


def recorded_routes(db_path: Path) -> dict[str, int]:
    """Messages the gateway recorded as sent (or further) per route."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT route, count(*) FROM messages WHERE state IN ('sent', 'delivered', 'failed')"
            " GROUP BY route"
        ).fetchall()
    finally:
        conn.close()
    return {str(route): int(count) for route, count in rows}


async def measure(settings: Settings, pinning: Pinning, work: Path) -> dict[str, Any]:
    home = await harness.init_gateway(work)
    password = secrets.token_hex(4)  # SMPP 3.4 passwords hold at most 8 characters
    sim_config = SimulatorConfig(system_id=SYSTEM_ID, password=password, receipt_delay=1.0)
    total_modems = settings.banks * settings.modems
    async with (
        SmscSimulator(sim_config) as sim,
        ModemBankEmulator(total_modems, send_latency=settings.send_latency) as bank,
    ):
        configure(home, settings, sim.port, password, bank.paths)
        server = modems.gateway(home, pinning)
        await server.start()
        part_clock = modems.PartClock(bank.modems)
        try:
            async with client.Api(server.url, home.token) as api:
                await routes_up(api, [SMPP_ROUTE, *settings.bank_names()])
                group, job, import_s = await contacts_import.audience_group(
                    api.session, server.url, home.token, settings.n, work.parent
                )
                say(f"{job['created']:,} contacts imported in {import_s:.1f} s, one group")
                log_start = server.log_path.stat().st_size
                cpu0 = harness.CpuSnapshot.take(server.pid)
                campaign = await campaign_api.create_and_start(
                    api.session, server.url, broadcast_spec(group, settings.feed_rate)
                )
                async with asyncio.timeout(RUN_TIMEOUT_S):
                    # Peers of two kinds and no common event: a poll, 20 ms against minutes.
                    while sim.submits + modems.sent_parts(bank.modems) < settings.n:  # noqa: ASYNC110
                        await asyncio.sleep(POLL_S)
                cpu = cpu0.until(harness.CpuSnapshot.take(server.pid))
                found = await campaign_api.wait_done(
                    api.session, server.url, campaign.id, RUN_TIMEOUT_S
                )
                log_end = server.log_path.stat().st_size
        finally:
            await part_clock.aclose()
            code = await server.stop()
        smpp_times = [at for at, _ in sim.arrivals]
        modem_times = [sorted(times) for times in part_clock.times]
    last = max([*smpp_times[-1:], *(t[-1] for t in modem_times if t)])
    elapsed = last - campaign.at
    counts = {SMPP_ROUTE: len(smpp_times)}
    for b, name in enumerate(settings.bank_names()):
        counts[name] = sum(
            len(t) for t in modem_times[b * settings.modems : (b + 1) * settings.modems]
        )
    configured = {SMPP_ROUTE: settings.smpp_rate} | dict.fromkeys(
        settings.bank_names(), settings.bank_rate
    )
    achieved = settings.n / elapsed
    result: dict[str, Any] = {
        "bench": "broadcast",
        "n": settings.n,
        "time_to_last_submit_s": round(elapsed, 2),
        "achieved_per_s": round(achieved, 1),
        "combined_configured_per_s": settings.combined_rate,
        "ratio": round(achieved / settings.combined_rate, 3),
        "per_route": {
            name: {
                "submits": counts[name],
                "per_s": round(counts[name] / elapsed, 2),
                "configured_per_s": configured[name],
            }
            for name in counts
        },
        "recorded_by_gateway": recorded_routes(home.db_path),
        "campaign": {
            "state": found["campaign"]["state"],
            "handled": found["progress"]["handled"],
            "queued": found["progress"]["totals"]["queued"],
            "blocked": found["progress"]["totals"]["blocked"],
            "skipped": found["progress"]["totals"]["skipped"],
            "rate": settings.feed_rate,
            # when the runner had queued the last recipient
            "queued_all_after_s": round(campaign.since_start(found["campaign"]["done_at"]), 2),
        },
        "import_s": round(import_s, 2),
        "gateway_cpu": round(cpu.utilisation, 2),
        "foreign_cpu_s": round(cpu.foreign_s, 2),
        "exit_code": code,
    }
    result.update(modems.log_problems(server.log_path, log_start, log_end))
    return result


async def run(settings: Settings, pinning: Pinning, root: Path) -> int:
    result = await measure(settings, pinning, root / "gateway")
    result["target"] = "ratio >= 0.9"
    result["settings"] = {
        "smpp": f"one bind, rate {settings.smpp_rate:g}/s, burst 10, window 50, SMSC simulator",
        "banks": (
            f"{settings.banks} x {settings.modems} emulated modems, {settings.send_latency:g} s"
            f" per part, route rate {settings.bank_rate:g}/s (burst and window: its modems)"
        ),
        "spread_classes": ["critical"] if settings.spread else [],
        "message": "one part (160 GSM-7 characters), critical, purpose emergency, receipts on",
        "sending": (
            f"contacts imported (POST /contacts/imports), a group, an emergency campaign"
            f" (POST /campaigns, then /start) at {settings.feed_rate:g}/s"
        ),
        "placement": modems.placement(pinning),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
    }
    harness.publish_summary(result, LATEST)
    return 0 if result["per_route"] and result["exit_code"] == 0 else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="recipients (default 100,000)")
    p.add_argument("--smpp-rate", type=float, default=500.0, help="SMPP route rate (500/s)")
    p.add_argument("--banks", type=int, default=2, help="modem routes (2)")
    p.add_argument("--modems", type=int, default=4, help="emulated modems per bank (4)")
    p.add_argument("--modem-rate", type=float, default=10.0, help="parts/s per modem (10)")
    p.add_argument("--send-latency", type=float, default=0.05, help="emulated s per part (0.05)")
    p.add_argument(
        "--campaign-rate", type=float, default=0.0, help="campaign rate (0: 1.25 x combined)"
    )
    p.add_argument("--no-spread", action="store_true", help="compare: spread_classes = []")
    p.add_argument("--keep", action="store_true", help="keep the data, config and log")
    args = p.parse_args(argv)
    if args.n < 1 or args.banks < 1 or args.modems < 1:
        p.error("--n, --banks and --modems take counts of at least 1")
    if args.modem_rate * args.send_latency > 0.8:
        p.error("--modem-rate must stay below what an emulated modem does (1 / --send-latency)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        args.n,
        args.smpp_rate,
        args.banks,
        args.modems,
        args.modem_rate,
        args.send_latency,
        spread=not args.no_spread,
        campaign_rate=args.campaign_rate or None,
    )
    # The simulator's and emulators' own info lines would clutter the output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pinning = harness.setup_pinning()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-broadcast-"))
    print(
        f"broadcast: N = {settings.n:,} critical; SMPP {settings.smpp_rate:g}/s +"
        f" {settings.banks} x {settings.modems} modems at {settings.modem_rate:g}/s each ="
        f" {settings.combined_rate:g}/s; {modems.placement(pinning)}; data in {root}",
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
