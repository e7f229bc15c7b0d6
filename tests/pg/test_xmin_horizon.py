"""S9 scaled (issue 18): a transaction holding the xmin horizon (a REPEATABLE READ report
left open) while a `smsgw run` node takes load. Its claims keep working, and
`/api/v1/healthz` shows how far back the horizon is held (`xmin_age_seconds`,
`xmin_age_xids`), falling back once the transaction ends. The 10-minute soak is
`bench/cluster.py --soak 600`, not a test. No sleeps: each round posts one message and
waits for the carrier to get it before reading healthz again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.pg.node_proc import Node, init_data, node_config


class _Rounds:
    def __init__(self, http: aiohttp.ClientSession, node: Node, token: str, smsc: SmscSimulator):
        self.http, self.node, self.smsc = http, node, smsc
        self.auth = {"Authorization": f"Bearer {token}"}
        self._n = itertools.count()

    async def one(self) -> dict[str, Any]:
        """Send one message, wait until the carrier has it, then read the node's health."""
        body = f"s9 {next(self._n)}"
        async with self.http.post(
            f"{self.node.url}/api/v1/messages",
            json={"to": "+12025550142", "body": body},
            headers=self.auth,
        ) as r:
            assert r.status == 202, await r.text()
        await asyncio.wait_for(
            self.smsc.wait_until(lambda: any(m.text == body for m in self.smsc.submitted)), 30
        )
        async with self.http.get(f"{self.node.url}/api/v1/healthz") as r:
            health: dict[str, Any] = (await r.json())["node"]
        return health

    async def until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for _ in range(200):
            health = await self.one()
            if done(health):
                return health
        raise AssertionError(f"healthz never showed it: {health}")


@pytest.mark.timeout(120)
async def test_healthz_shows_a_held_xmin_horizon_while_claims_go_on(
    tmp_path: Path, pg_dsn: str
) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.05))
    await smsc.start()
    token = await init_data(tmp_path, ["gw1"])
    conf, url = node_config(tmp_path / "gw1", "gw1", pg_dsn, ("127.0.0.1", smsc.port))
    node = await Node.start("gw1", conf, url)
    try:
        async with aiohttp.ClientSession() as http:
            rounds = _Rounds(http, node, token, smsc)
            calm = await rounds.one()
            assert "xmin_age_seconds" in calm and "xmin_age_xids" in calm
            async with await psycopg.AsyncConnection.connect(pg_dsn) as report:
                await report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                await report.execute("SELECT count(*) FROM messages")  # the snapshot is taken
                # Every round commits an accept, a claim and an outcome: the held
                # horizon falls further behind, and every message still goes out.
                held = await rounds.until(
                    lambda h: (h["xmin_age_xids"] or 0) >= 30 and (h["xmin_age_seconds"] or 0) > 0
                )
                await report.rollback()
            freed = await rounds.until(
                lambda h: h["xmin_age_xids"] is not None and h["xmin_age_xids"] < 10
            )
            assert (
                freed["xmin_age_seconds"] < held["xmin_age_seconds"]
                or freed["xmin_age_seconds"] < 1
            )
            async with http.get(f"{url}/api/v1/metrics", headers=rounds.auth) as r:
                text = await r.text()
            assert 'smsgw_cluster_xmin_age_seconds{node="gw1"}' in text
            # S9's "claim p99 while held" reads off this histogram (bench/cluster.py --soak).
            assert 'smsgw_cluster_claim_seconds_bucket{le="0.1",node="gw1"}' in text
    finally:
        await node.stop()
        await smsc.aclose()
