"""S3 (issue 18): three `smsgw run` nodes on one PostgreSQL queue and one simulated
SMSC; one is killed (SIGKILL) under load.

Pass criteria: every message a node answered 202 for reaches the carrier (0 lost);
bodies the carrier got twice are only messages the dead node had in flight (a `sending`
event under its node id, then the recovery's requeue) and every one is flagged
`possible_duplicate`; the survivors keep accepting and sending after the kill, and
together they take the whole of the carrier account's cap the three shared (a 1 s window
after the kill at >= 90 % of it: waited for, not timed, as the time is a figure of
`make bench-cluster`), with no 1 s window at the carrier above the cap and its burst.

The nodes share one keyring: node 1's data directory (`smsgw init`) is copied to the
others before any starts (docs/ops/cluster.md). Leases are short (8 s) to keep it quick.
No sleeps: the test waits on the simulator's submits and on the daemons' log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from collections import Counter
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp import ClientSession

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.conftest import smsgw_process
from tests.http_daemon import TOKEN_RE
from tests.pg.carrier_windows import LoopStalls, max_in_window
from tests.pg.node_proc import Node
from tests.ports import free_port

BEFORE_KILL = 90  # messages acknowledged before node 3 is killed
TOTAL = 300  # messages acknowledged in all
SENDERS = 6
# The carrier account the three share: CAP submits a second, BURST at once (no 1 s window
# above CAP + BURST). A burst of 2, as S4's, would leave the survivors short of the cap on
# a loaded machine: a bucket saves at most BURST tokens, so claims coming less often than
# every BURST / CAP seconds lose the rest (bench/README.md, S3 recovery).
CAP, BURST = 40, 10
BACKLOG = 50  # posted to each survivor after the kill: the cap stays busy for seconds


def _config(data: Path, node: str, dsn: str, smsc_port: int) -> tuple[Path, str]:
    port = free_port()
    conf = data / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{data}"\n\n[http]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = 1.0\n\n'
        '[log]\nformat = "json"\nlevel = "info"\n\n'
        '[consent]\nenabled = false\ndefault_purpose = "informational"\n\n'
        f'[cluster]\nenabled = true\nnode_id = "{node}"\nconninfo = "{dsn}"\n'
        "lease_seconds = 8\nmargin_seconds = 2\nheartbeat_seconds = 0.5\n\n"
        f'[[cluster.accounts]]\nname = "acme"\nrate = {CAP}\nburst = {BURST}\n\n'
        f'[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "127.0.0.1"\nport = {smsc_port}\n'
        f'system_id = "smsgw"\npassword = "pw"\nsystem_type = "{node}"\naccount = "acme"\n'
        "reconnect_min = 0.05\nreconnect_max = 0.2\n"
    )
    return conf, f"http://127.0.0.1:{port}"


async def _settled(dsn: str, ids: list[str], smsc: SmscSimulator) -> None:
    """Return once none of `ids` is `queued` or `sending`, looked at again after each
    submit the carrier sees (or each second, for a sweep that resends nothing)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM messages WHERE id = ANY(%s)"
                " AND state IN ('queued', 'sending')",
                (ids,),
            )
            row = await cur.fetchone()
            if row is not None and row[0] == 0:
                return
            seen = len(smsc.submitted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    smsc.wait_until(lambda seen=seen: len(smsc.submitted) > seen), 1
                )


