"""Issue 18: an SIU that moves an appointment to another patient locks both patients.

A keyed HL7 job locks the keys its message names; an appointment moved from patient A
to patient B names only B, so the job, once it has read the appointment, asks for A's
keys too and runs again holding all of them in the one order
(`gateway/hl7/inbound.py`, `AppointmentChange.apply`). Driven with the locks
themselves, never timed: a third session holds a patient's key; the move waits for it
(`pg_locks` shows the wait, the ACK has not come), a booking for A waits beside it, and
both finish once it lets go. Two moves in opposite directions (A to B, B to A) under
the same hold both finish, no deadlock. The outcome is a serial one: each appointment
is its new patient's, with its reminder to that patient's number only. SQLite (one
writer) gets the same messages and must end the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from drivers.clock import FakeClock
from gateway.cluster.clinical_db import KEY_SPACE, key_numbers
from gateway.reminders.rules import RuleSpec
from tests.appointment_rig import siu
from tests.hl7_rig import msa
from tests.pg.test_hl7_cluster import Nodes, nodes  # noqa: F401 - the fixture

H = 3600.0
WAIT = 10.0  # an upper bound on waiting for a lock's waiters, never an expected duration
PHONE = {"A": "^PRN^CP^^1^202^5550123", "B": "^PRN^CP^^1^202^5550177"}
E164 = {"A": "+12025550123", "B": "+12025550177"}
MRN = {"A": "MRNA", "B": "MRNB"}


class Feed:
    """SIU messages for one appointment's key and patient, each sent later than the
    last (a move is never stale)."""

    def __init__(self, clock: FakeClock) -> None:
        self.now = clock.time()
        self.sent = self.now
        self.start = self.now + 26 * H  # the reminder (2 h before) is pending

    def siu(self, event: str, key: str, patient: str) -> str:
        self.sent += 60
        return siu(
            event, key=key, sent=self.sent, start=self.start, mrn=MRN[patient],
            phone=PHONE[patient],
        )  # fmt: skip


@pytest.fixture
async def holder(nodes: Nodes) -> AsyncIterator[Holder | None]:  # noqa: F811
    """A third session to hold patients' keys (PostgreSQL only)."""
    if nodes.a.cluster is None:
        yield None
        return
    conninfo = nodes.a.config.cluster.conninfo
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        yield Holder(conn, nodes)


class Holder:
    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]], pair: Nodes) -> None:
        self.conn = conn
        self.cipher = pair.a.clinical_db.cipher
        self.dsn = pair.a.config.cluster.conninfo

    def numbers(self, patients: tuple[str, ...], *, with_numbers: bool = False) -> list[int]:
        keys = [("patient", "ehr", "HOSP", MRN[p]) for p in patients]
        keys += [("contact", E164[p]) for p in patients if with_numbers]
        return key_numbers(self.cipher, keys)

    async def hold(self, *patients: str) -> None:
        """Each patient's key, in a transaction left open (`release` ends it)."""
        for number in self.numbers(patients):
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (KEY_SPACE, number))

    async def waiting(self, count: int, *patients: str) -> None:
        """Return once `count` sessions wait for these patients' keys or their numbers'
        (a job holding the one may be what another waits for)."""
        numbers = self.numbers(patients, with_numbers=True)
        objids = [n & 0xFFFFFFFF for n in numbers]  # pg_locks shows oids
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            async with asyncio.timeout(WAIT):
                while True:
                    cur = await conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND NOT granted AND classid = %s AND objid = ANY(%s) AND objsubid = 2",
                        (KEY_SPACE, objids),
                    )
                    row = await cur.fetchone()
                    if row is not None and row[0] >= count:
                        return

    async def release(self) -> None:
        await self.conn.rollback()


async def _outcome(pair: Nodes) -> dict[str, tuple[str, list[str]]]:
    """Each appointment's key -> (its patient, the patients whose number its pending
    reminders go to)."""
    db = pair.b.clinical_db
    cipher = db.cipher
    by_index = {cipher.keyed_digest("appointment", "ehr", k): k for k in ("X", "Y", "Z")}
    by_mrn = {cipher.keyed_digest("mrn", "ehr", "HOSP", m): p for p, m in MRN.items()}
    by_contact = {cipher.blind_index(e): p for p, e in E164.items()}
    rows = await db.all(
        "SELECT a.ext_index, p.mrn_index, a.id FROM appointments a"
        " JOIN patients p ON p.id = a.patient_id"
    )
    out = {}
    for ext, mrn, appt_id in rows:
        reminders = await db.all(
            "SELECT contact_idx FROM clinical_notices WHERE appointment_id = ?"
            " AND state = 'pending' AND kind = 'reminder'",
            (appt_id,),
        )
        to = sorted(by_contact[bytes(r[0])] for r in reminders)
        out[by_index[bytes(ext)]] = (by_mrn[bytes(mrn)], to)
    return out


async def _acks(*sends: asyncio.Task[list[bytes]]) -> list[str]:
    done = await asyncio.wait_for(asyncio.gather(*sends), 20)
    return [msa(ack)[0] for [ack] in done]


async def test_a_move_to_another_patient_locks_both_and_ends_as_if_serial(
    nodes: Nodes,  # noqa: F811
    holder: Holder | None,
    clock: FakeClock,
) -> None:
    staff = await nodes.staff(nodes.a)
    await nodes.a.reminder_rules.create(staff, RuleSpec("day before", "-2h", "reminder"))
    feed = Feed(clock)
    setup = [feed.siu("S12", "X", "A"), feed.siu("S12", "Z", "B")]
    assert [msa(a)[0] for a in await nodes.send(nodes.a, *setup)] == ["AA", "AA"]
    assert await _outcome(nodes) == {"X": ("A", ["A"]), "Z": ("B", ["B"])}

    # X moves from A to B on node A while a booking for A comes to node B.
    move, booking = feed.siu("S14", "X", "B"), feed.siu("S12", "Y", "A")
    if holder is not None:
        await holder.hold("A")
    moving = asyncio.create_task(nodes.send(nodes.a, move))
    if holder is not None:
        await holder.waiting(1, "A")  # the move waits for A's key, though it names only B
        assert not moving.done()
    booked = asyncio.create_task(nodes.send(nodes.b, booking))
    if holder is not None:
        await holder.waiting(2, "A")
        await holder.release()
    assert await _acks(moving, booked) == ["AA", "AA"]
    assert await _outcome(nodes) == {
        "X": ("B", ["B"]),
        "Y": ("A", ["A"]),
        "Z": ("B", ["B"]),
    }

    # X back from B to A against Y from A to B, each on its node, under one hold of
    # both patients: each move needs both patients' keys; neither deadlocks.
    back, over = feed.siu("S14", "X", "A"), feed.siu("S14", "Y", "B")
    if holder is not None:
        await holder.hold("A", "B")
    sends = [
        asyncio.create_task(nodes.send(nodes.a, back)),
        asyncio.create_task(nodes.send(nodes.b, over)),
    ]
    if holder is not None:
        await holder.waiting(2, "A", "B")
        await holder.release()
    assert await _acks(*sends) == ["AA", "AA"]
    assert await _outcome(nodes) == {
        "X": ("A", ["A"]),
        "Y": ("B", ["B"]),
        "Z": ("B", ["B"]),
    }
    log = await nodes.log(nodes.a)
    assert sorted(m.state for m in log) == ["mapped"] * 6
