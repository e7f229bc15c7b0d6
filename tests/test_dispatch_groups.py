"""Dispatch in groups (issue 16, point 1): a round's due messages for a route are
claimed in one store call, handed to the driver together, and their outcomes recorded
in one store call, with today's guarantees kept: every message is `sending` committed
before a byte of it leaves, each keeps its own outcome, and after a crash only what was
in flight comes back, flagged as a possible duplicate."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from prometheus_client import generate_latest

from drivers.base import (
    OutboundSms,
    Receipt,
    ReceiptState,
    SubmitResult,
    TransientSendError,
)
from drivers.clock import FakeClock
from drivers.smpp.pdu import Pdu
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.app import Gateway
from tests.conftest import (
    TEST_CONSENT_TOML,
    GatewayFactory,
    accept,
    loopback,
    smsgw_process,
    state_of,
)
from tests.http_daemon import TOKEN_RE, free_port
from tests.test_outbox_crash import _run
from tests.test_smpp_faults import PASSWORD, RigFactory, open_rig  # noqa: F401 - a fixture

GROUP = 10


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    """The SMSC for `open_rig`; its receipts go when the test moves its clock."""
    config = SimulatorConfig(password=PASSWORD, receipt_delay=1.0, redelivery_delay=0.0)
    async with SmscSimulator(config, clock=FakeClock()) as s:
        yield s


def _number(i: int) -> str:
    return f"+1202555{1000 + i:04d}"


async def test_a_group_is_claimed_in_one_store_call_and_recorded_in_one(
    open_gateway: GatewayFactory,
) -> None:
    """Ten due messages: one writer job claims them all, one records their outcomes
    (one call per message each way before: twenty)."""
    gw = await open_gateway()
    await accept(gw)
    await gw.scheduler.run_until_idle()  # the first round's own writes (route parks) done
    ids = [await accept(gw, to=_number(i)) for i in range(GROUP)]
    writer = gw.store.writer
    items, batches = writer.items, writer.batches
    await gw.scheduler.run_until_idle()
    assert [await state_of(gw, i) for i in ids] == ["sent"] * GROUP
    assert writer.items - items == 2
    assert writer.batches - batches == 2


async def test_each_message_of_a_group_keeps_its_own_outcome(
    open_gateway: GatewayFactory,
) -> None:
    """One message of a group fails at the driver: it alone is retried (with its
    attempt counted); the rest are sent, all recorded together."""
    gw = await open_gateway()
    ids = [await accept(gw, to=_number(i)) for i in range(4)]
    driver = loopback(gw)
    original = driver.submit

    async def submit(sms: OutboundSms) -> SubmitResult:
        if sms.message_id == ids[1]:
            raise TransientSendError("no", code="loopback:busy")
        return await original(sms)

    driver.submit = submit  # type: ignore[method-assign]
    await gw.scheduler.run_until_idle()
    states = [await state_of(gw, i) for i in ids]
    assert states == ["sent", "queued", "sent", "sent"]
    assert [e.state for e in await gw.store.events(ids[1])] == ["queued", "sending", "queued"]


def _committed_state(db: Path, gw: Gateway, destination: str) -> str | None:
    """The message's state as another connection sees it: only what is committed."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT state FROM messages WHERE to_index = ?",
            (gw.store.blind_index("+" + destination),),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


async def test_no_submit_sm_reaches_the_smsc_before_its_group_claim_commits(
    open_rig: RigFactory,  # noqa: F811 - the fixture
    sim: SmscSimulator,
) -> None:
    rig = await open_rig()
    gw = rig.gw
    db = gw.config.db_path
    seen: list[str | None] = []
    on_request = sim._on_request

    def spy(link: Any, pdu: Pdu) -> None:
        # At the moment the SMSC reads the submit_sm, before it answers.
        seen.append(_committed_state(db, gw, pdu.param("destination_addr", str)))
        on_request(link, pdu)

    sim._on_request = spy  # type: ignore[method-assign]
    route = gw.routes["carrier"]
    route.set_paused(True)
    ids = [await accept(gw, to=_number(i)) for i in range(GROUP)]
    items = gw.store.writer.items
    route.set_paused(False)
    gw.scheduler.wake()
    await rig.until(rig.all_in(ids, ("sent",)))
    assert seen == ["sending"] * GROUP
    assert len(sim.submitted) == GROUP
    # The ten claims were one store call (receipts and outcomes are counted apart).
    claims = [e for i in ids for e in await gw.store.events(i) if e.state == "sending"]
    assert len({e.at for e in claims}) == 1
    assert gw.store.writer.items - items < 2 * GROUP


