"""HL7 write-back handed over when its lane's leader is killed (issue 18 on issue 13).

Two `smsgw run` nodes on one PostgreSQL, each with the MLLP listener of an inbound
interface whose replies are written back to python-hl7's MLLP server as the EHR
(`tests/hl7_peers.py`). Three bookings go in over MLLP; their patients reply "C <code>"
from the carrier (the SMSC simulator), which queues three SIU^S14 write-backs. The EHR
takes the first and never answers it; while the lane's leader waits for that ACK and
the other two are pending, the leader is killed (SIGKILL). The survivor takes the lane
while the dead node's lease still runs (the dead session's advisory lock went with it:
nothing waits for the lease to lapse), and every write-back reaches the EHR and is
acked; the one the dead leader had on the wire goes again with its control id and is
flagged `possible_duplicate`, and no other is sent twice. No sleeps: the test waits on
the nodes' log lines, the EHR's messages and the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psycopg
import pytest

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.hl7 import framing
from tests.appointment_rig import siu
from tests.hl7_peers import Ehr
from tests.hl7_rig import Peer, msa
from tests.pg.node_proc import Node, init_data, node_config, stop_all
from tests.ports import free_port

pytestmark = [pytest.mark.timeout(150), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WAIT = 30.0
PATIENTS = ("+12025550141", "+12025550142", "+12025550143")
TAKEN = '"event": "hl7_lane_taken"'


def _hl7(listen: int, ehr: int) -> str:
    return (
        '\n[[hl7.interfaces]]\nname = "ehr"\n'
        f'listen = "127.0.0.1:{listen}"\nprocessing_ids = ["P", "T"]\nwriteback = "ehr-out"\n'
        '\n[[hl7.interfaces]]\nname = "ehr-out"\ndirection = "out"\n'
        f'host = "127.0.0.1"\nport = {ehr}\nack_timeout = 60.0\nbackoff_initial = 0.2\n'
    )


async def _first_to_take(nodes: list[Node]) -> Node:
    waits = {asyncio.ensure_future(n.wait_line(TAKEN, WAIT)): n for n in nodes}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[done.pop()]


async def _rows(dsn: str) -> list[tuple[str, str, int]]:
    """(control id, state, possible_duplicate) of every write-back."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT control_id, state, possible_duplicate FROM hl7_outbound ORDER BY created_at"
        )
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


async def _lease_live(dsn: str, node: str) -> bool:
    """Whether `node`'s last lease still runs, on the database's clock."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT lease_until > clock_timestamp() FROM nodes WHERE node_id = %s"
            " ORDER BY incarnation DESC LIMIT 1",
            (node,),
        )
        row = await cur.fetchone()
        return row is not None and bool(row[0])


async def _until(dsn: str, ehr: Ehr, done: object) -> list[tuple[str, str, int]]:
    """The rows once `done(rows)` holds, read again after each message the EHR gets
    (or each second: a row's state changes after its ACK)."""
    assert ehr.changed is not None and callable(done)
    async with asyncio.timeout(WAIT):
        while not done(rows := await _rows(dsn)):
            ehr.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ehr.changed.wait(), 1.0)
    return rows


async def test_the_survivor_takes_the_lane_and_sends_every_write_back_once_but_the_cut_off(
    tmp_path: Path, pg_dsn: str
) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw"))
    await smsc.start()
    ehr = Ehr([None], changed=asyncio.Event())  # the first write-back is never answered
    ehr_port = await ehr.start()
    token = await init_data(tmp_path, ["gw1", "gw2"])
    nodes: list[Node] = []
    try:
        ports, starts = {}, []
        for name in ("gw1", "gw2"):
            conf, url = node_config(tmp_path / name, name, pg_dsn, ("127.0.0.1", smsc.port))
            ports[name] = free_port()
            conf.write_text(conf.read_text() + _hl7(ports[name], ehr_port))
            starts.append(Node.start(name, conf, url))
        nodes += await asyncio.gather(*starts)
        leader = await _first_to_take(nodes)
        (survivor,) = [n for n in nodes if n is not leader]

        now = time.time()
        peer = await Peer.open(ports[survivor.name])
        try:
            bookings = [
                siu("S12", key=f"K{i}", sent=now, start=now + 86400, mrn=f"M{i}",
                    phone=f"^PRN^CP^^1^202^555014{i + 1}")
                for i in range(len(PATIENTS))
            ]  # fmt: skip
            await peer.send(b"".join(framing.encode(m.encode()) for m in bookings))
            assert [msa(a)[0] for a in await peer.frames(len(bookings))] == ["AA"] * 3
        finally:
            await peer.aclose()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{survivor.url}/api/v1/appointments",
                headers={"Authorization": f"Bearer {token}"},
            ) as r,
        ):
            assert r.status == 200, await r.text()
            items = (await r.json())["items"]
        codes = {a["number_masked"][-2:]: a["short_code"] for a in items}  # +120•••••41
        for number in PATIENTS:
            smsc.inject_mo(number, "12345", f"C {codes[number[-2:]]}")

        # The leader has the first on the wire, waiting for its ACK; the rest wait.
        rows = await _until(pg_dsn, ehr, lambda rows: len(rows) == 3 and len(ehr.received) == 1)
        assert [state for _, state, _ in rows] == ["pending"] * 3
        leader.kill()
        await survivor.wait_line(TAKEN, WAIT)
        # Within the dead node's lease: its session's lock went with it, no lapse waited.
        assert await _lease_live(pg_dsn, leader.name)

        rows = await _until(pg_dsn, ehr, lambda rows: all(s == "acked" for _, s, _ in rows))
        sent = Counter(m.split("\r")[0].split("|")[9] for m in ehr.received)
        cut_off = ehr.received[0].split("\r")[0].split("|")[9]
        assert set(sent) == {cid for cid, _, _ in rows}  # every write-back delivered
        assert sent[cut_off] == 2  # the dead leader's, again with its control id ...
        flagged = {cid for cid, _, dup in rows if dup}
        assert flagged == {cut_off}  # ... flagged; none other sent twice
        assert all(n == 1 for cid, n in sent.items() if cid != cut_off)
        await survivor.wait_line('"event": "hl7_outbound_cut_off"', WAIT)
        assert "".join(leader.lines + survivor.lines).count("202555014") == 0  # no number
    finally:
        await stop_all([n for n in nodes if n.alive])
        for node in nodes:
            if not node.alive:
                await node.proc.wait()
        await ehr.aclose()
        await smsc.aclose()
