"""Issue 18: HL7 write-back on a cluster (cluster migration 23).

Two gateways on one PostgreSQL and python-hl7's MLLP server as the EHR
(`tests/hl7_peers.py`): a reply confirmed on B queues one `hl7_outbound` row in the
reply's own transaction, seen from both nodes. A leads the interface's lane (its
advisory lock) and sends it; B's lane sends nothing while A leads. Refused once by
the EHR (AE) the message is parked, re-sent from B, sent again by A and marked with
its ACK once. Once A is stopped, B takes the lane and delivers the next write-back;
retention blanks their texts. The lanes are driven by `run_due()` (dispatch off), so
every step is one round.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.clinical.profile import API_SOURCE, InterfaceProfile
from gateway.config import from_mapping
from gateway.hl7.service import OutboundRow
from tests.conftest import CANARY_NUMBER, LOOPBACK_TEST
from tests.hl7_peers import Ehr
from tests.pg.test_appointments_cluster import APPOINTMENTS, CONSENT, Nodes
from tests.pg.two_nodes import in_process_nodes
from tests.test_consent_inbound import SHORT_CODE
from tests.test_consent_policy import caller

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # python-hl7's server

OUT = "ehr-out"


def _config(data: Path, name: str, dsn: str, ehr_port: int) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "consent": CONSENT,
            "appointments": APPOINTMENTS,
            "source": str(data / "smsgw.toml"),
            "hl7": {
                "interfaces": [
                    {
                        "name": OUT,
                        "direction": "out",
                        "host": "127.0.0.1",
                        "port": ehr_port,
                        "ack_timeout": 5.0,
                    }
                ]
            },
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@pytest.fixture
async def ehr() -> AsyncIterator[tuple[Ehr, int]]:
    peer = Ehr()
    port = await peer.start()
    try:
        yield peer, port
    finally:
        await peer.aclose()


@pytest.fixture
async def pair(
    tmp_path: Path, clock: FakeClock, migrated_dsn: str, ehr: tuple[Ehr, int]
) -> AsyncIterator[Nodes]:
    port = ehr[1]
    async with in_process_nodes(
        tmp_path, clock, lambda data, name: _config(data, name, migrated_dsn, port)
    ) as opened:
        for gw in opened:  # the API's appointments name this write-back (as a feed would)
            gw.clinical_profiles[API_SOURCE] = InterfaceProfile(API_SOURCE, writeback=OUT)
        yield Nodes("postgresql", opened[0], opened[1])


async def _reply(pair: Nodes, gw: Gateway, text: str) -> None:
    await gw.sink.inbound("main", InboundSms(CANARY_NUMBER, text, SHORT_CODE))


def _control_id(message: str) -> str:
    return message.split("\r")[0].split("|")[9]


async def _rows(gw: Gateway) -> list[OutboundRow]:
    return sorted(await gw.hl7.outbound(), key=lambda r: r.control_id)


async def test_one_leader_delivers_each_write_back_once_and_a_survivor_takes_the_lane(
    pair: Nodes, ehr: tuple[Ehr, int], clock: FakeClock
) -> None:
    peer = ehr[0]
    a, b = pair.a, pair.b
    appt = await pair.book(a, "ehr-1")
    staff = await pair.staff(a)
    code = (await a.usecases.appointments.get(staff, appt)).view.record.short_code

    await _reply(pair, b, f"C {code}")
    [queued] = await a.hl7.outbound()  # queued on B, with the reply, seen from A
    assert (queued.interface, queued.kind, queued.state) == (OUT, "appointment_reply", "pending")

    lane_a, lane_b = a.hl7.lanes[OUT], b.hl7.lanes[OUT]
    assert await lane_a.leads()  # A takes the lane
    assert await lane_b.run_due() == 0  # B does not lead it: sends nothing
    assert peer.received == [] and [r.state for r in await b.hl7.outbound()] == ["pending"]
    peer.script = ["AE"]  # the EHR refuses it once: parked for staff
    assert await lane_a.run_due() == 1
    [parked] = await b.hl7.outbound("parked")
    admin = await caller(b, "admin")
    assert await b.hl7.resend(parked.id, admin)  # re-sent from B, sent by A, the leader
    assert await lane_b.run_due() == 0
    assert await lane_a.run_due() == 1
    assert await lane_a.run_due() == 0  # marked with its ACK: not sent again
    assert [_control_id(m) for m in peer.received] == [queued.control_id] * 2
    [acked] = await b.hl7.outbound()
    assert (acked.state, acked.ack_code, acked.attempts) == ("acked", "AA", 1)
    assert not await b.hl7.resend(acked.id, admin)  # only a parked one goes again

    await a.stop()  # the leader goes: its lock with it
    await _reply(pair, b, f"R {code}")
    assert await lane_b.run_due() == 1  # the survivor takes the lane
    rows = await _rows(b)
    assert [r.state for r in rows] == ["acked", "acked"]
    [summary] = await b.hl7.interfaces()  # the site's counters
    counts = summary.counters
    assert (summary.direction, counts["acked"], counts["pending"]) == ("out", 2, 0)
    assert len(peer.received) == 3
    assert {_control_id(m) for m in peer.received} == {r.control_id for r in rows}
    assert "Patient asks to reschedule" in peer.received[2]
    assert CANARY_NUMBER.removeprefix("+") not in "".join(peer.received)

    clock.advance(91 * 86400.0)  # past `retention.body_days`: the texts go, rows stay
    outcome = await b.retention.run("console")
    assert outcome.removed["shared_hl7_writebacks"] == 2
    assert [r.state for r in await _rows(b)] == ["acked", "acked"]
