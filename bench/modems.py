"""A bank of 1, 2, 4 and 8 emulated modems at 3 s per part behind a real `smsgw run`.

    .venv/bin/python bench/modems.py            # full: 10 s warm-up, 45 s window per N
    .venv/bin/python bench/modems.py --quick    # 5 s warm-up, 21 s window per N
    .venv/bin/python bench/modems.py --modems 8 --no-receipts

For each N the emulated modems (drivers/modem/emulator.py, real ptys, the real clock,
`send_latency` 3 s per part as a real GSM modem takes) run in this process; a fresh
`smsgw init` gets one `type = "modem"` route listing their ptys (window N, no per-modem
limits) and runs as a subprocess. A backlog of single-part messages is queued through
`POST /messages/batch`, large enough that every modem always has work. Once each modem
has sent its first part, a warm-up passes, then the measured window: parts the emulators
received (`len(modem.sent)` deltas) per minute against the ideal N x 20/min, and the
gateway's CPU seconds (all its threads, /proc/<pid>/task/*/schedstat) per part sent.
The window is a whole number of part times (45 s, quick 21 s): parts finish in steps of
3 s on every modem, and the modems run nearly in phase, so another length would bias the
count by up to N parts. `part_time_ratio` (3 s over the mean time from one part to the
next of the same modem, timed as each arrives) is the finer figure beside it.

By default every message asks for a status report (the `normal` class keeps its default
`want_receipt = true`), so the driver also reads and deletes a report from the SIM for
every part, between sends, as in a hospital's use; `--no-receipts` turns that off.

One JSON line per N; the last line is the summary, `ratio` being the one at 8 modems.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import client
import harness
import structlog
from harness import LOOPBACK, GatewayHome, Pinning, Server

from drivers.modem.emulator import EmulatedModem, ModemBankEmulator

SEND_LATENCY_S = 3.0  # the emulator's default: a real modem's time per part
IDEAL_PER_MODEM_PER_MIN = 60.0 / SEND_LATENCY_S
ROUTE = "bank"
FIRST_PART_TIMEOUT_S = 60.0
BACKLOG_MARGIN = 1.5  # queued = ideal parts over the whole run x this, plus claim-ahead
RUN_TIMEOUT_S = 900.0
# The Raspberry Pi extrapolation: assumed, not measured (no Pi here).
PI_MODEMS = 16
PI_SLOWDOWN = 4.0  # one Pi 4 core (Cortex-A72, 1.5 GHz) taken as ~4x slower than one core here


@dataclass(frozen=True, slots=True)
class Settings:
    warmup_s: float
    window_s: float
    counts: tuple[int, ...]
    receipts: bool

    @property
    def run_s(self) -> float:
        return self.warmup_s + self.window_s


def placement(pinning: Pinning) -> str:
    if not pinning.active:
        return pinning.describe()
    return "gateway on CPU 0, the emulators (this process) on CPU 1 (taskset)"


def say(text: str) -> None:
    print(f"  {text}", flush=True)


_EXTRA = """\
# bench/modems.py: status reports for the class the load uses: {receipts}.
[queue.classes.normal]
expires_after = 86400.0
max_attempts = 8
min_share = 0.05
want_receipt = {want_receipt}

