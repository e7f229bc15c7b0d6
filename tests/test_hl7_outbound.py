"""The outbound lane against python-hl7's MLLP server (an independent peer, with
encoding="utf-8"): acked on AA, retried with back-off on AR or silence, parked on AE
or when attempts run out, re-sent from parked. The clock is a fake one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from drivers.clock import FakeClock
from gateway.clinical import outbound
from gateway.clinical.db import LocalClinicalDb
from gateway.hl7 import lane
from gateway.hl7.settings import Hl7Interface
from gateway.store.consent_sql import cipher_of
from gateway.store.store import Store
from tests.hl7_peers import Ehr

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

S14 = (
    "MSH|^~\\&|SMSGW|HOSP|EHR|CLINIC|20261201090000||SIU^S14^SIU_S12|{cid}|P|2.5.1\r"
    "SCH|A1^EHR|F1^EHR||||||||||||||||||||||||Booked\r"
    "NTE|1||Confirmed by SMS (Müller)\r"
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db", bytes(32))
    await s.open()
    yield s
    await s.close()


async def queue(store: Store, clock: FakeClock, cid: str) -> str:
    def job(conn: sqlite3.Connection) -> str:
        return outbound.enqueue(
            conn,
            cipher_of(store),
            "ehr-out",
            S14.format(cid=cid),
            cid,
            clock.time(),
            kind="appointment_reply",
            ref="r1",
        )

    row_id: str = await store.writer.run(job)
    return row_id


async def row(store: Store, row_id: str) -> tuple[str, int, str | None, str | None]:
    def job(conn: sqlite3.Connection) -> tuple[str, int, str | None, str | None]:
        r = conn.execute(
            "SELECT state, attempts, ack_code, last_error FROM hl7_outbound WHERE id = ?",
            (row_id,),
        ).fetchone()
        return (r[0], r[1], r[2], r[3])

    found: tuple[str, int, str | None, str | None] = await store.writer.run(job)
    return found


def iface(port: int, **kw: object) -> Hl7Interface:
    base: dict[str, object] = {
        "name": "ehr-out",
        "direction": "out",
        "host": "127.0.0.1",
        "port": port,
        "ack_timeout": 0.3,
        "retries": 2,
        "backoff_initial": 5.0,
        "backoff_max": 8.0,
    }
    base.update(kw)
    return Hl7Interface(**base)  # type: ignore[arg-type]


Lane = Callable[..., lane.OutboundLane]


async def test_aa_acks_and_the_peer_reads_the_message_as_sent(store: Store) -> None:
    ehr = Ehr(["AA"])
    clock = FakeClock()
    out = lane.OutboundLane(iface(await ehr.start()), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W1")
    assert await out.run_due() == 1
    assert await row(store, rid) == ("acked", 1, "AA", None)
    assert "Müller" in ehr.received[0]  # sent as UTF-8, read as UTF-8
    assert str(hl7.parse(ehr.received[0]).segment("MSH")[10]) == "W1"
    await out.client.aclose()
    await ehr.aclose()


async def test_ar_and_silence_retry_with_backoff_then_park_and_resend(store: Store) -> None:
    ehr = Ehr(["AR", None, "AR", "AA"])
    clock = FakeClock()
    out = lane.OutboundLane(iface(await ehr.start()), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W2")
    assert await out.run_due() == 1
    assert (await row(store, rid))[:3] == ("pending", 1, "AR")
    assert await out.run_due() == 0  # not due before its back-off
    clock.advance(5.0)
    assert await out.run_due() == 1  # no answer: a timeout
    state, attempts, _, error = await row(store, rid)
    assert (state, attempts) == ("pending", 2) and error is not None and "acknowledgment" in error
    clock.advance(8.0)  # 10 s doubled, capped at backoff_max
    assert await out.run_due() == 1
    assert (await row(store, rid))[:2] == ("parked", 3)  # retries = 2 after the first
    assert await lane.resend(LocalClinicalDb(store), rid, clock.time())
    assert not await lane.resend(LocalClinicalDb(store), rid, clock.time())  # only a parked one
    assert await out.run_due() == 1
    assert (await row(store, rid))[:3] == ("acked", 1, "AA")
    await out.client.aclose()
    await ehr.aclose()


async def test_ae_parks_at_once(store: Store) -> None:
    ehr = Ehr(["AE"])
    clock = FakeClock()
    out = lane.OutboundLane(iface(await ehr.start()), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W3")
    await out.run_due()
    assert (await row(store, rid))[:3] == ("parked", 1, "AE")
    await out.client.aclose()
    await ehr.aclose()


async def test_a_peer_that_is_down_is_retried(store: Store) -> None:
    ehr = Ehr([])
    port = await ehr.start()
    await ehr.aclose()  # nothing listens there now
    clock = FakeClock()
    out = lane.OutboundLane(iface(port), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W4")
    await out.run_due()
    state, attempts, code, error = await row(store, rid)
    assert (state, attempts, code) == ("pending", 1, None) and error


async def test_the_running_lane_wakes_and_sends(store: Store) -> None:
    ehr = Ehr([])
    clock = FakeClock()
    out = lane.OutboundLane(iface(await ehr.start()), LocalClinicalDb(store), clock)
    task = asyncio.create_task(out.run())
    await clock.wait_sleeping(1)
    rid = await queue(store, clock, "W5")
    out.wake()

    async def acked() -> None:
        while (await row(store, rid))[0] != "acked":
            await clock.wait_sleeping(1)
            clock.advance(lane.POLL)

    await asyncio.wait_for(acked(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ehr.aclose()
