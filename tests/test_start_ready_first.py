"""`smsgw run`'s fast start (issue 16, point 5): what need not come before serving
comes after it, and the guarantees hold across the gap.

Scheduled messages due past `LOAD_AHEAD` are read after ready (`load_later`); until
then none past that horizon is promoted, so a message not read yet is never passed
over. The audit chain is checked after ready, in a thread, and a broken one alerts as
before. Real store and loopback route on a fake clock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import structlog

from drivers.base import OutboundSms, SubmitResult
from gateway.app import Gateway
from gateway.scheduler import LOAD_AHEAD
from gateway.store.audit_log import Verification
from tests.conftest import GatewayFactory, accept, loopback, state_of

ONE_AT_A_TIME = [{"name": "main", "type": "loopback", "latency": 0, "window": 1}]
NO_SHARES = {
    "classes": {
        p: {"expires_after": 3600, "max_attempts": 3, "min_share": 0}
        for p in ("critical", "high", "normal", "bulk")
    }
}


def recorded_bodies(gw: Gateway) -> list[str]:
    order: list[str] = []
    driver = loopback(gw)
    original = driver.submit

    async def recording_submit(sms: OutboundSms) -> SubmitResult:
        order.append(sms.parts[0])
        return await original(sms)

    driver.submit = recording_submit  # type: ignore[method-assign]
    return order


def at(gw: Gateway, seconds_from_now: float) -> datetime:
    return datetime.fromtimestamp(gw.clock.time() + seconds_from_now, UTC)


async def test_scheduled_past_the_horizon_come_after_ready_and_go_in_priority_order(
    open_gateway: GatewayFactory, clock
) -> None:
    gw = await open_gateway(ONE_AT_A_TIME, queue=NO_SHARES)
    far = LOAD_AHEAD + 600
    await accept(gw, body="bulk now", priority="bulk")
    await accept(gw, body="normal now", priority="normal")
    await accept(gw, body="bulk soon", priority="bulk", send_at=at(gw, 60))
    await accept(gw, body="bulk far", priority="bulk", send_at=at(gw, far - 10))
    await accept(gw, body="critical far", priority="critical", send_at=at(gw, far))
    await gw.stop()

    gw = await open_gateway(ONE_AT_A_TIME, queue=NO_SHARES, start=False)
    await gw.start(dispatch=False, ready_first=True)
    order = recorded_bodies(gw)
    assert gw.scheduler.depths()["queued"] == {"critical": 0, "high": 0, "normal": 1, "bulk": 1}
    assert sum(gw.scheduler.depths()["scheduled"].values()) == 1  # only "bulk soon"
    # Accepted while the rest is not read yet: held once, not twice.
    late = await accept(gw, body="high far", priority="high", send_at=at(gw, far - 5))

    await gw.scheduler.run_until_idle()
    assert order == ["normal now", "bulk now"]
    clock.advance(far + 1)  # everything is due; what lies past the horizon waits
    await gw.scheduler.run_until_idle()
    assert order == ["normal now", "bulk now", "bulk soon"]
    assert await state_of(gw, late) == "scheduled"

    assert await gw.scheduler.load_later() == 2
    await gw.scheduler.run_until_idle()
    assert order[3:] == ["critical far", "high far", "bulk far"]
    assert sum(gw.scheduler.depths()["scheduled"].values()) == 0


async def test_a_plain_start_reads_every_scheduled_message(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    await accept(gw, send_at=at(gw, LOAD_AHEAD * 10))
    await gw.stop()
    gw = await open_gateway()
    assert sum(gw.scheduler.depths()["scheduled"].values()) == 1
    assert await gw.scheduler.load_later() == 0


async def test_a_chain_tampered_before_a_fast_start_still_alerts(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await gw.audit.record("test", "route_paused", "route", "main")
    await gw.stop()
    conn = sqlite3.connect(gw.config.db_path)
    with conn:  # what an intruder with the file would do: the triggers go first
        conn.execute("DROP TRIGGER audit_log_no_update")
        assert conn.execute("UPDATE audit_log SET action = 'x' WHERE seq = 1").rowcount == 1
    conn.close()

    gw = await open_gateway(start=False)
    await gw.start(dispatch=False, ready_first=True)
    checked = asyncio.Event()
    verify = gw.audit.verify_apart

    async def verify_and_tell() -> Verification:
        try:
            return await verify()
        finally:
            checked.set()

    gw.audit.verify_apart = verify_and_tell  # type: ignore[method-assign]
    settled = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        gw.after_ready(settled=settled.set)
        async with asyncio.timeout(10):
            await settled.wait()
            await checked.wait()
    assert gw.metrics.registry.get_sample_value("smsgw_audit_chain_ok") == 0
    broken = [e for e in logs if e["event"] == "audit_chain_broken"]
    assert broken and broken[0]["first_bad_seq"] == 1