# bench/modems.py: one modem bank, one send in flight per modem, no per-modem limits.
[[routes]]
name = "{route}"
type = "modem"
window = {window}
modems = [
{modems}
]
"""


def configure(home: GatewayHome, ports: Sequence[str], receipts: bool) -> None:
    """Replace the routes `smsgw init` wrote by the bank of `ports`."""
    head, _, _ = home.config_path.read_text().partition("[[routes]]")
    modems = ",\n".join(
        f'  {{ name = "modem{i + 1}", port = "{port}" }}' for i, port in enumerate(ports)
    )
    extra = _EXTRA.format(
        receipts="on" if receipts else "off",
        want_receipt="true" if receipts else "false",
        route=ROUTE,
        window=len(ports),
        modems=modems,
    )
    home.config_path.write_text(head.rstrip() + "\n\n" + extra)


def gateway(home: GatewayHome, pinning: Pinning) -> Server:
    port = harness.free_port()
    argv = harness.python_argv(
        pinning,
        "-m",
        "gateway.cli",
        "run",
        "--config",
        str(home.config_path),
        "--listen",
        f"{LOOPBACK}:{port}",
    )
    return Server("smsgw", argv, port, home.data_dir / "gateway.log")


def gateway_cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, from schedstat (ns) rather than stat's ticks:
    a window's few hundred milliseconds would otherwise be counted in 10 ms steps."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def sent_parts(modems: Sequence[EmulatedModem]) -> int:
    return sum(len(m.sent) for m in modems)


class PartClock:
    """When each modem's parts arrived (monotonic), to show the time one part takes."""

    def __init__(self, modems: Sequence[EmulatedModem]) -> None:
        self.times: list[list[float]] = [[] for _ in modems]
        self._tasks = [
            asyncio.create_task(self._watch(m, t)) for m, t in zip(modems, self.times, strict=True)
        ]

    @staticmethod
    async def _watch(modem: EmulatedModem, times: list[float]) -> None:
        while True:
            await modem.wait_sent(len(modem.sent) + 1, timeout=RUN_TIMEOUT_S)
            times.append(time.monotonic())

    def mean_part_s(self, start: float, end: float) -> float | None:
        """Mean time from one part to the next of the same modem inside [start, end]."""
        spans = gaps = 0.0
        for times in self.times:
            inside = [t for t in times if start <= t <= end]
            if len(inside) >= 2:
                spans += inside[-1] - inside[0]
                gaps += len(inside) - 1
        return spans / gaps if gaps else None

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def log_problems(path: Path, start: int, end: int) -> dict[str, Any]:
    """Warning-or-worse JSON log lines of the gateway between two byte offsets."""
    found: list[str] = []
    with path.open("rb") as f:
        f.seek(start)
        for line in f.read(end - start).decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("level") in (
                    "warning",
                    "error",
                    "critical",
                ):
                    found.append(str(record.get("event", "?")))
    out: dict[str, Any] = {"log_problems": len(found)}
    if found:
        out["log_first_problem"] = found[0]
    return out


async def measure(n: int, settings: Settings, pinning: Pinning, work: Path) -> dict[str, Any]:
    home = await harness.init_gateway(work)
    async with ModemBankEmulator(n, send_latency=SEND_LATENCY_S) as bank:
        configure(home, bank.paths, settings.receipts)
        server = gateway(home, pinning)
        await server.start()
        clock = PartClock(bank.modems)
        try:
            # Ideal parts over the whole run (first parts, warm-up, window, stop) and
            # the claim-ahead, with a margin: no modem ever waits for work.
            backlog = math.ceil(
                n * IDEAL_PER_MODEM_PER_MIN / 60 * (settings.run_s + FIRST_PART_TIMEOUT_S / 2)
            )
            backlog = math.ceil(backlog * BACKLOG_MARGIN) + 4 * n
            async with client.Api(server.url, home.token) as api:
                await api.preload(backlog, "normal")
                say(f"N={n}: {backlog} messages queued; waiting for every modem's first part")
                await asyncio.gather(*(m.wait_sent(1, FIRST_PART_TIMEOUT_S) for m in bank.modems))
                await asyncio.sleep(settings.warmup_s)
                log_start = server.log_path.stat().st_size
                parts0, cpu0 = sent_parts(bank.modems), harness.CpuSnapshot.take(server.pid)
                gateway0 = gateway_cpu_seconds(server.pid)
                await asyncio.sleep(settings.window_s)
                parts1, cpu1 = sent_parts(bank.modems), harness.CpuSnapshot.take(server.pid)
                gateway1 = gateway_cpu_seconds(server.pid)
                log_end = server.log_path.stat().st_size
                left = await api.queue()
                sent_api = await api.sent_count(ROUTE)
        finally:
            await clock.aclose()
            code = await server.stop()
    cpu = cpu0.until(cpu1)
    parts = parts1 - parts0
    per_min = parts * 60 / cpu.seconds
    ideal = n * IDEAL_PER_MODEM_PER_MIN
    gateway_cpu = gateway1 - gateway0
    part_s = clock.mean_part_s(cpu0.at, cpu1.at)
    delivered = harness.query_one(
        home.db_path, "SELECT count(*) FROM messages WHERE state = 'delivered'"
    )[0]
    result: dict[str, Any] = {
        "bench": "modems",
        "modems": n,
        "window_s": round(cpu.seconds, 2),
        "parts": parts,
        "per_min": round(per_min, 1),
        "ideal_per_min": ideal,
        "ratio": round(per_min / ideal, 3),
        "mean_part_s": None if part_s is None else round(part_s, 3),
        "part_time_ratio": None if part_s is None else round(SEND_LATENCY_S / part_s, 3),
        "cpu_ms_per_part": round(1000 * gateway_cpu / parts, 3) if parts else None,
        "gateway_cpu_s": round(gateway_cpu, 3),
        "gateway_cpu_share": round(gateway_cpu / cpu.seconds, 4),
        "foreign_cpu_s": round(cpu.foreign_s, 2),
        "queued_at_end": left.queued,
        "gateway_sent_total": sent_api,
        "delivered_total": delivered,
        "exit_code": code,
    }
    result.update(log_problems(server.log_path, log_start, log_end))
    return result


