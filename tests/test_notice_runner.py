"""The notice runner: a due reminder becomes one message through the send policy, with
its notice `queued` in the same transaction; skipped once when its recheck, expiry or
template says so; never sent twice by concurrent passes; wakes on the gateway's clock.
The end-to-end test runs the whole gateway against the SMSC simulator over SMPP."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import AdjustableClock, FakeClock
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.app import Gateway
from gateway.clinical import notices
from gateway.clinical.notices import NoticeState
from gateway.clinical.rendering import Rendered
from gateway.clinical.runner import NoticeRunner
from gateway.reminders import rules
from gateway.reminders.rules import RuleSpec
from tests.clinical_rows import NUMBER, Booking, DictRenderer, book, context
from tests.conftest import (
    TEST_CONSENT,
    GatewayFactory,
    make_config,
    poke_on_commit,
    record_decision,
)
from tests.test_smpp_faults import PASSWORD, Rig, _relay, smpp_route

H = 3600.0
ANY_HOUR = {"window": "", "caps": []}
CONSENT = {**TEST_CONSENT, "purposes": {**TEST_CONSENT["purposes"], "appointment": ANY_HOUR}}


async def _setup(gw: Gateway, *, lead: str = "-2h", start_in: float = 26 * H, **b: Any) -> str:
    """A -2h rule (the first time) and an appointment `start_in` from now; its id."""
    ctx = context(gw.store, gw.clock.time(), gw.clinical_hooks)

    def job(conn: sqlite3.Connection) -> str:
        if not rules.current(conn):
            rules.save(conn, None, RuleSpec("r", lead, "reminder"), "t", ctx.now)
        return book(conn, ctx, Booking(ctx.now + start_in, zone="UTC", **b))

    return await gw.store.writer.run(job)


async def _notices(gw: Gateway, appt: str) -> list[notices.NoticeRow]:
    assert gw.store.cipher is not None
    cipher = gw.store.cipher
    return await gw.store.writer.run(lambda c: notices.of_appointment(c, cipher, appt))


async def _messages(gw: Gateway) -> list[dict[str, Any]]:
    rows = await gw.store.reader.all(
        "SELECT id, state, category, purpose, priority, error_code FROM messages ORDER BY id"
    )
    return [dict(r) for r in rows]


def _runner(gw: Gateway, renderer: Any = None) -> NoticeRunner:
    return gw.notice_runner(renderer or DictRenderer())


async def test_a_due_reminder_is_sent_once_in_the_patients_language(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CONSENT)
    appt = await _setup(gw)
    renderer = DictRenderer()
    runner = _runner(gw, renderer)
    assert (await runner.run_once()).outcomes == {}  # not due yet
    clock.advance(24 * H)
    result = await runner.run_once()
    assert result.queued == 1 and len(result.messages) == 1
    [row] = await _notices(gw, appt)
    assert row.state is NoticeState.QUEUED and row.message_id == result.messages[0]
    assert row.reason is None
    [message] = await _messages(gw)
    assert message["category"] == "reminder" and message["purpose"] == "appointment"
    stored = await gw.store.records.message(message["id"])
    assert stored is not None and stored.reference is not None
    assert stored.reference.open() == row.id and stored.to.open() == NUMBER
    assert stored.body.open().startswith("Recordatorio: North Clinic el 20")
    assert renderer.calls[0][1] == "es"
    await gw.scheduler.run_until_idle()
    assert [m["state"] for m in await _messages(gw)] == ["sent"]
    assert (await runner.run_once()).outcomes == {}  # sent once
    metrics = gw.metrics.registry.get_sample_value
    assert metrics("smsgw_clinical_notices_total", {"kind": "reminder", "outcome": "queued"}) == 1


async def test_recheck_expiry_and_missing_template_skip_once(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CONSENT)
    moved = await _setup(gw)
    late = await _setup(gw, start_in=3 * H, mrn="M2")
    odd = await _setup(gw, mrn="M3", language="fr")
    # cancelled behind the planner's back: only the send-time recheck can see it
    await gw.store.writer.run(
        lambda c: c.execute("UPDATE appointments SET status = 'cancelled' WHERE id = ?", (moved,))
    )
    runner = _runner(gw, DictRenderer(texts={("reminder", "es"): "{short_code}"}))
    clock.advance(4 * H)  # `late` starts in 3 h: its -2h reminder expired unsent
    assert (await runner.run_once()).outcomes == {"skipped:expired": 1}
    clock.advance(20 * H)
    result = await runner.run_once()
    assert result.outcomes == {"skipped:not_booked": 1, "skipped:template_missing": 1}
    for appt, reason in ((moved, "not_booked"), (late, "expired"), (odd, "template_missing")):
        [row] = await _notices(gw, appt)
        assert (row.state, row.reason, row.message_id) == (NoticeState.SKIPPED, reason, None)
    assert await _messages(gw) == []


async def test_an_opted_out_patient_gets_a_blocked_message_and_the_notice_says_so(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CONSENT)
    appt = await _setup(gw)
    await record_decision(gw, NUMBER, "opt_out", "all")
    clock.advance(24 * H)
    assert (await _runner(gw).run_once()).queued == 1
    [row] = await _notices(gw, appt)
    [message] = await _messages(gw)
    assert (message["state"], message["error_code"]) == ("blocked", "opted_out")
    assert row.state is NoticeState.QUEUED and row.message_id == message["id"]
    assert row.reason == "blocked:opted_out"


async def test_quiet_hours_hold_the_message_and_the_notice_records_it(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    night = {**TEST_CONSENT, "purposes": {**TEST_CONSENT["purposes"],
             "appointment": {"window": "09:00-10:00", "caps": []}}}  # fmt: skip
    gw = await open_gateway(consent=night)
    appt = await _setup(gw, start_in=50 * H)  # FakeClock starts at 08:00 UTC: due 08:00
    clock.advance(48 * H)
    await _runner(gw).run_once()
    [row] = await _notices(gw, appt)
    [message] = await _messages(gw)
    assert message["state"] == "scheduled" and row.reason == "scheduled:quiet_hours"


async def test_two_concurrent_passes_send_each_notice_once(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CONSENT)
    appts = [await _setup(gw, mrn=f"M{i}", number=f"+1202555{i:04d}") for i in range(20)]
    clock.advance(24 * H)
    first, second = _runner(gw), _runner(gw)
    results = await asyncio.gather(first.run_once(), second.run_once(), first.run_once())
    assert sum(r.queued for r in results) == 20
    assert len(await _messages(gw)) == 20
    for appt in appts:
        [row] = await _notices(gw, appt)
        assert row.state is NoticeState.QUEUED


class Replanning(DictRenderer):
    """Renders, while (as a re-plan in the same instant would) the notice is closed."""

    def render(
        self,
        conn: sqlite3.Connection,
        name: str,
        language: str | None,
        variables: Mapping[str, str],
        *,
        variant: str | None = None,
    ) -> Rendered:
        conn.execute("UPDATE clinical_notices SET state = 'superseded' WHERE state = 'pending'")
        return super().render(conn, name, language, variables, variant=variant)


async def test_a_notice_that_left_pending_meanwhile_takes_its_message_back(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CONSENT)
    appt = await _setup(gw)
    clock.advance(24 * H)
    result = await _runner(gw, Replanning()).run_once()
    assert result.outcomes == {"gone": 1} and result.messages == []
    assert await _messages(gw) == []  # no message without its notice
    [row] = await _notices(gw, appt)
    assert row.state is NoticeState.PENDING  # the closing rolled back with it: still due
    assert (await _runner(gw).run_once()).queued == 1


async def test_nothing_is_taken_while_the_gateway_shuts_down(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CONSENT)
    appt = await _setup(gw)
    clock.advance(24 * H)
    gw.accepting = False
    with pytest.raises(Exception, match="shutting down"):
        await _runner(gw).run_once()
    [row] = await _notices(gw, appt)
    assert row.state is NoticeState.PENDING


# -- the whole gateway on a fast-forwarded clock, over SMPP to the simulator --------------


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    config = SimulatorConfig(password=PASSWORD, receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(config) as s:
        yield s


async def test_the_running_gateway_sends_a_reminder_when_the_clock_reaches_it(
    tmp_path: Path, sim: SmscSimulator
) -> None:
    clock = FakeClock()
    config = make_config(
        tmp_path,
        [smpp_route(sim)],
        queue={"retry_base": 0.05, "retry_cap": 0.2},
        http={"shutdown_grace": 0.5},
        consent=CONSENT,
    )
    gw = await Gateway.open(config, clock)
    gw.renderer = DictRenderer()
    rig = Rig(gw, sim)
    poke_on_commit(gw.store.writer, rig.poke)
    relay = asyncio.create_task(_relay(sim, rig.poke))
    try:
        await gw.start(dispatch=True)
        await rig.until_up()
        appt = await _setup(gw, start_in=3 * H)
        assert sim.submitted == []
        clock.advance(H)  # the reminder is due: the runner's sleep ends on this clock

        async def queued() -> bool:
            rows = await _notices(gw, appt)
            return rows[0].state is NoticeState.QUEUED

        await rig.until(queued)
        await rig.until(lambda: len(sim.submitted) == 1)
        assert sim.submitted[0].text.startswith("Recordatorio: North Clinic")
        assert sim.submitted[0].destination == NUMBER.removeprefix("+")
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await gw.stop()


class SleepLog(FakeClock):
    """A fake clock that tells the test each time a task goes to sleep, and for how long."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []
        self.changed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.changed.set()
        await super().sleep(seconds)

    async def until_asleep_for(self, seconds: float) -> None:
        async with asyncio.timeout(5):
            while not any(abs(s - seconds) < 1e-6 for s in self.slept):
                self.changed.clear()
                await self.changed.wait()


