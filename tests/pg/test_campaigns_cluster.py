"""Issue 18: contact groups, audiences and campaigns shared by the nodes of a cluster.

Two gateways on one PostgreSQL, through the use cases every front end calls: a group
built on one node is the audience of a campaign started on the other; passes running
on both nodes at once message each recipient exactly once, and a node killed in the
middle of a pass leaves its recipients to the other; the policy blocks the opted-out
and the unconsented with their reasons; a pause on one node stops the other's next
pass and a cancel withdraws what is still waiting, whichever node queued it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.campaigns.model import CampaignSpec, CampaignState
from gateway.campaigns.runner import PassResult
from gateway.cluster.campaign_feed import CLAIM_RECIPIENTS, ClusterCampaignFeed
from gateway.cluster.lease import Pool
from gateway.contacts.audience import AudienceSpec
from gateway.contacts.csv_import import Options
from gateway.errors import ApiError
from gateway.templates.usecase import DraftRequest
from gateway.usecases import Caller
from gateway.usecases.consent import DecisionRequest
from tests.campaign_rows import numbers
from tests.pg.test_claims import plan_nodes
from tests.pg.test_consent_cluster import _cluster_config
from tests.pg.two_nodes import in_process_nodes
from tests.test_consent_inbound import SHORT_CODE

STAFF = Caller.for_panel_user("user:staff", reads_phi=True, acts=True)
TEXT = "Flu shots at the clinic this week."


@pytest.fixture
async def pair(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[list[Gateway]]:
    """Two nodes (dispatch off: the passes are called, nothing is sent)."""
    async with in_process_nodes(
        tmp_path, clock, lambda data, name: _cluster_config(data, name, pg_dsn)
    ) as opened:
        yield opened


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _group_of(
    gw: Gateway, name: str, members: Sequence[str], languages: Sequence[str] = ()
) -> str:
    """A group made on `gw` and its members imported there (the shared contacts), each
    with its language when `languages` are given."""
    group = await gw.contacts.create_group(STAFF, name, None)
    if members:
        rows = [",".join(r) for r in zip(members, languages, strict=True)] if languages else members
        head = "number,language" if languages else "number"
        csv = (head + "\n" + "\n".join(rows) + "\n").encode()
        report = await gw.contacts.imports.run(STAFF, _chunks(csv), Options(group=group.id))
        assert (report.created, report.failed) == (len(members), 0)
    return group.id


def _spec(group: str, purpose: str = "informational", **more: Any) -> CampaignSpec:
    return CampaignSpec("Flu drive", AudienceSpec(groups=[group]), purpose, text=TEXT, **more)


async def _started(gw: Gateway, group: str, purpose: str = "informational") -> str:
    campaign = await gw.campaigns.create(STAFF, _spec(group, purpose))
    assert (await gw.campaigns.start(STAFF, campaign.id)).state is CampaignState.RUNNING
    return campaign.id


async def _pass(gw: Gateway, campaign_id: str, limit: int) -> PassResult:
    campaign = await gw.campaigns.get(STAFF, campaign_id)
    return await gw.campaign_runner.run_pass(campaign, limit)


async def _rows(gw: Gateway, query: str, params: Sequence[Any] = ()) -> list[Any]:
    assert gw.cluster is not None
    async with gw.cluster.queue.pool.connection() as conn:
        return await (await conn.execute(query.encode(), params)).fetchall()


async def test_a_group_built_on_one_node_is_a_campaign_audience_on_the_other(
    pair: list[Gateway], clock: FakeClock
) -> None:
    """Marketing needs written consent: the opted-out (on B) and the unconsented are
    stored blocked with their reasons; the counts, replies and opt-outs too, read the
    same on either node."""
    a, b = pair
    written, opted_out, unconsented = numbers(2), numbers(1, 10)[0], numbers(1, 20)[0]
    group = await _group_of(a, "Ward 3", [*written, opted_out, unconsented])
    for number in written:
        await a.usecases.consent.record(
            STAFF, DecisionRequest(number, "opt_in", "api", "purpose:marketing", disclosure="Y")
        )
    await b.usecases.consent.record(STAFF, DecisionRequest(opted_out, "opt_out", "api"))
    clock.advance(1)  # the campaign's messages come after those decisions
    assert (await b.contacts.group(STAFF, group)).members == 4
    assert (await b.contacts.page(STAFF, AudienceSpec(groups=[group]))).total == 4

    # The preview and the start judge on the shared consent list too.
    alone = await _group_of(b, "Opted out", [])
    await b.contacts.add_members(STAFF, alone, [b.store.blind_index(opted_out).hex()])
    refused_start = await b.campaigns.create(STAFF, _spec(alone, "marketing"))
    with pytest.raises(ApiError, match="opted_out: 1") as none_allowed:
        await b.campaigns.start(STAFF, refused_start.id)
    assert none_allowed.value.code == "no_consenting_recipients"
    preview = await a.campaigns.preview(STAFF, _spec(group, "marketing"))
    assert (preview.judgement.audience_size, preview.judgement.allowed) == (4, 2)
    assert preview.judgement.blocked == {"opted_out": 1, "no_consent": 1}

    campaign_id = await _started(b, group, "marketing")
    result = await _pass(b, campaign_id, 10)
    assert dict(result.outcomes) == {
        "queued": 2,
        "blocked:opted_out": 1,
        "blocked:no_consent": 1,
    }
    assert result.state is CampaignState.FINISHED

    campaign = await a.campaigns.get(STAFF, campaign_id)
    assert (campaign.state, campaign.audience_size) == (CampaignState.FINISHED, 4)
    progress = await a.campaigns.progress(STAFF, campaign)
    assert (progress.handled, progress.campaign.queued) == (4, 2)
    assert progress.campaign.blocked == {"opted_out": 1, "no_consent": 1}

    # Replies and opt-outs after its messages, received and recorded on either node.
    clock.advance(1)
    await b.sink.inbound("main", InboundSms(written[0], "See you there", SHORT_CODE))
    await a.usecases.consent.record(STAFF, DecisionRequest(written[1], "opt_out", "api"))
    later = await b.campaigns.progress(STAFF, campaign)
    assert (later.campaign.replies, later.campaign.opt_outs) == (1, 1)


async def test_a_template_activated_on_one_node_is_rendered_by_both_nodes_passes(
    pair: list[Gateway],
) -> None:
    """Saved and activated on A, named by a campaign started on B, rendered by both
    nodes' passes: each recipient once, in its language (its fallback chain), English
    split between two variants by weight."""
    a, b = pair
    admin = replace(STAFF, may_edit_templates=True)
    flu = {"clinic": {"type": "provider", "max_length": 24}}
    english = (("a", "Flu shots at {clinic} this week.", 1), ("b", "{clinic}: flu shots now.", 1))
    await a.templates.save(
        admin, DraftRequest("en", "informational", flu, variants=english, name="flu")
    )
    spanish = DraftRequest("es", "informational", flu, body="Vacunas en {clinic}.", name="flu")
    await a.templates.save(admin, spanish)
    await a.templates.save(admin, replace(spanish, body="Vacuna antigua."))
    await a.templates.activate(admin, "flu", "es", 1)  # back to the first Spanish text

    members = numbers(12)
    languages = ["es", "en", ""] * 4  # no language: the site's (English)
    group = await _group_of(a, "Flu", members, languages)
    assert "flu" in (await b.campaigns.choices(STAFF))[1]
    spec = CampaignSpec("Flu", AudienceSpec(groups=[group]), "informational", template="flu")
    preview = await b.campaigns.preview(STAFF, spec)
    assert {t.variant for t in preview.texts.texts} == {"a", "b"}
    campaign = await b.campaigns.create(STAFF, spec)
    assert (await b.campaigns.start(STAFF, campaign.id)).state is CampaignState.RUNNING

    bodies: dict[str, list[str]] = {}
    while True:
        results = await asyncio.gather(*(_pass(gw, campaign.id, 2) for gw in (a, b)))
        for result in results:
            for prepared in result.prepared:
                bodies.setdefault(prepared.message.to, []).append(prepared.message.body)
        if not any(r.read for r in results):
            break
    assert sorted(bodies) == sorted(members) and all(len(b) == 1 for b in bodies.values())
    clinic = a.config.consent.brand
    for number, language in zip(members, languages, strict=True):
        [body] = bodies[number]
        if language.startswith("es"):
            assert body == f"Vacunas en {clinic}."
        else:
            assert body in (f"Flu shots at {clinic} this week.", f"{clinic}: flu shots now.")
    variants = await _rows(
        a,
        "SELECT variant, count(*) FROM messages WHERE campaign_id = %s GROUP BY variant"
        " ORDER BY variant",
        (campaign.id,),
    )
    by_variant = dict(variants)  # each English recipient on "a" or "b", by its hash
    assert by_variant.pop(None) == 4 and set(by_variant) <= {"a", "b"}
    assert sum(by_variant.values()) == 8


async def test_two_nodes_running_one_campaign_message_each_recipient_once(
    pair: list[Gateway], pg_dsn: str
) -> None:
    a, b = pair
    members = numbers(40)
    campaign_id = await _started(a, await _group_of(b, "Clinic", members))

    # A node killed in the middle of its pass: a claim held, then its connection gone.
    killed = await psycopg.AsyncConnection.connect(pg_dsn)
    await killed.execute("BEGIN")
    held = await (
        await killed.execute(
            "SELECT contact_idx FROM campaign_recipients WHERE campaign_id = %s"
            " AND outcome IS NULL ORDER BY contact_idx LIMIT 8 FOR UPDATE SKIP LOCKED",
            (campaign_id,),
        )
    ).fetchall()
    assert len(held) == 8

    while True:  # both nodes' passes at once, until neither finds a recipient
        results = await asyncio.gather(*(_pass(gw, campaign_id, 3) for gw in (a, b, a, b)))
        if not any(r.read for r in results):
            break
    assert (await a.campaigns.get(STAFF, campaign_id)).state is CampaignState.RUNNING
    await _rows(a, "SELECT pg_terminate_backend(%s)", (killed.info.backend_pid,))
    await killed.close()
    assert a.cluster is not None
    async with a.cluster.queue.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '20s'")  # until its backend has gone
        await conn.execute(
            "SELECT 1 FROM campaign_recipients WHERE campaign_id = %s AND contact_idx = ANY(%s)"
            " FOR UPDATE",
            (campaign_id, [r[0] for r in held]),
        )
    last = await _pass(b, campaign_id, 20)
    assert (last.read, last.state) == (8, CampaignState.FINISHED)

    sent = await _rows(
        a,
        "SELECT count(*), count(DISTINCT to_index) FROM messages WHERE campaign_id = %s",
        (campaign_id,),
    )
    assert sent == [(40, 40)]
    by_node = await _rows(
        a,
        "SELECT node_id, count(*) FROM campaign_recipients WHERE campaign_id = %s"
        " AND outcome = 'queued' GROUP BY node_id ORDER BY node_id",
        (campaign_id,),
    )
    assert [node for node, _ in by_node] == ["gw1", "gw2"] and sum(n for _, n in by_node) == 40


async def test_a_pause_on_one_node_stops_the_next_pass_on_the_other(
    pair: list[Gateway],
) -> None:
    a, b = pair
    campaign_id = await _started(a, await _group_of(a, "Ward 5", numbers(10)))
    assert len((await _pass(b, campaign_id, 3)).prepared) == 3
    assert a.cluster is not None
    queue = a.cluster.queue
    feed = ClusterCampaignFeed(
        queue.pool, queue.cipher, a.usecases.messages, "gw1", a.templates.renderer, horizon=1e5
    )
    (live,) = await feed.live()  # each of the two live nodes feeds it at half its rate
    assert live.rate == (await a.campaigns.get(STAFF, campaign_id)).rate / 2

    await a.campaigns.act(STAFF, campaign_id, "pause")
    paused = await _pass(b, campaign_id, 3)
    assert (paused.state, paused.prepared) == (CampaignState.PAUSED, [])

    await b.campaigns.act(STAFF, campaign_id, "resume")
    assert len((await _pass(a, campaign_id, 3)).prepared) == 3

    acted = await b.campaigns.act(STAFF, campaign_id, "cancel")  # withdraws A's and B's
    assert acted.changed and acted.campaign.state is CampaignState.CANCELLED
    states = await _rows(
        a, "SELECT state, count(*) FROM messages WHERE campaign_id = %s GROUP BY 1", (campaign_id,)
    )
    assert states == [("cancelled", 6)]
    assert (await _pass(a, campaign_id, 3)).state is CampaignState.CANCELLED


async def test_a_campaign_scheduled_on_one_node_is_started_by_the_others_runner(
    pair: list[Gateway], clock: FakeClock
) -> None:
    """Its audience becomes its recipients when it starts running: contacts joining
    the group until then are in it."""
    a, b = pair
    group = await _group_of(a, "Ward 7", numbers(3))
    spec = _spec(group, starts_at=clock.time() + 60)
    campaign = await a.campaigns.create(STAFF, spec)
    assert (await a.campaigns.start(STAFF, campaign.id)).state is CampaignState.SCHEDULED
    csv = b"number\n+12025550100\n"
    await b.contacts.imports.run(STAFF, _chunks(csv), Options(group=group))
    await b.campaign_runner.step()  # not yet: it still waits for its start
    assert (await a.campaigns.get(STAFF, campaign.id)).state is CampaignState.SCHEDULED
    clock.advance(60)
    await b.campaign_runner.step()  # running; a new campaign's first message at once
    started = await a.campaigns.get(STAFF, campaign.id)
    assert (started.state, started.audience_size) == (CampaignState.RUNNING, 4)
    assert len((await _pass(a, campaign.id, 10)).prepared) == 3
    assert (await a.campaigns.get(STAFF, campaign.id)).state is CampaignState.FINISHED


async def test_a_campaign_paused_while_scheduled_and_resumed_after_its_start_gets_its_audience(
    pair: list[Gateway], clock: FakeClock
) -> None:
    """Paused before its start, resumed after it: it runs to its whole audience (the
    move from `paused` to `running` is its first start)."""
    a, b = pair
    group = await _group_of(a, "Ward 8", numbers(3))
    campaign = await a.campaigns.create(STAFF, _spec(group, starts_at=clock.time() + 60))
    assert (await a.campaigns.start(STAFF, campaign.id)).state is CampaignState.SCHEDULED
    assert (
        await b.campaigns.act(STAFF, campaign.id, "pause")
    ).campaign.state is CampaignState.PAUSED
    clock.advance(120)
    resumed = (await b.campaigns.act(STAFF, campaign.id, "resume")).campaign
    assert (resumed.state, resumed.audience_size) == (CampaignState.RUNNING, 3)
    assert len((await _pass(a, campaign.id, 10)).prepared) == 3
    assert (await a.campaigns.get(STAFF, campaign.id)).state is CampaignState.FINISHED


async def test_a_pass_claims_through_the_open_recipients_index(pool: Pool) -> None:
    """50,000 recipients of five campaigns, most handled: a pass's claim reads the
    few open ones of its campaign in index order, no sort, no scan of the table."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO campaign_recipients (campaign_id, contact_idx, outcome)"
            " SELECT 'c' || (i % 5), int4send(i),"
            " CASE WHEN i % 10 = 0 THEN NULL ELSE 'queued' END"
            " FROM generate_series(1, 50000) i"
        )
        await conn.execute("ANALYZE campaign_recipients")
        cur = await conn.execute("EXPLAIN (FORMAT JSON) " + CLAIM_RECIPIENTS, ("c3", 200))
        row = await cur.fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    found = plan_nodes(plan[0]["Plan"])
    scans = [n for n in found if n.get("Relation Name") == "campaign_recipients"]
    assert [n.get("Index Name") for n in scans] == ["campaign_recipients_open"], scans
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort", "Seq Scan") for n in found)
