"""Dispatch alone: N messages preloaded, then the scheduler drains them to the SMPP sink.

    .venv/bin/python bench/profile_dispatch.py                 # raw: no receipts
    .venv/bin/python bench/profile_dispatch.py --receipts      # clinical: a receipt each
    .venv/bin/python bench/profile_dispatch.py --cprofile 30   # and the top 30 functions
    .venv/bin/python bench/profile_dispatch.py --sql 15        # the writer's top 15 statements

The gateway runs in this process (pinned to CPU 0 when taskset-style pinning is possible)
with the real store, scheduler and SMPP driver, against `bench/smpp_sink.js` (on CPU 1).
No HTTP: the messages are committed before the clock starts, so what is measured is the
way from the queue to the carrier and back (claim, submit, `sent`, and with `--receipts`
each receipt). Prints the rate and CPU per message of the event loop's thread and of the
others (the SQLite writer). With `--cprofile`, the event loop's Python calls per message
(a count the machine's load does not change) and its functions by own time (cProfile
inflates small functions; use it to find, timeit to measure), then the same for the
writer thread (its own profile; SQLite's work shows as `execute`). With `--sql`, the
writer's statements by thread CPU per message (`sql_cost.py`). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

# bench/ (first on the path when run as a script) holds an hl7.py that would shadow the
# `hl7` package the gateway imports: import the gateway with bench/ off the path.
_BENCH = sys.path.pop(0)
from gateway import config as gateway_config  # noqa: E402
from gateway import logs  # noqa: E402
from gateway.app import Gateway  # noqa: E402
from gateway.cli import _tune_gc  # noqa: E402
from gateway.intake import SendRequest  # noqa: E402

sys.path.insert(0, _BENCH)
import harness  # noqa: E402
import sql_cost  # noqa: E402
import uvloop  # noqa: E402
from smpp import (  # noqa: E402
    _SMSGW_EXTRA,
    SCENARIOS,
    SYSTEM_ID,
    SYSTEM_PASSWORD,
    WINDOW,
    Placement,
    Sink,
)

PRELOAD_CHUNK = 500
BIND_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 300.0


async def run(
    n: int, receipts: bool, top: int, sql: int, drop: list[str], thread_timer: bool
) -> None:
    scenario = next(s for s in SCENARIOS if s.name == ("clinical" if receipts else "raw"))
    pinning = harness.setup_pinning()  # this process on CPU 1 for now
    placement = Placement(pinning.server, pinning.client, "")
    work = Path(tempfile.mkdtemp(prefix="smsgw-dispatch-"))
    async with Sink(scenario, placement) as sink:
        home = await harness.init_gateway(work / "gateway")
        head = home.config_path.read_text().partition("[[routes]]")[0]
        extra = _SMSGW_EXTRA.format(
            port=sink.port,
            system_id=SYSTEM_ID,
            password=SYSTEM_PASSWORD,
            window=WINDOW,
            want_receipt="true" if receipts else "false",
        )
        home.config_path.write_text(head + "\n" + extra)
        with (work / "gateway.log").open("w") as log_file:
            logs.configure("json", "info", stream=log_file)
            if pinning.active:
                os.sched_setaffinity(0, {0})  # the gateway, as bench/smpp.py places servers
            if sql:
                sql_cost.install()
            gw = await Gateway.open(gateway_config.load(home.config_path))
            for name in drop:  # a lever measured before it is built (readers not served)
                await gw.store.writer.call_outside_transaction(
                    lambda c, name=name: c.execute(f"DROP {name}")
                )
            now = gw.clock.time()
            prepared = [
                gw.intake.prepare(
                    SendRequest(to=f"+1202555{1000 + i % 9000:04d}", body="x" * 150), None, now
                )
                for i in range(n)
            ]
            for first in range(0, n, PRELOAD_CHUNK):
                await gw.store.insert(gw.intake.statements(prepared[first : first + PRELOAD_CHUNK]))
            health_changed = asyncio.Event()
            gw.sink.wake_on_health(health_changed.set)
            await gw.start(dispatch=False)
            async with asyncio.timeout(BIND_TIMEOUT_S):
                while not all(r.health().can_send for r in gw.routes.values()):
                    health_changed.clear()
                    await health_changed.wait()
            gw.intake.accepted(prepared)
            _tune_gc()  # as `smsgw run` does once started
            # Thread CPU as the profiler's clock: a thread's time off the CPU (the
            # machine's other load) is not charged to the function it was in.
            timer = (time.thread_time,) if thread_timer else ()
            profile = cProfile.Profile(*timer) if top else None
            writer_profile = cProfile.Profile(*timer) if top else None
            if writer_profile is not None:  # its own profile, enabled on the writer's thread
                await gw.store.writer.call_outside_transaction(lambda _: writer_profile.enable())
            sql_cost.reset()  # the dispatch only, not the preload
            before, started = harness.thread_cpu_seconds(os.getpid()), time.perf_counter()
            if profile is not None:
                profile.enable()
            task = asyncio.create_task(gw.scheduler.run())
            key = "receipts_acked" if receipts else "submits"
            done = await sink.wait_for(key, n, time.monotonic() + RUN_TIMEOUT_S)
            if done[key] < n:
                raise RuntimeError(f"only {done[key]} of {n} {key} in {RUN_TIMEOUT_S:.0f} s")
            if profile is not None:
                profile.disable()
            elapsed = time.perf_counter() - started
            after = harness.thread_cpu_seconds(os.getpid())
            loop_cpu = after["main"] - before.get("main", 0.0)
            others = sum(v - before.get(k, 0.0) for k, v in after.items() if k != "main")
            print(
                f"{n} messages in {elapsed:.2f} s: {n / elapsed:,.0f}/s; CPU per message:"
                f" event loop {loop_cpu / n * 1e6:.1f} us, other threads"
                f" {others / n * 1e6:.1f} us"
            )
            gw.scheduler.stop_claiming()
            await task
            if writer_profile is not None:
                await gw.store.writer.call_outside_transaction(lambda _: writer_profile.disable())
            await gw.stop()
            figures: dict[str, object] = {
                "n": n,
                "receipts": receipts,
                "rate": round(n / elapsed),
                "loop_cpu_us": round(loop_cpu / n * 1e6, 1),
                "other_cpu_us": round(others / n * 1e6, 1),
            }
            if profile is not None:
                stats = pstats.Stats(profile)
                # Python calls per message: a measure of work that does not depend on
                # how busy the machine is (the event loop's thread only).
                calls = stats.total_calls / n  # type: ignore[attr-defined]  # undocumented
                print(f"event loop: {calls:.0f} Python calls per message")
                figures["loop_calls"] = round(calls)
                stats.sort_stats("tottime").print_stats(top)
                if os.environ.get("PROFILE_DUMP"):  # for bench/cpu_by_module.py
                    stats.dump_stats(os.environ["PROFILE_DUMP"])
            if sql:
                print("\n".join(sql_cost.top(sql, n)))
            if writer_profile is not None:
                stats = pstats.Stats(writer_profile)
                calls = stats.total_calls / n  # type: ignore[attr-defined]  # undocumented
                print(f"writer thread: {calls:.0f} Python calls per message")
                figures["writer_calls"] = round(calls)
                stats.sort_stats("tottime").print_stats(top)
            print(json.dumps(figures))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="messages (default 20,000)")
    p.add_argument("--receipts", action="store_true", help="a receipt per message")
    p.add_argument("--cprofile", type=int, default=0, metavar="TOP", help="profile; top N")
    p.add_argument("--sql", type=int, default=0, metavar="TOP", help="writer's top N statements")
    p.add_argument(
        "--drop",
        nargs="*",
        default=[],
        metavar="WHAT",
        help='schema objects dropped before the run, e.g. "INDEX messages_state"',
    )
    p.add_argument(
        "--thread-timer",
        action="store_true",
        help="time --cprofile by each thread's CPU, not the wall clock (a busy machine)",
    )
    args = p.parse_args()
    uvloop.install()
    asyncio.run(run(args.n, args.receipts, args.cprofile, args.sql, args.drop, args.thread_timer))


if __name__ == "__main__":
    main()