async def test_receipts_read_together_are_committed_together_before_they_are_acked(
    open_rig: RigFactory,  # noqa: F811 - the fixture
    sim: SmscSimulator,
) -> None:
    """Ten receipts arrive in one read: one store call makes them durable, and the SMSC
    has none of their deliver_sm_resp before that commit returned."""
    rig = await open_rig()
    gw = rig.gw
    route = gw.routes["carrier"]
    route.set_paused(True)
    ids = [await accept(gw, to=_number(i)) for i in range(GROUP)]
    route.set_paused(False)
    gw.scheduler.wake()
    await rig.until(rig.all_in(ids, ("sent",)))
    calls: list[tuple[int, int]] = []  # (receipts in the call, receipts the SMSC had acked)
    apply_receipts = gw.store.apply_receipts

    async def counting(route: str, receipts: Any, now: float) -> Any:
        applied = await apply_receipts(route, receipts, now)
        calls.append((len(receipts), sim.receipts_sent))
        return applied

    gw.store.apply_receipts = counting  # type: ignore[method-assign]
    assert isinstance(sim.clock, FakeClock)
    await sim.clock.wait_sleeping(GROUP)
    sim.clock.advance(1.0)  # every receipt goes in this turn of the loop
    await rig.until(rig.all_in(ids, ("delivered",)))
    await rig.until(lambda: sim.receipts_sent == GROUP)
    assert calls == [(GROUP, 0)]


def _daemon_config(tmp_path: Path, http_port: int, smsc_port: int) -> Path:
    conf = tmp_path / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{tmp_path}"\n\n[http]\nlisten = "127.0.0.1:{http_port}"\n\n'
        '[log]\nformat = "json"\nlevel = "info"\n\n'
        '[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "127.0.0.1"\n'
        f'port = {smsc_port}\nsystem_id = "smsgw"\npassword = "{PASSWORD}"\n'
        "window = 4\nclaim_ahead = 4\nresponse_timeout = 60.0\nreconnect_min = 0.05\n"
        "reconnect_max = 0.2\nbind_timeout = 2.0\n" + TEST_CONSENT_TOML
    )
    return conf


