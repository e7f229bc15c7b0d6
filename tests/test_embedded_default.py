"""`make run` as a newcomer meets it: `smsgw run` with no config file, in a fresh folder.

The embedded default starts the SMSC simulator and two emulated modems in process; this
walks what the README promises over the real HTTP API of the real daemon: both modems
listed with signal and operator, a long UCS-2 message through the modem bank delivered,
inbound messages through the SMSC and a modem listed in `/inbound`, and an unplugged
modem's work taken by the other one. A wait re-reads the API after each line the daemon
logs (every send, receipt, inbound message and health change logs one), with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SMSGW
from tests.ports import free_port

TOKEN = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")

pytestmark = pytest.mark.timeout(90)

# The embedded default has no default purpose (MSG-1: a send names one). Emergency is
# the purpose with no sending window, cap or consent to wait for, so this walk runs at
# any hour; at the normal class, as these sends had before purposes existed.
ANY_HOUR = {"purpose": "emergency", "priority": "normal"}


class Newcomer:
    def __init__(self, http: aiohttp.ClientSession, url: str, logged: asyncio.Event) -> None:
        self.http = http
        self.url = url
        self.logged = logged

    async def get(self, path: str) -> Any:
        async with self.http.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, path: str, body: dict[str, Any] | None = None, status: int = 202) -> Any:
        async with self.http.post(self.url + path, json=body) as resp:
            assert resp.status == status, await resp.text()
            return await resp.json()

    async def until(self, check: Callable[[], Awaitable[Any]], limit: float = 30.0) -> Any:
        """Re-run `check` (an API read) after each log line until it returns something."""
        async with asyncio.timeout(limit):
            while True:
                self.logged.clear()
                if found := await check():
                    return found
                await self.logged.wait()

    async def state_of(self, mid: str) -> str:
        view = await self.get(f"/api/v1/messages/{mid}")
        return str(view["status"])


@pytest.fixture
async def newcomer(tmp_path: Path) -> AsyncIterator[Newcomer]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "run",
        "--listen",
        f"127.0.0.1:{port}",
        "--hl7-listen",  # the demo HL7 feed, off its fixed 2575
        f"127.0.0.1:{free_port()}",
        "--links-listen",  # the demo short links, off their fixed 8081
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "SMSGW_CONFIG"},
    )
    assert proc.stdout is not None
    token = None
    async with asyncio.timeout(30):
        while token is None:
            line = await proc.stdout.readline()
            assert line, "smsgw run exited before printing its first token"
            if match := TOKEN.search(line.decode()):
                token = match.group(0)
    logged = asyncio.Event()

    async def follow_log() -> None:
        assert proc.stderr is not None
        while await proc.stderr.readline():
            logged.set()

    drain = asyncio.gather(proc.stdout.read(), follow_log())
    try:
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            yield Newcomer(http, f"http://127.0.0.1:{port}", logged)
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await drain


async def test_make_run_shows_modems_sends_receives_and_fails_over(newcomer: Newcomer) -> None:
    async def modems_up() -> Any:
        routes = {r["name"]: r for r in (await newcomer.get("/api/v1/routes"))["routes"]}
        bank = routes.get("modems")
        up = bank is not None and all(m["state"] == "ready" for m in bank["members"].values())
        return routes if up and routes["smsc-sim"]["state"] == "up" else None

    routes = await newcomer.until(modems_up)
    members = routes["modems"]["members"]
    assert len(members) == 2
    for member in members.values():
        assert member["signal"] is not None and member["operator"]

    long_ucs2 = "Résultats prêts — merci 🙂 " * 4
    sent = await newcomer.post(
        "/api/v1/messages", {"to": "+12025550123", "body": long_ucs2, "route": "modems", **ANY_HOUR}
    )
    assert sent["encoding"] == "ucs2" and sent["segments"] > 1

    async def delivered() -> bool:
        return await newcomer.state_of(sent["id"]) == "delivered"

    await newcomer.until(delivered)

    await newcomer.post("/api/v1/demo/inbound", {"sender": "+12025550147", "body": "YES"})
    await newcomer.post(
        "/api/v1/demo/inbound",
        {"sender": "+12025550148", "body": "Reschedule please " * 12, "via": "modem", "parts": 2},
    )

    async def both_inbound() -> bool:
        page = await newcomer.get("/api/v1/inbound")
        return len(page["inbound"]) >= 2

    await newcomer.until(both_inbound)

    assert (await newcomer.post("/api/v1/demo/modems/0/unplug", status=200)) == {"plugged": False}
    ids = [
        (
            await newcomer.post(
                "/api/v1/messages",
                {"to": "+12025550123", "body": f"m{i}", "route": "modems", **ANY_HOUR},
            )
        )["id"]
        for i in range(3)
    ]

    async def all_sent() -> bool:
        return all([await newcomer.state_of(i) in ("sent", "delivered") for i in ids])

    await newcomer.until(all_sent, limit=45)

    async def unplugged_seen() -> bool:  # the bank notices on its next poll or attempt
        routes = (await newcomer.get("/api/v1/routes"))["routes"]
        bank = next(r for r in routes if r["name"] == "modems")
        return bool(bank["members"]["modem1"]["state"] != "ready")

    await newcomer.until(unplugged_seen, limit=45)
    for mid in ids:
        view = await newcomer.get(f"/api/v1/messages/{mid}")
        assert all(c.startswith("modem2:") for c in view["carrier_ids"]), view["carrier_ids"]
    assert (await newcomer.post("/api/v1/demo/modems/0/replug", status=200)) == {"plugged": True}


async def test_demo_calls_need_the_admin_scope_and_valid_input(newcomer: Newcomer) -> None:
    bad = await newcomer.post("/api/v1/demo/inbound", {"sender": "12345", "body": "x"}, status=422)
    assert bad["error"]["code"] == "invalid_field" and "12345" not in str(bad)
    missing = await newcomer.post("/api/v1/demo/modems/7/unplug", status=404)
    assert missing["error"]["code"] == "not_found"


async def test_cutting_the_carrier_links_mid_load_loses_nothing(newcomer: Newcomer) -> None:
    async def smsc_up() -> bool:
        routes = (await newcomer.get("/api/v1/routes"))["routes"]
        return any(r["name"] == "smsc-sim" and r["state"] == "up" for r in routes)

    await newcomer.until(smsc_up)
    batch = {
        "messages": [{"to": "+12025550123", "body": f"load {i}", **ANY_HOUR} for i in range(60)]
    }
    accepted = await newcomer.post("/api/v1/messages/batch", batch)
    ids = [r["id"] for r in accepted["results"]]
    assert len(ids) == 60
    assert (await newcomer.post("/api/v1/demo/smsc/drop", status=200)) == {"dropped": True}

    async def all_delivered() -> bool:
        return all([await newcomer.state_of(i) == "delivered" for i in ids])

    await newcomer.until(all_delivered, limit=60)


async def test_an_emergency_broadcast_leaves_over_the_carrier_and_the_modems(
    newcomer: Newcomer,
) -> None:
    """i15-spread: the README's broadcast. Critical messages spread over the simulated
    carrier and the modem bank together; the loopback route, kept for failover, has none."""

    async def routes() -> dict[str, Any]:
        return {r["name"]: r for r in (await newcomer.get("/api/v1/routes"))["routes"]}

    async def all_up() -> bool:
        return all(r["state"] == "up" for r in (await routes()).values())

    async def all_sent() -> dict[str, int] | None:
        sent = {n: int(r["counters"].get("gateway_sent", 0)) for n, r in (await routes()).items()}
        return sent if sum(sent.values()) == 120 else None

    await newcomer.until(all_up)
    alert = "The east clinic is closed today (flooding). Please go to the main hospital."
    batch = {
        "messages": [
            {"to": f"+1202555{i:04d}", "body": alert, "purpose": "emergency"} for i in range(120)
        ]
    }
    accepted = await newcomer.post("/api/v1/messages/batch", batch)
    assert {r["priority"] for r in accepted["results"]} == {"critical"}
    sent = await newcomer.until(all_sent)
    assert sent["smsc-sim"] > 0 and sent["modems"] > 0, sent
    assert sent["demo"] == 0, sent


async def test_make_run_honours_stop_start_and_help_from_the_demo_handset(
    newcomer: Newcomer, tmp_path: Path
) -> None:
    """Issue 12's walk on the embedded default: messages of several purposes wait for one
    number (marketing among them, with written consent on record); a STOP from the
    demo handset blocks them all at once (nothing had left for it: scope "all"), exactly
    one confirmation goes back, and the ledger shows the STOP with the inbound text it
    came in; START brings the number back with its own confirmation; HELP from a
    number never seen before is answered."""
    who, stranger = "+12025550177", "+12025550178"
    await newcomer.post(
        "/api/v1/consents",
        {"number": who, "scope": "kind:marketing", "disclosure": "Clinic news by text: YES"},
        status=201,
    )
    waiting = []
    for purpose in ("appointment", "marketing", "informational", "emergency"):
        answer = await newcomer.post(
            "/api/v1/messages",
            {
                "to": who,
                "body": f"{purpose} for the walk",
                "purpose": purpose,
                "send_at": _in_an_hour(),
            },
        )
        assert answer["status"] == "scheduled", answer
        waiting.append(answer["id"])

    async def compliance() -> list[dict[str, Any]]:
        page = await newcomer.get("/api/v1/messages?limit=500")
        return [m for m in page["messages"] if m.get("purpose") == "compliance"]

    await newcomer.post("/api/v1/demo/inbound", {"sender": who, "body": "Stop"})

    async def all_blocked() -> bool:
        return all([await newcomer.state_of(mid) == "blocked" for mid in waiting])

    await newcomer.until(all_blocked)

    async def confirmations(count: int) -> list[dict[str, Any]] | None:
        found = await compliance()
        delivered = [m for m in found if m["status"] == "delivered"]
        return found if len(delivered) == count == len(found) else None

    await newcomer.until(lambda: confirmations(1))
    # The ledger (over the API it needs the phi scope, which the first token lacks).
    (stop,) = [d for d in _ledger(tmp_path) if d[0] == "opt_out"]
    assert stop[1:3] == ("all", "keyword")
    inbound = await newcomer.get("/api/v1/inbound")
    assert stop[3] in [m["id"] for m in inbound["inbound"]]

    await newcomer.post("/api/v1/demo/inbound", {"sender": who, "body": "START"})
    await newcomer.until(lambda: confirmations(2))
    assert _ledger(tmp_path)[-1][:3] == ("opt_in", "all", "keyword")

    await newcomer.post("/api/v1/demo/inbound", {"sender": stranger, "body": "help"})
    await newcomer.until(lambda: confirmations(3))


def _ledger(tmp_path: Path) -> list[tuple[Any, ...]]:
    """(decision, scope, source, inbound_id) of every ledger row, read-only, in order."""
    uri = f"file:{tmp_path / 'data' / 'smsgw.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute(
            "SELECT decision, scope, source, inbound_id FROM consent_ledger ORDER BY seq"
        ).fetchall()
    return [tuple(r) for r in rows]


def _in_an_hour() -> str:
    return datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()


async def test_the_demo_clock_moves_forward_and_a_message_due_tomorrow_goes_now(
    newcomer: Newcomer,
) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    sent = await newcomer.post(
        "/api/v1/messages",
        {"to": "+12025550123", "body": "see you tomorrow", "send_at": tomorrow, **ANY_HOUR},
    )
    assert sent["status"] == "scheduled"
    backwards = await newcomer.post("/api/v1/demo/clock/advance", {"seconds": -5}, status=422)
    assert backwards["error"]["code"] == "invalid_field"
    moved = await newcomer.post("/api/v1/demo/clock/advance", {"seconds": 86400 + 60}, status=200)
    assert moved["offset"] >= 86400 + 60
    assert datetime.fromisoformat(moved["now"]) > datetime.fromisoformat(tomorrow)

    async def delivered() -> bool:
        return await newcomer.state_of(sent["id"]) == "delivered"

    await newcomer.until(delivered)