def pi_extrapolation(cpu_ms_per_part: float | None) -> dict[str, Any] | None:
    """The share of one Pi core `PI_MODEMS` busy modems would need, by proportion."""
    if cpu_ms_per_part is None:
        return None
    parts_per_s = PI_MODEMS * IDEAL_PER_MODEM_PER_MIN / 60
    share = cpu_ms_per_part / 1000 * parts_per_s * PI_SLOWDOWN
    return {
        "modems": PI_MODEMS,
        "parts_per_s": round(parts_per_s, 2),
        "core_share": round(share, 3),
        "assumption": (
            f"CPU per part as measured at the largest N, one Pi 4 core {PI_SLOWDOWN:g}x slower"
            " than one core here, CPU proportional to parts sent (not measured on a Pi)"
        ),
    }


async def run_all(settings: Settings, pinning: Pinning, root: Path) -> int:
    per_n: dict[str, Any] = {}
    failures = 0
    for n in settings.counts:
        try:
            result = await measure(n, settings, pinning, root / f"n{n}")
        except (RuntimeError, OSError, TimeoutError) as e:
            failures += 1
            print(json.dumps({"bench": "modems", "modems": n, "error": repr(e)}), flush=True)
            continue
        print(json.dumps(result), flush=True)
        per_n[str(n)] = {
            k: result[k]
            for k in ("per_min", "ideal_per_min", "ratio", "part_time_ratio", "cpu_ms_per_part")
        }
    largest = per_n.get(str(max(settings.counts)), {})
    summary = {
        "bench": "modems",
        "ratio": per_n.get("8", {}).get("ratio"),
        "per_n": per_n,
        "cpu_ms_per_part": largest.get("cpu_ms_per_part"),
        "raspberry_pi": pi_extrapolation(largest.get("cpu_ms_per_part")),
        "settings": {
            "counts": list(settings.counts),
            "send_latency_s": SEND_LATENCY_S,
            "warmup_s": settings.warmup_s,
            "window_s": settings.window_s,
            "receipts": settings.receipts,
            "route": "type = modem, window = N, no per-modem limits, other options default",
            "message": "one part (160 GSM-7 characters), class normal, via /messages/batch",
            "emulators": "in the bench process, real ptys, real clock, profiles cycled",
            "placement": placement(pinning),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        },
    }
    print(json.dumps(summary), flush=True)
    return 1 if failures else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s warm-up and 21 s window per N")
    p.add_argument("--modems", type=int, nargs="+", help="bank sizes (default 1 2 4 8)")
    p.add_argument("--no-receipts", action="store_true", help="messages ask no status report")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and logs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warmup, window = (5.0, 21.0) if args.quick else (10.0, 45.0)
    counts = tuple(args.modems or (1, 2, 4, 8))
    if min(counts) < 1:
        print("bench: --modems takes counts of at least 1", file=sys.stderr)
        return 2
    settings = Settings(warmup, window, counts, receipts=not args.no_receipts)
    # The emulators' own info lines (plugged, unplugged) would clutter the output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pinning = harness.setup_pinning()
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-modems-"))
    print(
        f"modems ({'quick' if args.quick else 'full'}): N = {' '.join(map(str, counts))};"
        f" {SEND_LATENCY_S:g} s per part; {warmup:g} s warm-up + {window:g} s window each;"
        f" receipts {'on' if settings.receipts else 'off'}; {placement(pinning)};"
        f" data in {root}",
        flush=True,
    )
    try:
        return asyncio.run(asyncio.wait_for(run_all(settings, pinning, root), RUN_TIMEOUT_S))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
