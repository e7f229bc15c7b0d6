"""A fenced node unbinds its SMPP sessions before a peer binds in their place (issue 18,
bind caps across nodes), with real `smsgw run` nodes, PostgreSQL and the SMSC simulator.

Two nodes, two links each, on one account the carrier caps at three sessions
(`max_binds = 3`; the simulator answers a fourth bind ESME_RALYBND and keeps a session
lost without unbind counting for a minute, as a carrier does until its own timers drop
it). One node holds two slots, the other one. The holder of two loses PostgreSQL (its
own cut proxy) and fences itself: both its sessions are unbound at the simulator before
its peer's second link binds in the place of one; on heal it joins under a new
incarnation and binds the slot still free. Throughout, the simulator never counts more
than three sessions and refuses no bind. No sleeps: the test waits on the simulator's
session log and the daemons' log lines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.pg.cut_proxy import CutProxy
from tests.pg.node_proc import Node, init_data, node_config, stop_all

CAP = 3  # the carrier's session cap, max_binds of the route
LEASE = {"lease": 4.0, "margin": 1.5, "heartbeat": 0.3}
GRACE = 0.5  # bind_grace_seconds: the lease margin is the fenced node's budget to unbind
WAIT = 30.0  # an upper bound on waiting for an event, never an expected duration


def _open(smsc: SmscSimulator, node: str) -> int:
    """Sessions of `node` bound at the simulator now."""
    opened = {r.connection for r in smsc.session_log if r.event == "bound"}
    ended = {r.connection for r in smsc.session_log if r.event != "bound"}
    return len({c for c in opened - ended if _node_of(smsc, c) == node})


def _node_of(smsc: SmscSimulator, connection: int) -> str:
    return next(r.system_type for r in smsc.session_log if r.connection == connection)


@pytest.mark.timeout(120)
async def test_a_fenced_node_unbinds_before_its_peer_binds_in_its_place_and_rebinds_after_heal(
    tmp_path: Path, pg_dsn: str
) -> None:
    smsc = SmscSimulator(
        SimulatorConfig(system_id="smsgw", password="pw", max_sessions=CAP, lost_session_hold=60.0)
    )
    await smsc.start()
    names = ["gw1", "gw2"]
    port = int(conninfo_to_dict(pg_dsn)["port"])  # type: ignore[arg-type]
    proxies = {name: CutProxy(port) for name in names}
    nodes: list[Node] = []
    try:
        for proxy in proxies.values():
            await proxy.start()
        await init_data(tmp_path, names)
        confs = {
            name: node_config(
                tmp_path / name,
                name,
                make_conninfo(pg_dsn, port=proxies[name].port, connect_timeout=2),
                ("127.0.0.1", smsc.port),
                route_extra=(
                    f"binds = 2\nmax_binds = {CAP}\n"  # node_config names the node in system_type
                    f"bind_grace_seconds = {GRACE}\n"
                ),
                **LEASE,
            )
            for name in names
        }
        started = await asyncio.gather(
            *(Node.start(name, *confs[name]) for name in names), return_exceptions=True
        )
        nodes = [n for n in started if isinstance(n, Node)]
        for failure in (e for e in started if isinstance(e, BaseException)):
            raise failure
        await asyncio.wait_for(smsc.wait_until(lambda: smsc.binds == CAP), WAIT)
        victim = next(n for n in nodes if _open(smsc, n.name) == 2)
        peer = next(n for n in nodes if n is not victim)
        await peer.wait_line('"bind_slot_busy"', WAIT)  # its second link waits for a slot

        proxies[victim.name].cut()
        cut_at = len(smsc.session_log)
        await victim.wait_line('"node_fenced"', WAIT)
        await asyncio.wait_for(smsc.wait_until(lambda: _open(smsc, peer.name) == 2), WAIT)
        after_cut = smsc.session_log[cut_at:]
        ended = [r for r in after_cut if r.event != "bound"]
        rebind = next(r for r in after_cut if r.event == "bound")
        assert [(r.event, _node_of(smsc, r.connection)) for r in ended[:2]] == [
            ("unbound", victim.name),
            ("unbound", victim.name),
        ]
        assert _node_of(smsc, rebind.connection) == peer.name
        assert max(r.at for r in ended[:2]) < rebind.at
        assert _open(smsc, victim.name) == 0

        healed_at = len(victim.lines)
        proxies[victim.name].heal()
        await asyncio.wait_for(smsc.wait_until(lambda: _open(smsc, victim.name) == 1), WAIT)
        await victim.wait_line('"bind_slot_busy"', WAIT, start=healed_at)
        assert any('"node_registered"' in line for line in victim.lines[healed_at:])
        assert smsc.peak_sessions == CAP, smsc.peak_sessions
        assert smsc.already_bound == 0, "a bind was refused for the cap"
    finally:
        await stop_all(nodes)
        for proxy in proxies.values():
            await proxy.stop()
        await smsc.aclose()