class _Load:
    """Senders spreading accepts over the live nodes; what each 202 acknowledged."""

    def __init__(self, http: ClientSession, nodes: list[Node], token: str) -> None:
        self.http, self.nodes = http, nodes
        self.auth = {"Authorization": f"Bearer {token}"}
        self.acked: dict[str, tuple[str, str]] = {}  # body -> (message id, node)
        self.grew = asyncio.Condition()
        self._n = itertools.count()
        self.refused: list[tuple[int, str]] = []  # (status, answer) of the non-202s

    async def sender(self) -> None:
        while len(self.acked) < TOTAL and not self.failing():
            n = next(self._n)
            body = f"s3 message {n}"
            for node in itertools.islice(itertools.cycle(self.nodes), n % 3, n % 3 + 3):
                if not node.alive:
                    continue
                try:
                    # A retry after a lost answer carries the same key, as a hospital
                    # system's would: a node that committed before dying answers through
                    # any survivor, instead of a second message with the same body.
                    async with self.http.post(
                        f"{node.url}/api/v1/messages",
                        json={"to": f"+1202555{n % 10000:04d}", "body": body},
                        headers={**self.auth, "Idempotency-Key": f"s3-{n}"},
                    ) as r:
                        if r.status != 202:
                            async with self.grew:
                                self.refused.append((r.status, await r.text()))
                                self.grew.notify_all()
                            continue
                        mid = (await r.json())["id"]
                except aiohttp.ClientError:
                    continue  # the node died under this request: nothing was acknowledged
                async with self.grew:
                    self.acked[body] = (mid, node.name)
                    self.grew.notify_all()
                break

    async def wait_for(self, count: int) -> None:
        async with self.grew:
            await asyncio.wait_for(
                self.grew.wait_for(lambda: len(self.acked) >= count or self.failing()), 90
            )
        assert not self.failing(), self.refused[:3]

    def failing(self) -> bool:
        return len(self.refused) > 20


