"""A campaign through the product's own API, for the campaign benchmarks (issue 15).

The audience comes from `contacts_import.audience_group` (the import job, then a group);
`create_and_start` saves the campaign (`POST /api/v1/campaigns`) and starts it
(`POST .../start`), and `wait_done` polls `GET .../{id}` until the runner has handled
every recipient (`finished`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

POLL_S = 0.1
DONE = ("finished", "ended", "cancelled")


async def _json(resp: aiohttp.ClientResponse, expected: int, what: str) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    if resp.status != expected:
        raise RuntimeError(f"{what}: HTTP {resp.status}: {body}")
    return body


@dataclass(frozen=True, slots=True)
class Started:
    """A started campaign: its id, and time.monotonic() and time.time() just before
    the start request, from which its sending is timed."""

    id: str
    at: float
    wall: float

    def since_start(self, iso_time: str) -> float:
        """Seconds from the start request to an API timestamp (e.g. its `done_at`)."""
        return datetime.fromisoformat(iso_time).timestamp() - self.wall


async def create_and_start(
    session: aiohttp.ClientSession, url: str, spec: dict[str, Any]
) -> Started:
    """Save `spec` as a draft and start it. `session` carries the token."""
    async with session.post(url + "/api/v1/campaigns", json=spec) as r:
        campaign = await _json(r, 201, "create campaign")
    started = Started(str(campaign["id"]), time.monotonic(), time.time())
    async with session.post(url + f"/api/v1/campaigns/{started.id}/start") as r:
        acted = await _json(r, 200, "start campaign")
    if acted["campaign"]["state"] != "running":
        raise RuntimeError(f"campaign is {acted['campaign']['state']}, not running")
    return started


async def detail(session: aiohttp.ClientSession, url: str, campaign_id: str) -> dict[str, Any]:
    async with session.get(url + f"/api/v1/campaigns/{campaign_id}") as r:
        return await _json(r, 200, "campaign")


async def wait_done(
    session: aiohttp.ClientSession, url: str, campaign_id: str, limit_s: float
) -> dict[str, Any]:
    """Poll until the campaign has left `running` for good; its detail then (its
    `done_at` says when the runner handled the last recipient)."""
    async with asyncio.timeout(limit_s):
        while True:
            found = await detail(session, url, campaign_id)
            if found["campaign"]["state"] in DONE:
                return found
            await asyncio.sleep(POLL_S)
