"""`smsgw store migrate` carries campaigns and surveys under way (issue 18 point 6): a
gateway with a campaign half sent and a survey session open moves to a cluster node;
there the campaign finishes, sending only to the recipients SQLite had not reached,
and the next answer to the survey advances the session where it was."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.campaigns.model import CampaignState
from gateway.cli import main
from gateway.config import from_mapping
from gateway.surveys.usecase import Target
from tests.campaign_rows import numbers
from tests.conftest import LOOPBACK_TEST
from tests.pg.migrate_source import init
from tests.pg.test_campaigns_cluster import STAFF, _group_of, _pass, _started
from tests.pg.test_consent_cluster import CAPS
from tests.survey_rows import ADMIN, WHO, make_survey
from tests.test_consent_inbound import SHORT_CODE


def _config(data: Path, dsn: str | None = None) -> Any:
    raw: dict[str, Any] = {
        "data_dir": str(data),
        "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
        "http": {"shutdown_grace": 1.0},
        "consent": CAPS,
        "source": str(data / "smsgw.toml"),
    }
    if dsn is not None:  # a fake clock never renews the lease: long enough here
        raw["cluster"] = {"enabled": True, "node_id": "gw1", "conninfo": dsn, "lease_seconds": 600}
    return from_mapping(raw)


def _migrate(conf: Path, dsn: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["store", "migrate", "--config", str(conf), "--to", dsn, "--node-id", "gw1"])
    return status, out.getvalue()


async def _campaign_messages(gw: Gateway, campaign_id: str) -> list[tuple[bytes, str]]:
    assert gw.cluster is not None
    async with gw.cluster.queue.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT to_index, state FROM messages WHERE campaign_id = %s", (campaign_id,)
        )
        return [(bytes(r[0]), r[1]) for r in await cur.fetchall()]


async def _session(gw: Gateway, session_id: str) -> tuple[str, int, list[int]]:
    assert gw.cluster is not None
    async with gw.cluster.queue.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT state, question FROM survey_sessions WHERE id = %s", (session_id,)
        )
        state, question = await cur.fetchone() or ("", -1)
        cur = await conn.execute(
            "SELECT seq FROM survey_answers WHERE session_id = %s ORDER BY seq", (session_id,)
        )
        return state, question, [int(r[0]) for r in await cur.fetchall()]


async def test_a_campaign_half_sent_and_an_open_survey_go_on_after_the_move(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    source = await asyncio.to_thread(init, tmp_path / "one")  # `smsgw init` runs its own loop
    one = await Gateway.open(_config(source.data_dir), clock)
    await one.start(dispatch=False)
    try:
        members = numbers(5)
        campaign = await _started(one, await _group_of(one, "Ward 3", members))
        first = await _pass(one, campaign, 2)  # two of five handled, their messages queued
        assert len(first.prepared) == 2
        survey = await make_survey(one)
        sent = await one.surveys.send(ADMIN, survey, Target(to=WHO))
        assert sent.session_id is not None
        await one.sink.inbound("main", InboundSms(WHO, "1", SHORT_CODE))  # question 1 next
    finally:
        await one.stop()
    status, printed = await asyncio.to_thread(_migrate, source.conf, pg_dsn)
    assert status == 0, printed
    assert "campaign_recipients: 3 still to send (after the cursors)" in printed
    assert "MISMATCH" not in printed and "campaigns.content_ct: 1 of 1 sampled" in printed

    shutil.copytree(source.data_dir, tmp_path / "gw1")  # the same keyring
    node = await Gateway.open(_config(tmp_path / "gw1", pg_dsn), clock)
    await node.start(dispatch=False)
    try:
        before = await _campaign_messages(node, campaign)
        assert len(before) == 2  # SQLite's two, still waiting in the shared queue
        clock.advance(60.0)
        rest = await _pass(node, campaign, 10)
        assert len(rest.prepared) == 3
        after = await _campaign_messages(node, campaign)
        idxs = {idx for idx, _ in after}
        assert len(after) == 5 and idxs == {node.store.blind_index(n) for n in members}
        assert (await node.campaigns.get(STAFF, campaign)).state is CampaignState.FINISHED

        assert (await _session(node, sent.session_id))[:2] == ("open", 1)
        await node.sink.inbound("main", InboundSms(WHO, "7", SHORT_CODE))  # the scale's
        state, question, seqs = await _session(node, sent.session_id)
        assert (state, question) == ("open", 2)
        assert len(seqs) == 2 and seqs[1] > seqs[0]  # numbered after the copied answer
    finally:
        await node.stop()
