"""The hospital system of bench/smpp.py's clinical scenario: one local HTTP receiver
that both gateways forward their delivery receipts to, counted the same way.

- smsgw: its `[[webhooks]]` endpoint POSTs every `message.status` event (JSON
  `{"type", "timestamp", "data": {"message_id", "state", ...}}`) to any path; a receipt
  counts when `data.state` is `delivered`, keyed by `data.message_id`.
- Kannel: smsbox GETs the `dlr-url` of each sendsms request, `/kannel?type=%d&id=%F`
  (%d the DLR type, 1 = delivered to the phone; %F the SMSC's message id); a receipt
  counts when `type` is 1, keyed by `id`.

Every request gets a 2xx at once (204 to a POST, an empty 200 to a GET). Only the
first final `delivered` per message counts (a redelivery, at least once, is counted
as a duplicate); other states are counted apart. Once `--target` receipts have
counted, the wall-clock time of the one that reached it is kept (`target_ms`); the
client connections seen (`connections`) show how many requests a gateway keeps in
flight.

Run as a process (`python bench/receipt_receiver.py --target N`), it prints
`{"port": N}` once listening, then answers `{"cmd": "stats"}` lines on stdin with its
counters, one JSON line each; it exits when stdin closes. It verifies no signature:
its CPU must stay small beside the gateways'. `ReceiptReceiver` starts and drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonline_child import JsonLineChild

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
SCRIPT = str(Path(__file__).resolve())
KANNEL_PATH = "/kannel"
KANNEL_DELIVERED = "1"  # Kannel's DLR type for "delivered to the phone"
DELIVERED = "delivered"
BACKLOG = 1024


class Tally:
    """Receipts by message, the first `delivered` of each counted once."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.delivered: set[str] = set()
        self.duplicates = 0
        self.other = 0  # requests that were not a delivered receipt (other states)
        self.bad = 0  # requests this receiver could not read
        self.first_ms = 0
        self.last_ms = 0
        self.target_ms = 0
        self.peers: set[tuple[str, int]] = set()  # client connections seen (concurrency)

    def add(self, key: str | None, delivered: bool) -> None:
        if key is None:
            self.bad += 1
            return
        if not delivered:
            self.other += 1
            return
        if key in self.delivered:
            self.duplicates += 1
            return
        self.delivered.add(key)
        now = int(time.time() * 1000)
        self.first_ms = self.first_ms or now
        self.last_ms = now
        if len(self.delivered) == self.target:
            self.target_ms = now

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": len(self.delivered),
            "duplicates": self.duplicates,
            "other": self.other,
            "bad": self.bad,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "target_ms": self.target_ms,
            "connections": len(self.peers),
        }


def webhook_receipt(body: bytes) -> tuple[str | None, bool]:
    """(message id, whether it is a delivered receipt) of a webhook event."""
    try:
        event = json.loads(body)
        data = event["data"]
        message_id = data["message_id"]
    except (ValueError, KeyError, TypeError):
        return None, False
    if event.get("type") != "message.status" or not isinstance(message_id, str):
        return None, False
    return message_id, data.get("state") == DELIVERED


def kannel_receipt(query: dict[str, str]) -> tuple[str | None, bool]:
    """(SMSC message id, whether it is a delivered receipt) of a Kannel dlr-url GET."""
    key = query.get("id")
    return (key or None), query.get("type") == KANNEL_DELIVERED


def build_app(tally: Tally) -> web.Application:
    def seen(request: web.Request) -> None:
        if request.transport is not None:
            tally.peers.add(request.transport.get_extra_info("peername"))

    async def webhook(request: web.Request) -> web.Response:
        seen(request)
        tally.add(*webhook_receipt(await request.read()))
        return web.Response(status=204)

    async def kannel(request: web.Request) -> web.Response:
        seen(request)
        tally.add(*kannel_receipt(dict(request.query)))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get(KANNEL_PATH, kannel)
    app.router.add_post("/{tail:.*}", webhook)
    return app


async def serve(args: argparse.Namespace) -> None:
    tally = Tally(args.target)
    runner = web.AppRunner(build_app(tally), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    # Kannel's smsbox opens up to 512 connections at once (max-pending-requests): a
    # listen queue shorter than that drops SYNs, and each retry costs the client 1 s.
    site = web.TCPSite(runner, LOOPBACK, args.port, reuse_address=True, backlog=BACKLOG)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if json.loads(line).get("cmd") == "stats":
            print(json.dumps(tally.stats()), flush=True)
    await runner.cleanup()


# -- the bench side ------------------------------------------------------------------------


class ReceiptReceiver(JsonLineChild):
    """This module as a process under `prefix` (taskset), driven over its stdin."""

    name = "receipt receiver"
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, prefix: tuple[str, ...], target: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.target = target

    @property
    def pid(self) -> int:
        assert self.process is not None, "the receipt receiver is not running"
        return self.process.pid

    @property
    def webhook_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/events"

    @property
    def kannel_url(self) -> str:
        """Kannel's dlr-url, before URL-encoding; smsbox fills in %d and %F."""
        return f"http://{LOOPBACK}:{self.port}{KANNEL_PATH}?type=%d&id=%F"

    async def __aenter__(self) -> ReceiptReceiver:
        await self.start(*self.prefix, sys.executable, SCRIPT, "--target", str(self.target))
        return self


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--target", type=int, default=0, help="keep the time this many counted")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
