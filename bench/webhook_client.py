"""CPU per webhook POST on the event loop: the gateway's `Poster` against aiohttp's client.

    .venv/bin/python bench/webhook_client.py                 # N = 20,000 per run, 3 pairs
    .venv/bin/python bench/webhook_client.py --n 2000 --pairs 1

One process (CPU 1 when pinned) delivers N `message.status` events with 16 in flight
(an endpoint's default `concurrency`) to bench/event_receiver.py, a separate process
(CPU 0), through two clients in alternating runs: `gateway` is
`gateway.integrations.webhooks.Poster` (JSON, signature, the lean HTTP/1.1 client),
`aiohttp` the same payload and signature sent the way smsgw did before
(`aiohttp.ClientSession`, the checked resolver, the endpoint's TLS context, kept-alive
connections up to twice the concurrency). Measured: the thread CPU of this process's
event loop (uvloop, as `smsgw run`) per delivered event (`time.thread_time()`; the
receiver's CPU is not counted), which the machine's load hardly moves; the rate beside
it is wall clock.
The last line is JSON: `{"bench": "webhook_client", "gateway_cpu_us", "aiohttp_cpu_us",
"ratio"}` (ratio = aiohttp / gateway CPU per event, medians over the pairs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import harness
import uvloop
from event_receiver import Receiver

from gateway.config import Config, WebhookConfig
from gateway.integrations.addresses import CheckedResolver
from gateway.integrations.events import MESSAGE_STATUS, DeliveryFailed, OutboxEvent
from gateway.integrations.webhooks import (
    USER_AGENT,
    Poster,
    Signer,
    client_context,
    decode_secret,
    payload,
)

CONCURRENCY = 16


class AiohttpPoster:
    """The aiohttp client as smsgw used it before this client (the peer)."""

    def __init__(self, hook: WebhookConfig, config: Config, secret: str) -> None:
        self._signer = Signer(decode_secret(secret))
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(hook.allow_loopback),
            ssl=client_context(hook, config),
            limit=2 * hook.concurrency,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=hook.timeout),
            headers={"User-Agent": USER_AGENT},
        )

    async def post(self, url: str, event: OutboxEvent, phi: bool) -> None:
        body = payload(event, phi)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": self._signer.sign(event.id, stamp, body),
        }
        async with self._session.post(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            status = response.status
        if not 200 <= status < 300:
            raise DeliveryFailed(f"http_{status}")

    async def close(self) -> None:
        await self._session.close()


def events(n: int, run: str) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            id=f"evt_{run}_{i:08d}",
            seq=i,
            type=MESSAGE_STATUS,
            at=1.7e9 + i,
            message_id=f"msg_{i:08d}",
            route="main",
            data={
                "message_id": f"msg_{i:08d}",
                "state": "delivered",
                "route": "main",
                "error_code": None,
                "attempts": 1,
            },
        )
        for i in range(n)
    ]


async def deliver(
    post: Callable[[str, OutboxEvent, bool], Awaitable[None]], url: str, batch: list[OutboxEvent]
) -> tuple[float, float]:
    """(loop thread CPU seconds, wall seconds) to deliver `batch`, 16 at a time."""
    queue = iter(batch)

    async def worker() -> None:
        for event in queue:
            await post(url, event, False)

    cpu0, wall0 = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.thread_time() - cpu0, time.perf_counter() - wall0


async def main(args: argparse.Namespace, root: Path) -> int:
    pinning = harness.setup_pinning()
    secret = "whsec_" + base64.b64encode(b"bench-webhook-client-0123456789").decode()
    secret_file = root / "hook.whsec"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    config = Config(data_dir=str(root))
    results: dict[str, list[tuple[float, float]]] = {"gateway": [], "aiohttp": []}
    async with Receiver(pinning.server) as receiver:
        url = receiver.url
        hook = WebhookConfig(
            name="bench",
            url=url,
            secret_file=str(secret_file),
            allow_loopback=True,
            allow_plain_http=True,
        )
        clients: dict[str, Any] = {
            "gateway": Poster(hook, config),
            "aiohttp": AiohttpPoster(hook, config, secret),
        }
        try:
            for name, client in clients.items():  # warm-up: connections, caches
                await deliver(client.post, url, events(200, f"warm{name}"))
            for pair in range(args.pairs):
                for name in ("aiohttp", "gateway") if pair % 2 else ("gateway", "aiohttp"):
                    cpu, wall = await deliver(
                        clients[name].post, url, events(args.n, f"{name}{pair}")
                    )
                    results[name].append((cpu, wall))
                    print(
                        f"  {name:8} {cpu / args.n * 1e6:7.1f} µs CPU per event,"
                        f" {args.n / wall:8.0f} events/s (wall, busy machine)",
                        flush=True,
                    )
        finally:
            for client in clients.values():
                await client.close()
        stats = (await receiver.command("stats"))["webhook"]
    expected = args.n * args.pairs * 2 + 400  # and the two warm-ups of 200
    if stats["unique"] != expected:
        print(f"receiver counted {stats['unique']} events, expected {expected}", file=sys.stderr)
        return 1
    per = {k: statistics.median(c for c, _ in v) / args.n * 1e6 for k, v in results.items()}
    summary = {
        "bench": "webhook_client",
        "n": args.n,
        "pairs": args.pairs,
        "gateway_cpu_us": round(per["gateway"], 1),
        "aiohttp_cpu_us": round(per["aiohttp"], 1),
        "ratio": round(per["aiohttp"] / per["gateway"], 2),
    }
    print(
        f"loop CPU per event: gateway {summary['gateway_cpu_us']} µs,"
        f" aiohttp {summary['aiohttp_cpu_us']} µs (aiohttp / gateway = {summary['ratio']})"
    )
    print(json.dumps(summary))
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20000, help="events per run")
    parser.add_argument("--pairs", type=int, default=3, help="alternating run pairs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhook-client-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,  # as `smsgw run`
    ):
        sys.exit(runner.run(main(arguments, Path(tmp))))
