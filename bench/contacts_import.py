"""Contacts CSV import: rows per second, and how promptly sends are accepted meanwhile.

    .venv/bin/python bench/contacts_import.py               # 100,000 rows
    .venv/bin/python bench/contacts_import.py --rows 5000   # a quick check

A fresh gateway (`smsgw init`, then `smsgw run` with its route held as bench/accept.py
holds it) imports a synthetic file through the public API (`POST
/api/v1/contacts/imports`, text/csv; the job polled at `GET .../imports/{id}`): every
row a new contact with a language, an age band, a clinic, preferences and a tag
(valid +1 202 numbers; the route is a held loopback and every send goes to one
fictional number, so nothing reaches them). While it
runs, one send (`POST /api/v1/messages`) every 100 ms, each timed from request to its
202. rows/s = rows / (job done - upload started); the accept latencies during the
import give p50 and p99 (ms), with the same figures before the import for comparison.
The summary goes to bench/results/contacts-import-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import harness

LATEST = harness.BENCH_DIR / "results" / "contacts-import-latest.json"
HELD = harness.RouteSpec(rate=0.001, burst=1)
SEND_EVERY_S = 0.1
BASELINE_SENDS = 20
RUN_TIMEOUT_S = 1800.0
TAG = "bench"


def synthetic(path: Path, rows: int) -> None:
    """`rows` distinct valid numbers (+1 202 2xx xxxx: a store and a held loopback
    route only, nothing is ever sent to them), with attributes."""
    bands, clinics, langs = (
        ("18-34", "35-49", "50-64", "65+"),
        ("north", "south", "east"),
        (
            "en",
            "es",
        ),
    )
    with path.open("w") as f:
        f.write("phone,language,age_band,clinic,preferences,tags\n")
        for i in range(rows):
            f.write(
                f"+1202{200 + i // 10_000}{i % 10_000:04d},{langs[i % 2]},{bands[i % 4]},"
                f"{clinics[i % 3]},flu;tips,{TAG}\n"
            )


async def _file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, 256 * 1024):
            yield chunk


async def _send(session: aiohttp.ClientSession, url: str, token: str) -> float:
    started = time.perf_counter()
    async with session.post(
        url + "/api/v1/messages",
        json={"to": "+12025550147", "body": "Clinic news", "purpose": "informational"},
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        await r.read()
        if r.status >= 500:
            raise RuntimeError(f"send answered {r.status}")
    return (time.perf_counter() - started) * 1000


async def _sends(
    session: aiohttp.ClientSession, url: str, token: str, done: asyncio.Event, out: list[float]
) -> None:
    """One send every SEND_EVERY_S (on a fixed schedule, not after the last answer)."""
    tasks: list[asyncio.Task[float]] = []
    next_at = time.perf_counter()
    while not done.is_set():
        tasks.append(asyncio.create_task(_send(session, url, token)))
        next_at += SEND_EVERY_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), max(0.0, next_at - time.perf_counter()))
    out.extend(await asyncio.gather(*tasks))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


async def import_file(
    session: aiohttp.ClientSession, url: str, token: str, path: Path
) -> dict[str, Any]:
    """Upload `path` through `POST /api/v1/contacts/imports` (the product's import job)
    and poll the job until it is done; its last state."""
    async with session.post(
        url + "/api/v1/contacts/imports?name=bench.csv",
        data=_file(path),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    ) as r:
        job: dict[str, Any] = await r.json()
        if r.status != 202:
            raise RuntimeError(f"import answered {r.status}: {job}")
    while not job["done"]:
        await asyncio.sleep(0.2)
        async with session.get(
            url + f"/api/v1/contacts/imports/{job['id']}",
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            job = await r.json()
    return job


async def group_of_tag(session: aiohttp.ClientSession, url: str, token: str, tag: str) -> str:
    """A new group holding every contact tagged `tag` (`POST /api/v1/groups`, then
    `.../members/audience`); its id."""
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(url + "/api/v1/groups", json={"name": tag}, headers=headers) as r:
        group: dict[str, Any] = await r.json()
        if r.status != 201:
            raise RuntimeError(f"group answered {r.status}: {group}")
    async with session.post(
        url + f"/api/v1/groups/{group['id']}/members/audience",
        json={"audience": {"tags": [tag]}},
        headers=headers,
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"group members answered {r.status}: {await r.text()}")
    return str(group["id"])


async def audience_group(
    session: aiohttp.ClientSession, url: str, token: str, rows: int, folder: Path
) -> tuple[str, dict[str, Any], float]:
    """`rows` synthetic contacts imported through the API into a fresh gateway, and a
    group of all of them: (group id, the import job's last state, seconds it took)."""
    listing = folder / "contacts.csv"
    synthetic(listing, rows)
    started = time.perf_counter()
    job = await import_file(session, url, token, listing)
    elapsed = time.perf_counter() - started
    if job["failed"] or job["fatal"] is not None or job["created"] != rows:
        raise RuntimeError(f"import: {job['created']} of {rows} created, {job['failed']} refused")
    return await group_of_tag(session, url, token, TAG), job, elapsed


async def run(args: argparse.Namespace, root: Path) -> int:
    pinning = harness.setup_pinning()
    listing = root / "contacts.csv"
    synthetic(listing, args.rows)
    home = await harness.init_gateway(root / "gw")
    server = harness.gateway_server(home, HELD, pinning, "gateway")
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            baseline = [await _send(session, server.url, home.token) for _ in range(BASELINE_SENDS)]
            during: list[float] = []
            done = asyncio.Event()
            sender = asyncio.create_task(_sends(session, server.url, home.token, done, during))
            started = time.perf_counter()
            job = await import_file(session, server.url, home.token, listing)
            elapsed = time.perf_counter() - started
            done.set()
            await sender
    finally:
        await server.stop()
    rows_per_s = job["rows"] / elapsed if elapsed else 0.0
    print(
        f"{job['rows']:,} rows in {elapsed:.1f} s: {rows_per_s:,.0f} rows/s"
        f" ({job['created']:,} new, {job['failed']} refused);"
        f" accept during the import p50 {_pct(during, 0.5)} ms, p99 {_pct(during, 0.99)} ms"
        f" over {len(during)} sends (before: p50 {statistics.median(baseline):.2f} ms)"
    )
    harness.publish_summary(
        {
            "bench": "contacts_import",
            "rows": job["rows"],
            "created": job["created"],
            "failed": job["failed"],
            "seconds": round(elapsed, 2),
            "rows_per_s": round(rows_per_s),
            "sends_during": len(during),
            "accept_p50_ms": _pct(during, 0.5),
            "accept_p99_ms": _pct(during, 0.99),
            "accept_max_ms": round(max(during, default=0.0), 2),
            "baseline_p50_ms": round(statistics.median(baseline), 2),
            "pinning": pinning.describe(),
        },
        LATEST,
    )
    return 0 if job["failed"] == 0 and job["fatal"] is None else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="rows in the file (100,000)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="smsgw-contacts-bench-"))
    return harness.run_bench(lambda: run(args, root), root, args.keep, RUN_TIMEOUT_S)


if __name__ == "__main__":
    sys.exit(main())
