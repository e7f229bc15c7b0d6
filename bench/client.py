"""A small async client of the gateway's API, for preloading and watching a benchmark."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
from loadgen import BODY_160_GSM, RECIPIENTS, recipient

BATCH_SIZE = 500
PRELOAD_CLIENTS = 4
REQUEST_TIMEOUT_S = 60.0


def message(priority: str, rng: random.Random, purpose: str | None = None) -> dict[str, str]:
    sms = {"to": recipient(rng.randrange(RECIPIENTS)), "body": BODY_160_GSM, "priority": priority}
    if purpose is not None:
        sms["purpose"] = purpose
    return sms


def parse_iso(text: str) -> float:
    """Seconds since the epoch of an API timestamp like `2026-11-27T00:32:17.448Z`."""
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True, slots=True)
class QueueState:
    queued: int
    sending: int
    in_flight: int
    bulk_queued: int

    @property
    def idle(self) -> bool:
        return self.queued == 0 and self.sending == 0 and self.in_flight == 0


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self._base = base_url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        )
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Api(...)`"
        return self._session

    async def _get(self, path: str) -> Any:
        async with self.session.get(self._base + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def _post(self, path: str, payload: Any) -> Any:
        async with self.session.post(self._base + path, json=payload) as resp:
            if resp.status != 202:
                raise RuntimeError(f"POST {path}: HTTP {resp.status}: {await resp.text()}")
            return await resp.json()

    async def send(self, payload: dict[str, str]) -> str:
        reply = await self._post("/messages", payload)
        return str(reply["id"])

    async def send_batch(self, messages: list[dict[str, str]]) -> int:
        reply = await self._post("/messages/batch", {"messages": messages})
        return int(reply["accepted"])

    async def message(self, message_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self._get(f"/messages/{message_id}")
        return reply

    async def queue(self) -> QueueState:
        q = await self._get("/queue")
        return QueueState(
            queued=sum(q["queued"].values()) + sum(q["scheduled"].values()),
            sending=sum(q["sending"].values()),
            in_flight=int(q["in_flight"]),
            bulk_queued=int(q["queued"]["bulk"]),
        )

    async def sent_count(self, route: str) -> int:
        """The route's `gateway_sent` counter (messages whose `sent` state committed)."""
        routes = (await self._get("/routes"))["routes"]
        counters = next(r["counters"] for r in routes if r["name"] == route)
        return int(counters.get("gateway_sent", 0))

    async def routes(self) -> list[dict[str, Any]]:
        """`GET /routes`: each route's state, rate, window and counters."""
        routes: list[dict[str, Any]] = (await self._get("/routes"))["routes"]
        return routes

    async def preload(
        self, total: int, priority: str, seed: int = 1, purpose: str | None = None
    ) -> float:
        """POST `total` messages in batches of 500 from a few clients; returns seconds taken."""
        rng = random.Random(seed)
        sizes = [min(BATCH_SIZE, total - i) for i in range(0, total, BATCH_SIZE)]
        batches = [[message(priority, rng, purpose) for _ in range(n)] for n in sizes]
        pending = iter(batches)
        started = time.monotonic()

        async def worker() -> None:
            for batch in pending:
                accepted = await self.send_batch(batch)
                if accepted != len(batch):
                    raise RuntimeError(f"preload: {len(batch) - accepted} messages rejected")

        await asyncio.gather(*(worker() for _ in range(PRELOAD_CLIENTS)))
        return time.monotonic() - started
