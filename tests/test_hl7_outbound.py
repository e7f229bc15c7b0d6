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


async def flags(store: Store, row_id: str) -> tuple[bool, int]:
    """(an attempt is marked in flight, possible_duplicate)."""

    def job(conn: sqlite3.Connection) -> tuple[bool, int]:
        r = conn.execute(
            "SELECT sending_at, possible_duplicate FROM hl7_outbound WHERE id = ?", (row_id,)
        ).fetchone()
        return (r[0] is not None, r[1])

    found: tuple[bool, int] = await store.writer.run(job)
    return found


async def test_only_an_attempt_of_unknown_fate_flags_its_resend(store: Store) -> None:
    """AR is an answer, a refused connection sent nothing: not flagged. Silence (the
    EHR may have it) flags the row before it goes again."""
    ehr = Ehr(["AR", None, "AA"])
    clock = FakeClock()
    out = lane.OutboundLane(iface(await ehr.start()), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W6")
    assert await out.run_due() == 1
    assert await flags(store, rid) == (False, 0)
    clock.advance(5.0)
    assert await out.run_due() == 1  # no answer
    assert await flags(store, rid) == (False, 1)
    clock.advance(8.0)
    assert await out.run_due() == 1
    assert (await row(store, rid))[0] == "acked" and await flags(store, rid) == (False, 1)
    await out.client.aclose()
    await ehr.aclose()

    down = Ehr([])
    port = await down.start()
    await down.aclose()
    refused = lane.OutboundLane(iface(port), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W7")
    assert await refused.run_due() == 1
    assert (await row(store, rid))[0] == "pending" and await flags(store, rid) == (False, 0)


async def test_an_attempt_cut_off_mid_send_is_flagged_and_sent_again(store: Store) -> None:
    """The sender dies while waiting for the ACK (its task cancelled: a crash, or a lane
    leader killed): the row keeps its mark; the next lane flags it and sends it again,
    with its control id."""
    ehr = Ehr([None, "AA"])
    clock = FakeClock()
    port = await ehr.start()
    dying = lane.OutboundLane(iface(port, ack_timeout=60.0), LocalClinicalDb(store), clock)
    rid = await queue(store, clock, "W8")
    attempt = asyncio.create_task(dying.run_due())

    async def received() -> None:
        while not ehr.received:
            assert ehr.changed is not None
            await ehr.changed.wait()

    ehr.changed = asyncio.Event()
    await asyncio.wait_for(received(), 10)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    await dying.client.aclose()
    assert await flags(store, rid) == (True, 0)  # marked, its outcome never written

    survivor = lane.OutboundLane(iface(port), LocalClinicalDb(store), clock)
    assert await survivor.run_due() == 1
    assert await row(store, rid) == ("acked", 1, "AA", None)
    assert await flags(store, rid) == (False, 1)
    assert [str(hl7.parse(m).segment("MSH")[10]) for m in ehr.received] == ["W8", "W8"]
    await survivor.client.aclose()
    await ehr.aclose()