def _rows(db: Path) -> dict[str, tuple[str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            r[0]: (str(r[1]), int(r[2]))
            for r in conn.execute("SELECT id, state, possible_duplicate FROM messages")
        }
    finally:
        conn.close()


async def _until(check: Any, smsc: SmscSimulator, within: float = 20.0) -> None:
    """Until `check()` holds: looked at after each simulator event, and every 50 ms for
    what only the daemon's store shows (its commits are in another process)."""
    async with asyncio.timeout(within):
        while not check():
            await asyncio.wait(
                [asyncio.ensure_future(smsc.wait_until(check))],
                timeout=0.05,
            )


async def test_sigkill_with_a_group_in_flight_flags_only_that_group(tmp_path: Path) -> None:
    """A real `smsgw run` claims groups, writes their submit_sm and is killed before
    the SMSC answers: after the restart exactly the claimed messages come back as
    possible duplicates, the ones still queued do not, and every message is sent."""
    init = await smsgw_process("init", "--data-dir", str(tmp_path))
    out, _ = await init.communicate()
    assert init.returncode == 0
    (token,) = TOKEN_RE.findall(out.decode())
    config = SimulatorConfig(password=PASSWORD, system_id="smsgw", receipt_delay=0.0)
    async with SmscSimulator(config) as smsc:
        http_port = free_port()
        conf = _daemon_config(tmp_path, http_port, smsc.port)
        db = tmp_path / "smsgw.db"
        daemon = await _run(conf)
        try:
            await _until(lambda: smsc.binds > 0, smsc)
            smsc.stop_answering()  # the submits stay unanswered: in flight
            ids = []
            async with ClientSession() as http:
                for i in range(12):
                    async with http.post(
                        f"http://127.0.0.1:{http_port}/api/v1/messages",
                        json={"to": _number(i), "body": f"group {i}"},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as resp:
                        assert resp.status == 202, await resp.text()
                        ids.append((await resp.json())["id"])
            # window 4 + claim_ahead 4: eight claimed, four still queued
            await _until(lambda: sum(s == "sending" for s, _ in _rows(db).values()) == 8, smsc)
            in_flight = {i for i, (s, _) in _rows(db).items() if s == "sending"}
        finally:
            await daemon.end(kill=True)
        smsc.resume_answering()
        daemon = await _run(conf)
        try:
            await _until(
                lambda: all(s in ("sent", "delivered") for s, _ in _rows(db).values()), smsc
            )
        finally:
            await daemon.end(kill=False)
        rows = _rows(db)
        assert {i for i, (_, dup) in rows.items() if dup} == in_flight
        assert set(rows) == set(ids)
        assert {m.destination for m in smsc.submitted} >= {_number(i)[1:] for i in range(12)}


async def test_a_round_asks_each_route_its_health_once(open_gateway: GatewayFactory) -> None:
    """Whether a route can send is asked once per round, not once per message taken
    (an SMPP route builds its health record on each call); the messages still go."""
    gw = await open_gateway()
    await accept(gw)
    await gw.scheduler.run_until_idle()
    ids = [await accept(gw, to=_number(i)) for i in range(GROUP)]
    driver = loopback(gw)
    original = driver.health
    asked = 0

    def health() -> Any:
        nonlocal asked
        asked += 1
        return original()

    driver.health = health  # type: ignore[method-assign]
    await gw.scheduler.run_until_idle()
    assert [await state_of(gw, i) for i in ids] == ["sent"] * GROUP
    assert asked <= 3, asked  # rounds, not messages (GROUP asks before)


async def test_a_group_of_receipts_counts_each_final_state_once_per_message(
    open_gateway: GatewayFactory,
) -> None:
    """Receipts applied as one group (the SMPP driver's way) count every final state
    in `smsgw_messages_final_total` once per message, though counted per state and
    group now rather than per receipt."""
    gw = await open_gateway()
    ids = [await accept(gw, to=_number(i)) for i in range(5)]
    await gw.scheduler.run_until_idle()
    conn = sqlite3.connect(f"file:{gw.config.db_path}?mode=ro", uri=True)
    try:
        carrier = dict(conn.execute("SELECT message_id, carrier_id FROM carrier_ids").fetchall())
    finally:
        conn.close()
    final = gw.metrics.final
    before = {s: final.labels(s)._value.get() for s in ("delivered", "failed")}
    receipts = [Receipt(carrier[i], ReceiptState.DELIVERED) for i in ids[:4]]
    receipts.append(Receipt(carrier[ids[4]], ReceiptState.FAILED, "smpp-dlr:UNDELIV"))
    receipts.append(Receipt(carrier[ids[0]], ReceiptState.DELIVERED))  # a duplicate
    failed = await gw.sink.receipt_group("main", receipts)
    assert failed == [None] * len(receipts)
    assert [await state_of(gw, i) for i in ids] == ["delivered"] * 4 + ["failed"]
    after = {s: final.labels(s)._value.get() for s in ("delivered", "failed")}
    assert after["delivered"] - before["delivered"] == 4
    assert after["failed"] - before["failed"] == 1


async def test_a_round_with_one_class_due_looks_at_its_heads_only(
    open_gateway: GatewayFactory,
) -> None:
    """With one class due, a round scans every class's head once and then only that
    class's next head per message (it scanned them all per message before: about five
    looks a message); the messages all go, each counted once in the queue and
    submit latency histograms, and nothing is left in flight."""
    gw = await open_gateway()
    await accept(gw)
    await gw.scheduler.run_until_idle()
    ids = [await accept(gw, to=_number(i)) for i in range(GROUP)]
    scheduler = gw.scheduler
    original = scheduler._head
    looks = 0

    def head(priority: Any) -> Any:
        nonlocal looks
        looks += 1
        return original(priority)

    round_ = scheduler._round
    rounds = 0

    async def counted_round() -> float:
        nonlocal rounds
        rounds += 1
        return await round_()

    scheduler._head = head  # type: ignore[method-assign]
    scheduler._round = counted_round  # type: ignore[method-assign]
    await scheduler.run_until_idle()
    assert [await state_of(gw, i) for i in ids] == ["sent"] * GROUP
    # One look a message taken, and per round a scan of the four classes and the look
    # that finds nothing more (five a message and round before: 58 here).
    assert looks <= GROUP + 5 * rounds + 2 and looks < 4 * GROUP, (looks, rounds)
    text = generate_latest(gw.metrics.registry).decode()
    assert 'smsgw_queue_seconds_count{priority="normal"} 11.0' in text
    assert 'smsgw_submit_seconds_count{route="main"} 11.0' in text
    assert 'smsgw_route_in_flight{route="main"} 0.0' in text
