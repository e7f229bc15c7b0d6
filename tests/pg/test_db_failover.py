"""S8 (issue 18): the PostgreSQL primary dies under load and its synchronous standby
is promoted; the nodes carry on against the new primary.

Two `smsgw run` nodes with a conninfo naming both servers and
`target_session_attrs=read-write` take single sends (each with an Idempotency-Key, which
a sender replays after an error, as a hospital system would). The primary's postmaster
is killed with SIGKILL and the standby promoted at once. Pass: every message a node
answered 202 for (before, during or after) is in the new primary and reaches the
carrier (0 lost: a 202 came after the standby had the commit); both nodes accept and
send again after the promotion; each node's LISTEN is back, on the new primary; every
acknowledged message ends `sent` or `delivered` (an outcome whose write was lost in the
outage is written again, not left `sending` under a live lease). The
time from the promotion to the first submit of a message accepted after it is printed
(a figure, not asserted). A PostgreSQL of its own (the session's would be killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.pg.node_proc import Node, init_data, node_config, stop_all
from tests.pg_server import SKIP_REASON, PgServer, find_bindir

BEFORE_KILL = 40
TOTAL = 160
SENDERS = 4
STANDBY = "standby1"
# A long lease: the adoption poll (once a lease) cannot be what sends the messages whose
# claims failed in the outage; the LISTEN connection coming back wakes the adoption.
LEASE = {"lease": 30.0, "margin": 5.0, "heartbeat": 0.5}


@pytest.fixture
def pair() -> Iterator[tuple[PgServer, PgServer, str]]:
    """A primary, its synchronous standby and the conninfo (both hosts) of a database."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(SKIP_REASON)
    primary = PgServer(bindir)
    standby: PgServer | None = None
    try:
        primary.start()
        primary.synchronous(STANDBY)
        standby = PgServer.standby_of(primary, STANDBY)
        name = primary.create_database().rsplit("dbname=", 1)[1]  # waits for the standby
        assert primary.sync_state(STANDBY) == "sync"
        conninfo = (
            f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} user=postgres"
            f" dbname={name} target_session_attrs=read-write connect_timeout=3"
        )
        yield primary, standby, conninfo
    finally:
        primary.stop()
        if standby is not None:
            standby.stop()


class _Load:
    def __init__(self, http: aiohttp.ClientSession, nodes: list[Node], token: str) -> None:
        self.http, self.nodes = http, nodes
        self.auth = {"Authorization": f"Bearer {token}"}
        self.acked: dict[str, tuple[str, str, float]] = {}  # body -> (id, node, when)
        self.grew = asyncio.Condition()
        self.errors = 0
        self._n = itertools.count()

    async def sender(self) -> None:
        while len(self.acked) < TOTAL:
            n = next(self._n)
            body = f"s8 message {n}"
            for attempt in itertools.count():
                node = self.nodes[(n + attempt) % len(self.nodes)]
                try:
                    async with self.http.post(
                        f"{node.url}/api/v1/messages",
                        json={"to": f"+1202555{n % 10000:04d}", "body": body},
                        headers={**self.auth, "Idempotency-Key": f"s8-{n}"},
                    ) as r:
                        if r.status == 202:
                            mid = (await r.json())["id"]
                            break
                except aiohttp.ClientError:
                    pass
                self.errors += 1
                assert self.errors < 5000, "the nodes never came back"
            async with self.grew:
                self.acked[body] = (mid, node.name, time.monotonic())
                self.grew.notify_all()

    async def wait_for(self, count: int) -> None:
        async with self.grew:
            await asyncio.wait_for(self.grew.wait_for(lambda: len(self.acked) >= count), 90)


async def _listening(dsn: str, names: list[str]) -> set[str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE query ILIKE 'LISTEN %%'"
                " AND application_name = ANY(%s)",
                ([f"smsgw-{n}" for n in names],),
            )
        ).fetchall()
    return {r[0].removeprefix("smsgw-") for r in rows}


