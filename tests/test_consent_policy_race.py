"""R-OPT-1 (MSG-5): the STOP race through the real gateway and the SMSC simulator.

500 marketing messages (with written consent on record) and 20 clinical ones are queued
to one number and flowing to the simulator over real SMPP when an opt-out commits (the
ledger's own `append`, in a writer transaction, as the keyword flow commits a STOP).
The claim re-checks consent in its own transaction, so the set of messages that may
still reach the simulator is exactly the set claimed before that commit, read in the
commit's own transaction; every other marketing message ends `blocked` (`opted_out`).
Clinical messages follow the opt-out's scope (MSG-7): untouched by a marketing STOP,
stopped by STOP ALL. Nothing sleeps: waits re-check after every commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import SystemClock
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.app import Gateway
from gateway.consent import ledger
from gateway.intake import SendRequest
from gateway.tokens import create_token
from gateway.usecases import Caller
from tests.conftest import CANARY_NUMBER, make_config, poke_on_commit, record_decision

pytestmark = pytest.mark.timeout(60)

MARKETING, CLINICAL = 500, 20
FLOWING = {"window": "", "caps": []}
# Marketing at the clinical messages' class, so the two interleave in arrival order.
CONSENT = {
    "purposes": {
        "marketing": {**FLOWING, "priority": "normal", "highest": "normal"},
        "appointment": FLOWING,
    }
}


async def _open(tmp_path: Path, sim: SmscSimulator) -> Gateway:
    route = {
        "name": "carrier",
        "type": "smpp",
        "host": "127.0.0.1",
        "port": sim.port,
        "system_id": "smsgw",
        "password": "pw",
        "window": 10,
        "rate": 400,  # 520 messages take over a second: the STOP lands mid-flow
        "burst": 10,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
    }
    config = make_config(tmp_path, [route], consent=CONSENT)
    return await Gateway.open(config, SystemClock())


async def _until(changed: asyncio.Event, check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(40):
        while True:
            changed.clear()
            if await check():
                return
            await changed.wait()


@pytest.mark.parametrize(("scope", "clinical_stopped"), [("kind:marketing", False), ("all", True)])
async def test_no_message_claimed_after_a_stop_commits_reaches_the_carrier(
    tmp_path: Path, scope: str, clinical_stopped: bool
) -> None:
    sim_config = SimulatorConfig(password="pw", receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(sim_config) as sim:
        gw = await _open(tmp_path, sim)
        changed = asyncio.Event()
        poke_on_commit(gw.store.writer, changed.set)
        try:
            await gw.start(dispatch=True)
            await _run_race(gw, sim, changed, scope, clinical_stopped)
        finally:
            await gw.stop()


async def _run_race(
    gw: Gateway, sim: SmscSimulator, changed: asyncio.Event, scope: str, clinical_stopped: bool
) -> None:
    await record_decision(
        gw, CANARY_NUMBER, "opt_in", "purpose:marketing", disclosure="Offers by text: YES"
    )
    token = await create_token(gw.store, "ehr", frozenset({"send"}), gw.clock)
    record = await gw.store.api_tokens.get(token.id)
    assert record is not None
    caller = Caller.for_token(record)
    requests: list[SendRequest] = []
    for i in range(MARKETING + CLINICAL):
        if i % 26 == 25:
            requests.append(
                SendRequest(to=CANARY_NUMBER, body=f"clinical {i}", purpose="appointment")
            )
        else:
            requests.append(SendRequest(to=CANARY_NUMBER, body=f"offer {i}", purpose="marketing"))
    ids: dict[str, str] = {}
    for start in range(0, len(requests), 100):
        chunk = requests[start : start + 100]
        accepted = await gw.usecases.messages.accept_together(caller, chunk)
        assert {a.status for a in accepted} == {"queued"}
        ids.update({r.body: a.id for r, a in zip(chunk, accepted, strict=True)})

    def offers_sent() -> int:
        return sum(1 for m in sim.submitted if m.text.startswith("offer"))

    async def flowing() -> bool:
        return offers_sent() >= 50

    await _until(changed, flowing)
    claimed_before = await _opt_out(gw, scope)
    assert 50 <= len(claimed_before) < MARKETING + CLINICAL  # the STOP landed mid-flow

    async def settled() -> bool:
        cur = await gw.store.reader.execute(
            "SELECT count(*) FROM messages WHERE state IN ('queued', 'sending', 'sent')"
        )
        return (await cur.fetchone())[0] == 0

    await _until(changed, settled)
    reached = {m.text for m in sim.submitted}
    in_scope = {t for t in reached if t.startswith("offer") or clinical_stopped}
    after_commit = {ids[t] for t in in_scope} - claimed_before
    assert after_commit == set()  # nothing in scope claimed after the STOP reached the carrier
    states = await _states(gw)
    for body, mid in ids.items():
        stopped = body.startswith("offer") or clinical_stopped
        if mid in claimed_before or not stopped:
            assert states[mid] == ("delivered", None), body
        else:
            assert states[mid] == ("blocked", "opted_out"), body
    blocked = sum(1 for s in states.values() if s[0] == "blocked")
    assert blocked == len(ids) - len(reached)


async def _opt_out(gw: Gateway, scope: str) -> set[str]:
    """Commit an opt-out; the ids claimed (sending or beyond) before it, read in its
    own transaction."""
    store = gw.store
    assert store.cipher is not None
    cipher = store.cipher
    entry = ledger.Entry(
        contact_idx=store.blind_index(CANARY_NUMBER),
        number=CANARY_NUMBER,
        decision="opt_out",
        scope=scope,
        program="*",
        source="keyword",
        at=gw.clock.time(),
    )

    def job(conn: Any) -> set[str]:
        ledger.append(conn, cipher, entry)
        rows = conn.execute(
            "SELECT id FROM messages WHERE state IN ('sending', 'sent', 'delivered')"
        ).fetchall()
        return {r[0] for r in rows}

    claimed: set[str] = await store.writer.run(job)
    return claimed


async def _states(gw: Gateway) -> dict[str, tuple[str, str | None]]:
    cur = await gw.store.reader.execute("SELECT id, state, error_code FROM messages")
    return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}


async def test_a_keyword_stop_mid_flow_stops_everything_waiting_and_is_confirmed_once(
    tmp_path: Path,
) -> None:
    """R-OPT-1 end to end: the STOP is a deliver_sm from the handset, not a direct ledger
    write. Its transaction appends the opt-out, blocks every message waiting in its
    scope, audits it and commits the one confirmation; no message in scope gets a
    `sending` event after that transaction's, so none reaches the carrier after it."""
    sim_config = SimulatorConfig(password="pw", receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(sim_config) as sim:
        gw = await _open(tmp_path, sim)
        changed = asyncio.Event()
        poke_on_commit(gw.store.writer, changed.set)
        try:
            await gw.start(dispatch=True)
            await _keyword_race(gw, sim, changed)
        finally:
            await gw.stop()


async def _keyword_race(gw: Gateway, sim: SmscSimulator, changed: asyncio.Event) -> None:
    await record_decision(
        gw, CANARY_NUMBER, "opt_in", "purpose:marketing", disclosure="Offers by text: YES"
    )
    token = await create_token(gw.store, "ehr", frozenset({"send"}), gw.clock)
    record = await gw.store.api_tokens.get(token.id)
    assert record is not None
    caller = Caller.for_token(record)
    ids: dict[str, str] = {}
    for start in range(0, MARKETING + CLINICAL, 100):
        chunk = [
            SendRequest(to=CANARY_NUMBER, body=f"clinical {i}", purpose="appointment")
            if i % 26 == 25
            else SendRequest(to=CANARY_NUMBER, body=f"offer {i}", purpose="marketing")
            for i in range(start, min(start + 100, MARKETING + CLINICAL))
        ]
        accepted = await gw.usecases.messages.accept_together(caller, chunk)
        ids.update({r.body: a.id for r, a in zip(chunk, accepted, strict=True)})

    async def flowing() -> bool:
        return sum(1 for m in sim.submitted if m.text.startswith("offer")) >= 50

    await _until(changed, flowing)
    sim.inject_mo(CANARY_NUMBER, "4000", "STOP")
    idx = gw.store.blind_index(CANARY_NUMBER)

    async def settled() -> bool:
        row = await gw.store.reader.one(
            "SELECT count(*) FROM messages WHERE state IN ('queued', 'sending', 'sent')"
            " OR (purpose = 'compliance' AND state != 'delivered')"
        )
        stopped = await gw.store.reader.one(
            "SELECT count(*) FROM consent_ledger WHERE contact_idx = ? AND decision = 'opt_out'",
            (idx,),
        )
        assert row is not None and stopped is not None
        return row[0] == 0 and stopped[0] > 0

    await _until(changed, settled)
    stop = await gw.store.reader.one("SELECT id, received_at FROM inbound")
    assert stop is not None
    scopes = {
        r[0]
        for r in await gw.store.reader.all(
            "SELECT scope FROM consent_ledger WHERE inbound_id = ? AND decision = 'opt_out'",
            (stop["id"],),
        )
    }
    assert "kind:marketing" in scopes or "all" in scopes
    clinical_stopped = bool({"all", "purpose:appointment"} & scopes)
    # The STOP's transaction blocked what was waiting: its events mark where it committed.
    first = await gw.store.reader.one(
        "SELECT min(seq) FROM message_events WHERE state = 'blocked' AND at = ?",
        (stop["received_at"],),
    )
    assert first is not None and first[0] is not None  # it landed mid-flow
    in_scope = {mid for body, mid in ids.items() if body.startswith("offer") or clinical_stopped}
    late = await gw.store.reader.all(
        "SELECT message_id FROM message_events WHERE state = 'sending' AND seq > ?", (first[0],)
    )
    assert {r[0] for r in late} & in_scope == set()
    states = await _states(gw)
    reached = {m.text for m in sim.submitted if m.destination == CANARY_NUMBER.lstrip("+")}
    for body, mid in ids.items():
        assert (body in reached) == (states[mid][0] == "delivered"), body
        if mid in in_scope and states[mid][0] != "delivered":
            assert states[mid] == ("blocked", "opted_out"), body
        if mid not in in_scope:
            assert states[mid][0] == "delivered", body
    assert sum(1 for mid in in_scope if states[mid][0] == "blocked") > 0
    confirmations = await gw.store.reader.all(
        "SELECT id, body_ct FROM messages WHERE purpose = 'compliance'"
    )
    assert len(confirmations) == 1  # exactly one confirmation
    assert len(reached - set(ids)) == 1  # ... and it reached the handset
    (entry,) = [e for e in await gw.audit.entries() if e.action == "consent_opt_out"][:1]
    assert entry.target_id == idx.hex()
