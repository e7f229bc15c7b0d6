"""A modem bank through the real gateway: store, scheduler, API, bank driver, ptys.

The gateway runs its dispatch loop on the system clock with retry back-off in
fractions of a second; the modems are emulated on pseudo-terminals. Nothing sleeps:
`Rig.until` re-checks after every store commit, route health change and modem answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.base import RouteHealth
from drivers.clock import SystemClock
from drivers.modem.bank import ModemBankDriver
from drivers.modem.emulator import EmulatedModem
from gateway.app import Gateway
from gateway.store.quarantine import Quarantine
from gateway.tokens import create_token
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    accept,
    make_config,
    poke_on_commit,
)
from tests.modem_rig import EMULATED, FAST
from tests.store_rows import inbound_rows, message_row
from tests.test_api import start_client
from tests.test_modem_records import PLAIN_GSM7, TRUNCATED_UCS2, ff_padded
from tests.test_store import _files, _scan

Predicate = Callable[[], bool | Awaitable[bool]]


@dataclass
class Rig:
    gw: Gateway
    emulators: list[EmulatedModem]
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def bank(self) -> ModemBankDriver:
        driver = self.gw.routes["bank"].driver
        assert isinstance(driver, ModemBankDriver)
        return driver

    async def until(self, predicate: Predicate, within: float = 8.0) -> None:
        progress = [m.progress for m in self.bank.modems.values()]
        async with asyncio.timeout(within):
            while True:
                for event in (self.changed, *progress):
                    event.clear()
                result = predicate()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                waiters = [asyncio.ensure_future(e.wait()) for e in (self.changed, *progress)]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()

    async def row(self, message_id: str) -> Any:
        row = await message_row(self.gw.store, message_id)
        assert row is not None
        return row


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    # Ports as by-id links: a freed /dev/pts/N goes to the next pty opened on the machine.
    emulators = [
        EmulatedModem(**EMULATED, signal=18 + i, link_path=tmp_path / f"modem-{i + 1}")
        for i in range(2)
    ]
    for emulator in emulators:
        await emulator.start()
    route = {
        "name": "bank",
        "type": "modem",
        "window": 2,
        "modems": [{"name": f"m{i + 1}", "port": e.path} for i, e in enumerate(emulators)],
        **FAST,
    }
    config = make_config(
        tmp_path,
        [route],
        queue={"retry_base": 0.05, "retry_cap": 0.2},
        http={"shutdown_grace": 0.5},
    )
    gw = await Gateway.open(config, SystemClock())
    r = Rig(gw, emulators)
    poke_on_commit(gw.store.writer, r.changed.set)
    reported = gw.sink.health_changed

    def health_changed(route: str, health: RouteHealth) -> None:
        reported(route, health)
        r.changed.set()

    gw.sink.health_changed = health_changed  # type: ignore[method-assign]
    await gw.start(dispatch=True)
    await r.until(lambda: all(m.ready for m in r.bank.modems.values()))
    yield r
    if not gw.stopped:
        await gw.stop()
    for emulator in emulators:
        await emulator.aclose()


async def test_unplugged_mid_send_the_message_reaches_the_other_modem(rig: Rig) -> None:
    first, second = rig.emulators
    first.unplug_during_next_send()
    message_id = await accept(rig.gw, body=CANARY_BODY)

    async def sent() -> bool:
        return str((await rig.row(message_id))["state"]) in ("sent", "delivered")

    await rig.until(sent)
    row = await rig.row(message_id)
    assert row["possible_duplicate"] == 1
    assert [p.text for p in second.sent] == [CANARY_BODY]
    events = await rig.gw.store.events(message_id)
    (sent_event,) = [e for e in events if e.state == "sent"]
    assert str(sent_event.carrier_id).startswith("m2:")
    # The unplugged modem's port comes back and the bank uses it again.
    await first.replug()
    await rig.until(lambda: rig.bank.modems["m1"].ready)


async def test_status_report_marks_the_message_delivered(rig: Rig) -> None:
    message_id = await accept(rig.gw, body="Your appointment is at 10:00")

    async def delivered() -> bool:
        return str((await rig.row(message_id))["state"]) == "delivered"

    await rig.until(delivered)


async def test_routes_metrics_and_inbound_through_the_api(rig: Rig) -> None:
    token = await create_token(rig.gw.store, "t", frozenset({"read"}), rig.gw.clock)
    client = await start_client(rig.gw)
    auth = {"Authorization": f"Bearer {token.text}"}
    try:
        routes = await (await client.get("/api/v1/routes", headers=auth)).json()
        (bank,) = routes["routes"]
        assert bank["type"] == "modem" and bank["state"] == "up"
        members = bank["members"]
        assert set(members) == {"m1", "m2"}
        assert (members["m1"]["signal"], members["m2"]["signal"]) == (18, 19)
        assert members["m1"]["operator"] and members["m1"]["registration"] == "registered"

        rig.emulators[1].inject_inbound(CANARY_NUMBER, CANARY_BODY, parts=2)

        async def stored() -> bool:
            resp = await client.get("/api/v1/inbound", headers=auth)
            return bool((await resp.json())["inbound"])

        await rig.until(stored)
        (row,) = await inbound_rows(rig.gw.store, 10)
        assert rig.gw.store.decrypt(row["body_ct"], row["id"], "body") == CANARY_BODY
        inbound = await (await client.get("/api/v1/inbound", headers=auth)).text()
        metrics = await (await client.get("/api/v1/metrics", headers=auth)).text()
    finally:
        await client.close()
    assert 'smsgw_modem_signal_rssi{modem="m1",route="bank"} 18.0' in metrics
    assert 'smsgw_modem_ready{modem="m2",route="bank"} 1.0' in metrics
    for text in (inbound, metrics):
        assert CANARY_DIGITS not in text and "CANARY" not in text


async def test_an_operator_drains_a_modem_and_restores_it(rig: Rig) -> None:
    first, second = rig.emulators
    rig.bank.drain("m1")
    assert rig.bank.health().members["m1"]["state"] == "drained"
    ids = [await accept(rig.gw, body=f"drained {i}") for i in range(2)]

    async def all_sent() -> bool:
        return all([str((await rig.row(i))["state"]) in ("sent", "delivered") for i in ids])

    await rig.until(all_sent)
    assert not first.sent and len(second.sent) == 2
    rig.bank.restore("m1")
    assert rig.bank.health().members["m1"]["state"] == "ready"
    with pytest.raises(KeyError):
        rig.bank.drain("m9")


async def test_an_undecodable_record_is_held_encrypted_counted_then_deleted(
    rig: Rig, tmp_path: Path
) -> None:
    """A real phone's record no codec reads (gammu at-sms-failing/35) is kept for an
    operator in the store, encrypted, before the SIM's copy goes; an FF-padded one is
    stored as a message. Admins see the count and the metric, never the record."""
    first = rig.emulators[0]
    quarantine = Quarantine(rig.gw.store)
    token = await create_token(rig.gw.store, "t", frozenset({"read"}), rig.gw.clock)
    auth = {"Authorization": f"Bearer {token.text}"}
    first.inject_record(TRUNCATED_UCS2)
    first.inject_record(ff_padded(PLAIN_GSM7))

    async def settled() -> bool:
        held = (await quarantine.summary()).held
        stored = await inbound_rows(rig.gw.store, 10)
        return held == 1 and not first.sim_messages and len(stored) == 1

    await rig.until(settled)
    first.inject_record(TRUNCATED_UCS2)  # the same record again: held once, then deleted
    assert first.sim_messages
    await rig.until(lambda: not first.sim_messages)
    (held, record), *more = await quarantine.records()
    assert (held.route, held.source, record, more) == ("bank", "m1", TRUNCATED_UCS2, [])
    # The alert's log lines (modem side, sink side) are checked without PHI in
    # tests/test_modem_inbox.py and tests/test_undecodable_cli.py.
    needles = [TRUNCATED_UCS2.encode(), bytes.fromhex(TRUNCATED_UCS2)[12:40]]
    assert _scan(_files(rig.gw.config.db_path), needles) == []
    client = await start_client(rig.gw)
    try:
        resp = await client.get("/api/v1/inbound/undecodable", headers=auth)
        body = await resp.json()
        assert resp.status == 200 and body["held"] == 1 and body["oldest_at"] > 0
        assert TRUNCATED_UCS2[20:44] not in json.dumps(body)
        metrics = await (await client.get("/api/v1/metrics", headers=auth)).text()
        assert 'smsgw_inbound_undecodable_total{route="bank"} 1.0' in metrics
        assert (await client.get("/api/v1/inbound/undecodable")).status == 401
    finally:
        await client.close()