@pytest.mark.timeout(240)
async def test_primary_killed_standby_promoted_nothing_accepted_is_lost(
    tmp_path: Path, pair: tuple[PgServer, PgServer, str]
) -> None:
    primary, standby, conninfo = pair
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.2))
    await smsc.start()
    names = ["gw1", "gw2"]
    token = await init_data(tmp_path, names)
    nodes: list[Node] = []
    try:
        confs = [
            node_config(tmp_path / n, n, conninfo, ("127.0.0.1", smsc.port), **LEASE) for n in names
        ]
        nodes += await asyncio.gather(
            *(Node.start(n, c, u) for n, (c, u) in zip(names, confs, strict=True))
        )
        async with aiohttp.ClientSession() as http:
            load = _Load(http, nodes, token)
            senders = [asyncio.create_task(load.sender()) for _ in range(SENDERS)]
            await load.wait_for(BEFORE_KILL)
            primary.kill_postmaster()
            await asyncio.to_thread(standby.promote)
            promoted = time.monotonic()
            first_after: list[float] = []

            def resumed() -> bool:  # a submit of a message acknowledged after the promotion
                if not first_after:
                    late = {b for b, (_, _, at) in load.acked.items() if at > promoted}
                    if any(m.text in late for m in smsc.submitted):
                        first_after.append(time.monotonic())
                return bool(first_after)

            watch = asyncio.create_task(asyncio.wait_for(smsc.wait_until(resumed), 20))
            await asyncio.gather(*senders)
            await watch
            acked = dict(load.acked)
            after = {body for body, (_, _, at) in acked.items() if at > promoted}
            assert {node for body, (_, node, _) in acked.items() if body in after} == set(names)
            first_202 = min(at for body, (_, _, at) in acked.items() if body in after)
            print(
                f"S8: after the promotion, first 202 {first_202 - promoted:.2f} s, first submit"
                f" of a message accepted after it {first_after[0] - promoted:.2f} s;"
                f" {load.errors} errors answered meanwhile"
            )
            try:  # 0 accepted lost: the carrier has every acknowledged message, within a lease
                await asyncio.wait_for(
                    smsc.wait_until(lambda: {m.text for m in smsc.submitted} >= acked.keys()), 20
                )
            except TimeoutError:
                await _report_missing(conninfo, primary, standby, smsc, acked, promoted)
                raise
        new_dsn = conninfo.replace("host=127.0.0.1,127.0.0.1", "host=127.0.0.1").replace(
            f"port={primary.port},{standby.port}", f"port={standby.port}"
        )
        ids = [mid for mid, _, _ in acked.values()]
        async with await psycopg.AsyncConnection.connect(new_dsn, autocommit=True) as conn:
            found = await (
                await conn.execute("SELECT count(*) FROM messages WHERE id = ANY(%s)", (ids,))
            ).fetchone()
            assert found is not None and found[0] == len(acked)
            # What the carrier answered during the outage is written once the database
            # is back (the nodes retry the write), not left `sending` for a lease or more.
            states: dict[str, int] = {}
            for _ in range(20):
                states = dict(
                    await (
                        await conn.execute(
                            "SELECT state, count(*) FROM messages WHERE id = ANY(%s)"
                            " GROUP BY state",
                            (ids,),
                        )
                    ).fetchall()
                )
                if "sending" not in states:
                    break
                seen = smsc.receipts_sent
                with contextlib.suppress(TimeoutError):  # looked at again after a receipt
                    await asyncio.wait_for(
                        smsc.wait_until(lambda seen=seen: smsc.receipts_sent > seen), 1
                    )
            print(f"S8: states of the acknowledged messages {states}")
            if "sending" in states:  # what held them, for the failure's report
                for q in (
                    "SELECT id, owner_node, owner_incarnation, claim_epoch, claimed_at FROM"
                    " messages WHERE state = 'sending'",
                    "SELECT * FROM nodes",
                    "SELECT message_id, node_id, incarnation, claim_epoch FROM late_outcomes",
                ):
                    print(q, await (await conn.execute(q)).fetchall())
            assert set(states) <= {"sent", "delivered"}, states
        assert await _listening(new_dsn, names) == set(names)
    finally:
        for node in nodes:  # shown by pytest when the test failed
            print(node.name, "".join(x for x in node.lines if '"info"' not in x))
        await stop_all(nodes)
        await smsc.aclose()


async def _report_missing(
    conninfo: str,
    primary: Any,
    standby: Any,
    smsc: SmscSimulator,
    acked: dict[str, tuple[str, str, float]],
    promoted: float,
) -> None:
    """For a failure's report: the acknowledged messages the carrier never got, with
    when they were answered (against the promotion) and their rows on the new primary."""
    seen = {m.text for m in smsc.submitted}
    missing = {body: v for body, v in acked.items() if body not in seen}
    dsn = conninfo.replace("host=127.0.0.1,127.0.0.1", "host=127.0.0.1").replace(
        f"port={primary.port},{standby.port}", f"port={standby.port}"
    )
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _body, (mid, node, at) in missing.items():
            row = await (
                await conn.execute(
                    "SELECT state, owner_node, owner_incarnation, held_by, attempts FROM"
                    " messages WHERE id = %s",
                    (mid,),
                )
            ).fetchone()
            print(f"S8 missing: {mid} answered by {node} {at - promoted:+.2f} s: {row}")
    # Was it committed on the old primary (and so acknowledged without its standby)?
    await asyncio.to_thread(primary._launch)  # crash recovery, on a port no node knows
    dbname = conninfo.rsplit("dbname=", 1)[1].split()[0]
    async with await psycopg.AsyncConnection.connect(primary.dsn(dbname), autocommit=True) as conn:
        for _body, (mid, _node, _at) in missing.items():
            row = await (
                await conn.execute("SELECT state, created_at FROM messages WHERE id = %s", (mid,))
            ).fetchone()
            print(f"S8 missing on the old primary: {mid}: {row}")
    server_log = (primary.root / "server.log").read_text(errors="replace")
    for line in server_log.splitlines():
        if "synchronous" in line or "WARNING" in line:
            print("S8 old primary:", line)