async def _backlog(http: ClientSession, node: Node, token: str) -> dict[str, tuple[str, str]]:
    """BACKLOG messages accepted by `node` in one batch: body -> (message id, node)."""
    items = [
        {"to": f"+1303555{i:04d}", "body": f"s3 backlog {node.name} {i}"} for i in range(BACKLOG)
    ]
    async with http.post(
        f"{node.url}/api/v1/messages/batch",
        json={"messages": items},
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status == 202, await r.text()
        results = (await r.json())["results"]
    return {item["body"]: (got["id"], node.name) for item, got in zip(items, results, strict=True)}


@pytest.mark.timeout(240)
async def test_three_nodes_one_killed_under_load_lose_nothing(tmp_path: Path, pg_dsn: str) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.2))
    await smsc.start()
    first = tmp_path / "gw1"
    init = await smsgw_process("init", "--data-dir", str(first))
    out, err = await asyncio.wait_for(init.communicate(), 120)
    assert init.returncode == 0, err.decode()
    (token,) = TOKEN_RE.findall(out.decode())
    names = ["gw1", "gw2", "gw3"]
    for name in names[1:]:  # one keyring and one token table for the three
        shutil.copytree(first, tmp_path / name)
    nodes: list[Node] = []
    stalls = LoopStalls()  # the simulator stamps submits in this process's loop
    try:
        stalls.start()
        confs = [_config(tmp_path / name, name, pg_dsn, smsc.port) for name in names]
        started = await asyncio.gather(
            *(Node.start(name, conf, url) for name, (conf, url) in zip(names, confs, strict=True)),
            return_exceptions=True,
        )
        nodes += [n for n in started if isinstance(n, Node)]
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        async with ClientSession() as http:
            async with http.get(f"{nodes[0].url}/api/v1/healthz") as r:
                health = await r.json()
            # "live" unless this busy machine stalled a renewal for 6 s (then it rejoins).
            assert health["node"]["node_id"] == "gw1" and health["node"]["lease"] in (
                "live",
                "fenced",
            )
            assert isinstance(health["node"]["incarnation"], int)
            auth = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{nodes[1].url}/api/v1/metrics", headers=auth) as r:
                assert 'smsgw_cluster_lease_live{node="gw2"}' in await r.text()
            load = _Load(http, nodes, token)
            senders = [asyncio.create_task(load.sender()) for _ in range(SENDERS)]
            await load.wait_for(BEFORE_KILL)
            # Any node reads any message, with its history.
            mid, accepted_by = next(iter(load.acked.values()))
            other = next(n for n in nodes if n.name != accepted_by)
            async with http.get(f"{other.url}/api/v1/messages/{mid}", headers=auth) as r:
                assert r.status == 200, await r.text()
                record = await r.json()
            assert record["id"] == mid and record["events"][0]["state"] == "queued"
            dead = nodes[2]
            dead.kill()
            killed = asyncio.get_running_loop().time()
            killed_at = len(load.acked)
            backlog: dict[str, tuple[str, str]] = {}
            for node in nodes[:2]:
                backlog |= await _backlog(http, node, token)
            await asyncio.gather(*senders)
        assert len(load.acked) >= TOTAL and killed_at < TOTAL
        acked = {**load.acked, **backlog}

        def survivors_at_cap() -> bool:  # the dead node's last bytes may land after the kill
            log = [r for r in smsc.submit_log if r.system_type != dead.name]
            return bool(log) and max_in_window(log, killed, log[-1].at) >= 0.9 * CAP

        # Generous: the survivors' share of the cap grows once the dead node's last
        # refusal is an ACTIVE_WINDOW old; a loaded machine may take much longer.
        try:
            await asyncio.wait_for(smsc.wait_until(survivors_at_cap), 60)
        except TimeoutError as e:
            per_second = Counter(
                (int(r.at - killed), r.system_type) for r in smsc.submit_log if r.at >= killed
            )
            short = f"survivors short of the cap: {sorted(per_second.items())}"
            raise AssertionError(short) from e

        def delivered() -> bool:
            return {m.text for m in smsc.submitted} >= acked.keys()

        await asyncio.wait_for(smsc.wait_until(delivered), 90)  # 0 accepted lost
        # The dead node's in-flight may have reached the carrier before the kill: its rows
        # stay `sending` until a survivor's sweep requeues them after the lease.
        await asyncio.wait_for(_settled(pg_dsn, [mid for mid, _ in acked.values()], smsc), 90)
        for node in nodes:  # the survivors drain: every answer they had is recorded
            await node.stop()
        counts = Counter(m.text for m in smsc.submitted)
        twice = {body for body, n in counts.items() if n > 1}
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            flagged = {
                r[0]
                for r in await (
                    await conn.execute("SELECT id FROM messages WHERE possible_duplicate")
                ).fetchall()
            }
            held_by_dead = {
                r[0]
                for r in await (
                    await conn.execute(
                        "SELECT DISTINCT s.message_id FROM message_events s"
                        " JOIN message_events q ON q.message_id = s.message_id"
                        " AND q.seq > s.seq AND q.state = 'queued'"
                        " AND q.error_code = 'cluster:lease_expired'"
                        " WHERE s.state = 'sending' AND s.node_id = 'gw3'"
                    )
                ).fetchall()
            }
            states = dict(
                await (
                    await conn.execute(
                        "SELECT id, state FROM messages WHERE id = ANY(%s)",
                        ([mid for mid, _ in acked.values()],),
                    )
                ).fetchall()
            )
        duplicated = {acked[body][0] for body in twice if body in acked}
        assert duplicated <= held_by_dead, "a duplicate outside the dead node's in-flight"
        assert duplicated <= flagged, "a duplicate not flagged possible_duplicate"
        assert held_by_dead <= flagged
        assert set(states.values()) <= {"sent", "delivered"}, Counter(states.values())
        # The survivors kept accepting after the kill, and all of it went out (above).
        after_kill = {node for _, node in list(load.acked.values())[killed_at:]}
        assert {"gw1", "gw2"} <= after_kill, after_kill
        by_node = Counter(node for _, node in load.acked.values())
        assert by_node["gw1"] and by_node["gw2"] and by_node["gw3"]
        assert not [line for n in nodes[:2] for line in n.lines if "Traceback" in line]
        log = list(smsc.submit_log)
        # One message over, at most: the jitter between a token taken and its submit.
        # Counted on the submits this loop read on time (`LoopStalls.readable`).
        best = max_in_window(stalls.readable(log), log[0].at, log[-1].at)
        assert best <= CAP + BURST + 1, (best, stalls.stalls)
    finally:
        stalls.stop()
        for node in nodes:  # all signalled first: a failed wait below leaves none running
            node.terminate()
        for node in nodes:
            await node.stop()
        await smsc.aclose()
