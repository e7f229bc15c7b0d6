"""A campaign through the product's own API, for the campaign benchmarks (issue 15).

The audience comes from `contacts_import.audience_group` (the import job, then a group);
`create_and_start` saves the campaign (`POST /api/v1/campaigns`) and starts it
(`POST .../start`), and `wait_done` polls `GET .../{id}` until the runner has handled
every recipient (`finished`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

POLL_S = 0.1
DONE = ("finished", "ended", "cancelled")


async def _json(resp: aiohttp.ClientResponse, expected: int, what: str) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    if resp.status != expected:
        raise RuntimeError(f"{what}: HTTP {resp.status}: {body}")
    return body


async def create_and_start(
    session: aiohttp.ClientSession, url: str, spec: dict[str, Any]
) -> tuple[str, float]:
    """Save `spec` as a draft and start it: (its id, time.monotonic() just before the
    start request, from which its sending is timed). `session` carries the token."""
    async with session.post(url + "/api/v1/campaigns", json=spec) as r:
        campaign = await _json(r, 201, "create campaign")
    started = time.monotonic()
    async with session.post(url + f"/api/v1/campaigns/{campaign['id']}/start") as r:
        acted = await _json(r, 200, "start campaign")
    if acted["campaign"]["state"] != "running":
        raise RuntimeError(f"campaign is {acted['campaign']['state']}, not running")
    return str(campaign["id"]), started


async def detail(session: aiohttp.ClientSession, url: str, campaign_id: str) -> dict[str, Any]:
    async with session.get(url + f"/api/v1/campaigns/{campaign_id}") as r:
        return await _json(r, 200, "campaign")


async def wait_done(
    session: aiohttp.ClientSession, url: str, campaign_id: str, limit_s: float
) -> tuple[dict[str, Any], float]:
    """Poll until the campaign has left `running` for good: (its detail then,
    time.monotonic() when that was seen)."""
    async with asyncio.timeout(limit_s):
        while True:
            found = await detail(session, url, campaign_id)
            if found["campaign"]["state"] in DONE:
                return found, time.monotonic()
            await asyncio.sleep(POLL_S)