async def test_a_notice_planned_while_the_runner_sleeps_rings_it_awake(tmp_path: Path) -> None:
    """The runner sleeps up to a minute with nothing due; a reminder planned meanwhile
    and due in 7 s must not wait for that minute: the planner's bell wakes it, it sleeps
    7 s instead, and goes when the clock gets there."""
    clock = SleepLog()
    gw = await Gateway.open(make_config(tmp_path, consent=CONSENT), clock)
    gw.renderer = DictRenderer()
    try:
        await gw.start(dispatch=True)
        await clock.until_asleep_for(60.0)  # MAX_SLEEP: nothing planned
        clock.slept.clear()
        appt = await _setup(gw, lead="-1m", start_in=67.0)
        await clock.until_asleep_for(7.0)
        clock.advance(7.0)
        changed = asyncio.Event()
        poke_on_commit(gw.store.writer, changed.set)
        async with asyncio.timeout(5):
            while (await _notices(gw, appt))[0].state is not NoticeState.QUEUED:
                changed.clear()
                await changed.wait()
    finally:
        await gw.stop()


async def test_the_demos_clock_jump_sends_tomorrows_reminder_now(tmp_path: Path) -> None:
    """The embedded default's adjustable clock (`POST /demo/clock/advance`): a jump past
    a reminder's due time wakes the sleeping runner, which sends it at once."""
    clock = AdjustableClock()
    gw = await Gateway.open(make_config(tmp_path, consent=CONSENT), clock)
    gw.renderer = DictRenderer()
    changed = asyncio.Event()
    poke_on_commit(gw.store.writer, changed.set)
    try:
        await gw.start(dispatch=True)
        appt = await _setup(gw, start_in=26 * H)  # due tomorrow, 2 h before the start
        clock.advance(24 * H + 60)
        async with asyncio.timeout(10):
            while (await _notices(gw, appt))[0].state is not NoticeState.QUEUED:
                changed.clear()
                await changed.wait()
        assert [m["category"] for m in await _messages(gw)] == ["reminder"]
    finally:
        await gw.stop()
