"""Where a clinical send's accept-to-`sending` time goes (`campaign_clinical.py --stages`).

Python imports `sitecustomize` at start-up from its path: the bench puts this folder on
the gateway's PYTHONPATH with SMSGW_STAGE_TRACE naming a file, and this module wraps a
few of the gateway's functions with monotonic timestamps (the product carries no
tracing). For each message the API accepts (prepared on the event loop, not by a
campaign's pass on the writer thread), in milliseconds:

    prepared   `Intake.prepare` returned (its `queued` event's time)
    job        its accept job began in the writer's transaction (`_judged_jobs`)
    committed  the commit settled on the loop (`Intake.accepted`)
    claim      the scheduler asked for its claim (its `sending` event's time)
    claimed    the claim committed and came back to the loop

and for every writer transaction its start, end and CPU (thread time), marked when it
was a campaign's pass; and the event loop's lag (a 5 ms
timer's lateness). Written as JSON at exit; `summarise` reads it.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGES = ("prepared", "job", "committed", "claim", "claimed")
LAG_PROBE_S = 0.005


def _ms() -> float:
    return time.monotonic() * 1000.0


class _Trace:
    def __init__(self) -> None:
        self.messages: dict[str, dict[str, float]] = {}
        self.transactions: list[tuple[float, float, float, bool]] = []  # start, end, cpu
        self.lags: list[float] = []
        self.in_pass = False  # the writer thread is running a campaign's pass

    def mark(self, ids: Sequence[str], stage: str) -> None:
        at = _ms()
        for mid in ids:
            stamps = self.messages.get(mid)
            if stamps is not None:
                stamps.setdefault(stage, at)

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {"messages": self.messages, "transactions": self.transactions, "lags": self.lags}
            )
        )


def _install(path: Path) -> None:
    from gateway import intake
    from gateway.app import Gateway
    from gateway.campaigns.runner import CampaignRunner
    from gateway.store import store, writer
    from gateway.usecases import messages

    trace = _Trace()
    main = threading.main_thread()
    prepare, accepted = intake.Intake.prepare, intake.Intake.accepted

    def traced_prepare(self: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = prepare(self, *args, **kwargs)
        if threading.current_thread() is main:
            trace.messages[prepared.message.id] = {"prepared": _ms()}
        return prepared

    def traced_accepted(self: Any, prepared: Sequence[Any]) -> None:
        trace.mark([p.message.id for p in prepared], "committed")
        accepted(self, prepared)

    judged = messages._judged_jobs

    def traced_judged(conn: Any, jobs: list[Any]) -> Any:
        trace.mark([j.prepared[0].message.id for j in jobs if j.prepared], "job")
        return judged(conn, jobs)

    claim_group = store.Store.claim_group

    async def traced_claim_group(self: Any, ids: Sequence[str], *args: Any) -> Any:
        trace.mark(ids, "claim")
        claims = await claim_group(self, ids, *args)
        trace.mark(ids, "claimed")
        return claims

    commit = writer.GroupCommitWriter._commit

    def traced_commit(self: Any, batch: Any) -> Any:
        start, cpu = _ms(), time.thread_time()
        try:
            return commit(self, batch)
        finally:
            cpu_ms = (time.thread_time() - cpu) * 1000.0
            was_pass, trace.in_pass = trace.in_pass, False
            trace.transactions.append((start, _ms(), cpu_ms, was_pass))

    run_pass_job = CampaignRunner._pass

    def traced_pass(self: Any, *args: Any) -> Any:
        trace.in_pass = True
        return run_pass_job(self, *args)

    start = Gateway.start

    async def traced_start(self: Any, *args: Any, **kwargs: Any) -> None:
        await start(self, *args, **kwargs)
        self._spawn(_probe(trace))

    intake.Intake.prepare = traced_prepare  # type: ignore[method-assign]
    intake.Intake.accepted = traced_accepted  # type: ignore[method-assign]
    messages._judged_jobs = traced_judged
    store.Store.claim_group = traced_claim_group  # type: ignore[method-assign]
    writer.GroupCommitWriter._commit = traced_commit  # type: ignore[method-assign]
    CampaignRunner._pass = traced_pass  # type: ignore[method-assign]
    Gateway.start = traced_start  # type: ignore[method-assign]
    atexit.register(trace.dump, path)


async def _probe(trace: _Trace) -> None:
    while True:
        before = _ms()
        await asyncio.sleep(LAG_PROBE_S)
        trace.lags.append(_ms() - before - LAG_PROBE_S * 1000.0)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)

    return {"count": len(ordered), "p50": at(50), "p90": at(90), "p99": at(99), "max": at(100)}


def summarise(path: Path) -> dict[str, Any]:
    """Per stage of the clinical sends, and of the writer's transactions, p50/p90/p99/max
    in ms (wall clock, so the machine's other load is in them; `cpu_ms` is not)."""
    found = json.loads(path.read_text())
    complete = [m for m in found["messages"].values() if all(s in m for s in STAGES)]
    out: dict[str, Any] = {}
    for before, after in itertools.pairwise(STAGES):
        out[f"{before}->{after}"] = _percentiles([m[after] - m[before] for m in complete])
    out["prepared->claim (the bench's figure)"] = _percentiles(
        [m["claim"] - m["prepared"] for m in complete]
    )
    for label, is_pass in (("campaign_pass", True), ("other_transaction", False)):
        rows = [t for t in found["transactions"] if t[3] is is_pass]
        out[label] = {
            "wall_ms": _percentiles([t[1] - t[0] for t in rows]),
            "cpu_ms": _percentiles([t[2] for t in rows]),
        }
    out["loop_lag_ms"] = _percentiles(found["lags"])
    return out


_PATH = os.environ.get("SMSGW_STAGE_TRACE")
if _PATH and __name__ == "sitecustomize":  # not when the bench imports `summarise`
    _install(Path(_PATH))
