"""The campaign runner: feeds an audience through the accept path at the campaign's rate,
splits template variants by weight, resumes after a crash or restart without a second
message to anyone, and never queues after a pause or cancel has answered. Progress is
read from indexed queries."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.campaigns.model import CampaignSpec, CampaignState, Split
from gateway.campaigns.runner import CampaignRunner
from gateway.config import ConfigError
from gateway.contacts.audience import AudienceSpec
from gateway.errors import ApiError
from gateway.usecases.caller import Caller
from tests.campaign_rows import add_contacts, campaign_messages, save_template
from tests.conftest import (
    TEST_CONSENT,
    GatewayFactory,
    make_config,
    record_decision,
    untriggered,
)

USER = Caller(actor="user:u1", token_id=None, sees_all=True, may_send=True, may_read_phi=False)
GROUP = AudienceSpec(groups=["g1"])
FAST = {"max_rate": 1000.0, "default_rate": 10.0}


def _spec(**fields: Any) -> CampaignSpec:
    base: dict[str, Any] = {
        "name": "Flu drive",
        "audience": GROUP,
        "purpose": "informational",
        "text": "Flu shots at the clinic this week.",
    }
    return CampaignSpec(**{**base, **fields})


async def _started(gw: Gateway, **fields: Any) -> str:
    campaign = await gw.campaigns.create(USER, _spec(**fields))
    await gw.campaigns.start(USER, campaign.id)
    return campaign.id


async def _count(gw: Gateway, campaign_id: str) -> int:
    return len(await campaign_messages(gw, campaign_id))


async def _drain(gw: Gateway, clock: FakeClock) -> None:
    """Steps until a fast campaign's bucket has paid for everyone (a new bucket holds
    one message; a second later, a second's worth)."""
    await gw.campaign_runner.step()
    clock.advance(1.0)
    await gw.campaign_runner.step()


def _runner(gw: Gateway, clock: FakeClock, cpu_time: Callable[[], float]) -> CampaignRunner:
    """The gateway's runner with the writer's CPU clock given (pass sizes by CPU)."""
    renderer = gw.templates.renderer
    return CampaignRunner(
        gw.store, gw.usecases.messages, renderer, clock, horizon=86400.0, cpu_time=cpu_time
    )


async def _state(gw: Gateway, campaign_id: str) -> CampaignState:
    return (await gw.campaigns.get(USER, campaign_id)).state


async def test_the_rate_paces_the_audience_into_the_queue(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    await add_contacts(gw, 23)
    cid = await _started(gw, rate=5.0)
    runner = gw.campaign_runner
    delay = await runner.step()
    assert await _count(gw, cid) == 1  # one message's worth in the bucket at the start
    assert delay == pytest.approx(0.2)  # the next one's token
    counts = []
    for _ in range(3):
        clock.advance(1.0)
        await runner.step()
        counts.append(await _count(gw, cid))
    assert counts == [6, 11, 16]  # 5 a second, never a burst beyond one second's worth
    clock.advance(10.0)
    await runner.step()
    assert await _count(gw, cid) == 21  # the bucket holds at most one second's worth
    clock.advance(1.0)
    await runner.step()
    assert await _count(gw, cid) == 23
    assert await _state(gw, cid) is CampaignState.FINISHED
    rows = await campaign_messages(gw, cid)
    assert {r["purpose"] for r in rows} == {"informational"}
    assert {r["priority"] for r in rows} == {3}  # bulk by default


async def test_a_fast_campaign_is_fed_in_passes_of_a_tenth_of_a_second(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """At 700/s a pass every step (a few messages each) cost a commit and a step each:
    after the first message the runner waits until its bucket holds a tenth of a
    second's worth, and keeps the rate (make bench-campaign, issue 15 point 10)."""
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 400)
    cid = await _started(gw, rate=1000.0)
    runner = _runner(gw, clock, lambda: 0.0)  # passes that cost nothing: the rate sizes them
    assert await runner.step() == pytest.approx(0.1)  # a new campaign: one at once
    assert await _count(gw, cid) == 1
    clock.advance(0.02)
    assert await runner.step() == pytest.approx(0.08)  # 20 in the bucket: not a pass yet
    assert await _count(gw, cid) == 1
    counts = []
    for _ in range(3):
        clock.advance(0.1)
        await runner.step()
        counts.append(await _count(gw, cid))
    passes = [b - a for a, b in zip([1, *counts], counts, strict=False)]
    assert min(passes) >= 99 and 320 <= counts[-1] <= 321  # the rate holds (float rounding)


async def test_a_new_campaign_sends_its_first_message_at_once_past_blocked_recipients(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """A new campaign's first message goes at once even when the first recipients in
    the audience's order are blocked: they cost no tokens, and the campaign is still
    new until one message went (the panel's progress shows it queued)."""
    gw = await open_gateway(campaigns=FAST)
    numbers = await add_contacts(gw, 10)
    for number in numbers[1:]:
        await record_decision(gw, number, "opt_out", "all")
    cid = await _started(gw, rate=1000.0)
    await _runner(gw, clock, lambda: 0.0).step()
    rows = await campaign_messages(gw, cid)
    assert sum(r["state"] != "blocked" for r in rows) == 1


async def test_a_pass_holds_what_costs_the_writer_about_five_ms(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """A clinical accept or claim may wait behind one pass on the writer: recipients
    that cost 400 µs of its CPU each (as measured around the passes) go 12 to a pass,
    in as many passes as the rate pays for."""
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 400)
    cid = await _started(gw, rate=1000.0)
    cpu = [0.0]  # the writer's CPU clock, moved by the accepts below
    sizes: list[int] = []
    real = gw.usecases.messages.accept_many_within

    def costly(conn: sqlite3.Connection, caller: Caller, requests: Any) -> Any:
        sizes.append(len(requests))
        cpu[0] += 0.0004 * len(requests)
        return real(conn, caller, requests)

    gw.usecases.messages.accept_many_within = costly  # type: ignore[method-assign]
    runner = _runner(gw, clock, lambda: cpu[0])
    for _ in range(3):
        await runner.step()
        clock.advance(0.101)
    # one at once, then a tenth of a second's worth that took 40 ms of the writer's CPU,
    # then what costs 5 ms: 12 to a pass, the rate kept by more passes
    assert sizes[:2] == [1, 101] and sizes[2:] == [12] * 8, sizes
    assert await _count(gw, cid) == 198


async def test_passes_grow_back_once_a_costly_one_is_past(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """One pass that took 4 ms a recipient (a machine stealing the CPU) makes the next
    ones a recipient each; those are measured too, so cheap ones (100 µs) bring the
    passes back to their size instead of leaving the campaign in passes of one."""
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 800)
    cid = await _started(gw, rate=1000.0)
    cpu, each = [0.0], [0.004]
    sizes: list[int] = []
    real = gw.usecases.messages.accept_many_within

    def costly(conn: sqlite3.Connection, caller: Caller, requests: Any) -> Any:
        sizes.append(len(requests))
        cpu[0] += each[0] * len(requests)
        return real(conn, caller, requests)

    gw.usecases.messages.accept_many_within = costly  # type: ignore[method-assign]
    runner = _runner(gw, clock, lambda: cpu[0])
    await runner.step()
    clock.advance(0.101)
    await runner.step()
    assert sizes == [1, 101]  # 404 ms of the writer's CPU: the next ones go one by one
    each[0] = 0.0001
    for _ in range(3):
        clock.advance(0.1)
        await runner.step()
    assert sizes[2] == 1 and 45 <= sizes[-1] <= 50, sizes  # toward 5 ms at 100 µs each
    # the rate kept meanwhile: 1 + 1000/s for 0.401 s, less at most a pass still to go
    assert await _count(gw, cid) == sum(sizes) >= 402 - 50


async def test_the_split_of_variants_holds_within_bounds(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 1200)
    await save_template(gw)  # A weighs 3, B 1
    own = await _started(gw, text=None, template="flu", rate=1000.0)
    even = await _started(
        gw, text=None, template="flu", rate=1000.0, split=(Split("A", 1), Split("B", 1))
    )
    for _ in range(4):
        clock.advance(1.0)
        await gw.campaign_runner.step()
    for cid, low, high in ((own, 820, 980), (even, 520, 680)):
        variants = [r["variant"] for r in await campaign_messages(gw, cid)]
        assert len(variants) == 1200
        assert low <= variants.count("A") <= high, variants.count("A")
        progress = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, cid))
        assert set(progress.variants) == {"A", "B"}
        assert progress.variants["A"].queued == variants.count("A")
    stored = await gw.store.records.message(str((await campaign_messages(gw, own))[0]["id"]))
    assert stored is not None and stored.body.open().startswith(("Flu shots", "Get your flu"))


async def test_a_crashed_pass_commits_nothing_and_a_restart_sends_each_once(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 30)
    cid = await _started(gw, rate=1000.0)
    campaign = await gw.campaigns.get(USER, cid)
    real = gw.usecases.messages.accept_many_within

    def dying(conn: sqlite3.Connection, caller: Caller, requests: Any) -> Any:
        real(conn, caller, requests[:11])  # 11 messages written, then the process dies
        raise RuntimeError("power cut")

    gw.usecases.messages.accept_many_within = dying  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await gw.campaign_runner.run_pass(campaign, 20)
    assert await _count(gw, cid) == 0  # the whole pass rolled back, cursor included
    gw.usecases.messages.accept_many_within = real  # type: ignore[method-assign]
    assert len((await gw.campaign_runner.run_pass(campaign, 10)).prepared) == 10
    await gw.stop()

    again = await open_gateway(campaigns=FAST)  # the same store, a new process
    runner = again.campaign_runner
    assert isinstance(runner, CampaignRunner)
    # Even a cursor lost would not send twice: each recipient's row is keyed.
    await again.store.writer.run(
        lambda c: c.execute("UPDATE campaigns SET cursor = x'' WHERE id = ?", (cid,))
    )
    result = await runner.run_pass(campaign, 1000)
    assert result.outcomes["handled_before"] == 10 and len(result.prepared) == 20
    rows = await campaign_messages(again, cid)
    assert len(rows) == 30 and len({r["to_index"] for r in rows}) == 30
    assert await _state(again, cid) is CampaignState.FINISHED


async def test_pause_and_cancel_are_atomic_against_the_runner(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 600)
    cid = await _started(gw, rate=1000.0)
    campaign = await gw.campaigns.get(USER, cid)
    runner = gw.campaign_runner
    # Passes and a pause race on the writer: whichever commits first wins, and once the
    # pause has answered no pass queues anything.
    passes = [asyncio.ensure_future(runner.run_pass(campaign, 50)) for _ in range(4)]
    paused = await gw.campaigns.act(USER, cid, "pause")
    assert paused.changed and paused.campaign.state is CampaignState.PAUSED
    after_pause = await _count(gw, cid)
    await asyncio.gather(*passes)
    assert await _count(gw, cid) == after_pause
    clock.advance(5.0)
    await runner.step()
    assert await _count(gw, cid) == after_pause
    assert after_pause % 50 == 0 and after_pause < 600

    # Parallel requests: one resume changes it, the rest find it done.
    results = await asyncio.gather(*(gw.campaigns.act(USER, cid, "resume") for _ in range(6)))
    assert sorted(r.changed for r in results) == [False] * 5 + [True]
    await runner.run_pass(campaign, 30)
    assert await _count(gw, cid) == after_pause + 30
    results = await asyncio.gather(*(gw.campaigns.act(USER, cid, "cancel") for _ in range(6)))
    assert sorted(r.changed for r in results) == [False] * 5 + [True]
    rows = await campaign_messages(gw, cid)
    assert {r["state"] for r in rows} == {"cancelled"}  # none had gone to a carrier yet
    await gw.scheduler.run_until_idle()
    assert {r["state"] for r in await campaign_messages(gw, cid)} == {"cancelled"}
    assert (await runner.run_pass(campaign, 30)).prepared == []
    with pytest.raises(ApiError) as e:
        await gw.campaigns.act(USER, cid, "resume")
    assert e.value.status == 409 and e.value.code == "invalid_state"
    audit = await gw.store.reader.all(
        "SELECT action FROM audit_log WHERE target_id = ? ORDER BY seq", (cid,)
    )
    assert [r[0] for r in audit] == [
        "campaign_created",
        "campaign_started",
        "campaign_paused",
        "campaign_resumed",
        "campaign_cancelled",
    ]


MARKETING = {
    **TEST_CONSENT,
    "purposes": {**TEST_CONSENT["purposes"], "marketing": {"window": "", "caps": []}},
}


async def test_blocked_recipients_are_recorded_with_their_reason(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(campaigns=FAST)
    numbers = await add_contacts(gw, 5, language="es")
    await add_contacts(gw, 1, first=5)  # English: no version of the template for them
    await save_template(gw, variants=((None, "Vacunas contra la gripe esta semana.", 1),),
                        language="es")  # fmt: skip
    await record_decision(gw, numbers[1], "opt_out", "all")
    cid = await _started(gw, rate=1000.0, text=None, template="flu")
    await _drain(gw, clock)
    rows = await campaign_messages(gw, cid)
    assert sorted(str(r["state"]) for r in rows) == ["blocked"] + ["queued"] * 4
    progress = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, cid))
    total = progress.campaign
    assert total.blocked == {"opted_out": 1} and total.skipped == {"template_missing": 1}
    assert (total.queued, total.waiting, progress.handled) == (4, 4, 6)


async def test_no_consenting_recipient_refuses_the_start_naming_the_reasons(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=MARKETING)
    await add_contacts(gw, 3)
    campaign = await gw.campaigns.create(USER, _spec(purpose="marketing"))
    assert campaign.priority == "bulk"
    with pytest.raises(ApiError) as e:
        await gw.campaigns.start(USER, campaign.id)
    assert e.value.status == 422 and e.value.code == "no_consenting_recipients"
    assert "no_consent: 3" in e.value.message and "+1" not in e.value.message
    assert await _state(gw, campaign.id) is CampaignState.DRAFT
    assert await gw.store.reader.all("SELECT id FROM messages") == []


async def test_an_emergency_campaign_goes_critical_past_marketing_consent(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    consent = {**MARKETING, "purposes": {**MARKETING["purposes"]}}
    gw = await open_gateway(consent=consent, campaigns=FAST)
    numbers = await add_contacts(gw, 3)
    await record_decision(gw, numbers[0], "opt_out", "kind:marketing")
    cid = await _started(gw, purpose="emergency", text="Clinic closed today: flooding.")
    assert (await gw.campaigns.get(USER, cid)).priority == "critical"
    await _drain(gw, clock)
    rows = await campaign_messages(gw, cid)
    assert [(r["state"], r["priority"]) for r in rows] == [("queued", 0)] * 3


async def test_replies_and_opt_outs_after_the_message_count(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    from drivers.base import InboundSms

    gw = await open_gateway(campaigns=FAST)
    numbers = await add_contacts(gw, 4)
    await gw.sink.inbound("main", InboundSms(sender=numbers[3], body="before"))  # not a reply
    clock.advance(1.0)
    cid = await _started(gw, rate=1000.0)
    await _drain(gw, clock)
    await gw.scheduler.run_until_idle()
    clock.advance(1.0)
    await gw.sink.inbound("main", InboundSms(sender=numbers[0], body="yes please"))
    await gw.sink.inbound("main", InboundSms(sender=numbers[1], body="STOP"))
    progress = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, cid))
    # STOP is an opt-out, not a reply (as the analytics count it: issue 15's walkthrough)
    assert (progress.campaign.replies, progress.campaign.opt_outs) == (1, 1)
    assert progress.campaign.sent == 4


async def test_progress_reads_use_the_campaign_indexes(open_gateway: GatewayFactory) -> None:
    from gateway.campaigns import store as sql

    gw = await open_gateway()
    for query in (sql.STATES_SQL, sql.BLOCKED_SQL, sql.SKIPPED_SQL, sql.REPLIES_SQL,
                  sql.OPT_OUTS_SQL):  # fmt: skip
        args = ("c", 0.0) if "?2" in query else ("c",)
        plan = " ".join(
            str(r[3]) for r in await gw.store.reader.all("EXPLAIN QUERY PLAN " + query, args)
        )
        assert "SCAN messages" not in plan and "SCAN campaign_recipients" not in plan, plan
        assert "SCAN inbound" not in plan and "SCAN consent_ledger" not in plan, plan


def test_campaign_rates_are_checked_naming_the_key(tmp_path: Path) -> None:
    for section, key in (
        ({"default_rate": 60.0}, "campaigns.default_rate"),
        ({"max_rate": 0}, "campaigns.max_rate"),
        ({"max_rate": "fast"}, "campaigns.max_rate"),
    ):
        with pytest.raises(ConfigError) as e:
            make_config(tmp_path, campaigns=section)
        assert key in str(e.value)
    assert make_config(tmp_path).campaigns.max_rate == 50.0


async def test_the_demo_template_passes_the_lint_once_per_language(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    from gateway.campaigns import demo

    gw = await open_gateway(campaigns=FAST)
    assert await demo.seed(gw.templates) == 2
    assert await demo.seed(gw.templates) == 0  # a restart saves nothing again
    await add_contacts(gw, 4, language="es")
    cid = await _started(gw, text=None, template=demo.NAME, split=(Split("A", 1), Split("B", 1)))
    await _drain(gw, clock)
    rows = await campaign_messages(gw, cid)
    stored = await gw.store.records.message(str(rows[0]["id"]))
    assert stored is not None and "gripe" in stored.body.open()


async def test_a_scheduled_campaign_starts_at_its_time_and_ends_at_its_end(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    await add_contacts(gw, 50)
    now = clock.time()
    cid = await _started(gw, rate=2.0, starts_at=now + 60.0, ends_at=now + 63.0)
    assert await _state(gw, cid) is CampaignState.SCHEDULED
    assert await gw.campaign_runner.step() == 5.0  # at most MAX_SLEEP: wakes to look again
    assert await _count(gw, cid) == 0
    clock.advance(60.0)
    await gw.campaign_runner.step()
    assert await _state(gw, cid) is CampaignState.RUNNING and await _count(gw, cid) == 1
    clock.advance(2.0)
    await gw.campaign_runner.step()
    assert await _count(gw, cid) == 3
    rows = await gw.store.reader.all(
        "SELECT expires_at FROM messages WHERE campaign_id = ?", (cid,)
    )
    assert {r[0] for r in rows} == {now + 63.0}  # never sent after the campaign's end
    clock.advance(1.0)
    await gw.campaign_runner.step()
    assert await _state(gw, cid) is CampaignState.ENDED and await _count(gw, cid) == 3


async def test_an_erasure_removes_who_a_campaign_reached(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(campaigns=FAST)
    numbers = await add_contacts(gw, 3)
    cid = await _started(gw, rate=1000.0)
    await _drain(gw, clock)
    erased = await gw.erasures.erase(numbers[0], "test")
    assert erased.counts["campaign_recipients"] == 1
    left = await gw.store.reader.all(
        "SELECT contact_idx FROM campaign_recipients WHERE campaign_id = ?", (cid,)
    )
    assert gw.store.blind_index(numbers[0]) not in {bytes(r[0]) for r in left}
    assert len(left) == 2


async def test_a_pass_costs_few_statements_per_recipient(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """The runner feeds 100,000-recipient broadcasts on the writer thread that also
    claims and settles every send: per recipient a pass runs its own row and the
    message's rows, and no per-recipient savepoint, policy read, contact lookup or
    second write of the recipient's row (the writer's job is the pass's savepoint; the
    contacts and what the policy needs of them are read once per pass)."""
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 60)
    cid = await _started(gw, rate=1000.0)
    campaign = await gw.campaigns.get(USER, cid)
    statements: list[str] = []
    await gw.store.writer.run(lambda c: c.set_trace_callback(statements.append))
    result = await gw.campaign_runner.run_pass(campaign, 50)
    await gw.store.writer.run(lambda c: c.set_trace_callback(None))
    assert len(result.prepared) == 50
    writer = ("BEGIN", "COMMIT", "SAVEPOINT job", "RELEASE job", "SAVEPOINT bulk", "RELEASE bulk")
    mine = [s for s in untriggered(statements) if not s.startswith(writer)]  # the writer's own
    assert not any("SAVEPOINT" in s or "RELEASE" in s for s in mine), mine[:12]
    # per recipient: its row, the message, the message's campaign tag; per pass: the
    # policy's read of all the recipients
    per_recipient = (
        ("INSERT INTO campaign_recipients", 50),
        ("FROM consent_state", 1),
        ("INSERT INTO messages", 50),
        ("UPDATE messages SET campaign_id", 50),
        # the audience's next batch (its group's members joined to their contacts), then
        # their numbers at once
        ("JOIN contacts", 1),
        ("FROM contacts", 1),
        ("UPDATE campaign_recipients", 0),
    )
    for start, count in per_recipient:
        assert sum(start in s for s in mine) == count, (start, mine[:12])
    # per pass besides: the consent epoch's read (gateway/consent/state_cache.py)
    assert len(mine) <= 50 * 3 + 7, mine[:12]
    assert not any("SAVEPOINT recipient" in s for s in statements)


async def test_progress_polled_often_is_counted_at_most_once_a_second(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Counting reads every message of the campaign (tens of ms of the one core at
    100,000), and the panel and API clients poll it: a count is reused while fresh,
    and an action on the campaign forgets it (make bench-campaign, issue 15 point 10)."""
    from gateway.campaigns import progress_cache

    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 5)
    cid = await _started(gw, rate=1000.0)
    await _drain(gw, clock)
    campaign = await gw.campaigns.get(USER, cid)
    counted = await gw.campaigns.progress(USER, campaign)
    assert (counted.campaign.queued, counted.campaign.sent) == (5, 0)
    await gw.scheduler.run_until_idle()
    assert await gw.campaigns.progress(USER, campaign) == counted  # not counted again
    clock.advance(progress_cache.MAX_AGE)
    assert (await gw.campaigns.progress(USER, campaign)).campaign.sent == 5

    await add_contacts(gw, 5, group="g2", first=100)
    other = await _started(gw, rate=1000.0, audience=AudienceSpec(groups=["g2"]))
    before = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, other))
    await gw.campaign_runner.step()  # a new bucket holds one message
    await gw.campaigns.act(USER, other, "cancel")
    cancelled = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, other))
    assert (before.campaign.cancelled, cancelled.campaign.cancelled) == (0, 1)  # forgotten


async def test_a_campaign_that_finished_is_counted_again_at_once(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """The panel stops polling a finished campaign: the count it shows then is whole."""
    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 5)
    cid = await _started(gw, rate=1000.0)
    running = await gw.campaigns.get(USER, cid)
    assert (await gw.campaigns.progress(USER, running)).handled == 0
    await gw.campaign_runner.run_pass(running, 10)  # the clock stands still
    done = await gw.campaigns.get(USER, cid)
    assert done.state is CampaignState.FINISHED
    assert (await gw.campaigns.progress(USER, done)).handled == 5


async def test_a_pass_takes_the_contacts_numbers_as_stored_without_parsing_them(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Parsing each stored E.164 number again (phonenumbers) was over a quarter of the
    runner's CPU per recipient, on the core that accepts clinical messages. The message
    keeps the number and the contact's blind index; the policy reads the same index."""
    from gateway.intake import normalise_number

    gw = await open_gateway(campaigns=FAST)
    numbers = await add_contacts(gw, 20)
    await record_decision(gw, numbers[0], "opt_out", "all")
    cid = await _started(gw, rate=1000.0)
    campaign = await gw.campaigns.get(USER, cid)
    normalise_number.cache_clear()
    result = await gw.campaign_runner.run_pass(campaign, 50)
    assert normalise_number.cache_info().misses == 0
    assert result.outcomes == {"queued": 19, "blocked:opted_out": 1}
    made = {m.message.to: m.message.to_index for m in result.prepared}
    assert made == {n: gw.store.blind_index(n) for n in numbers}


async def test_a_stored_number_not_in_e164_is_parsed_as_any_other(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    import msgspec

    from gateway.intake import SendRequest

    gw = await open_gateway()
    stale = gw.store.blind_index("(202) 555-0100")  # not how the import stores a number
    request = SendRequest(to="(202) 555-0100", body="hi", purpose="informational")
    prepared = gw.intake.prepare(request, None, clock.time(), to_index=stale)
    assert prepared.message.to == "+12025550100"
    assert prepared.message.to_index == gw.store.blind_index("+12025550100")
    with pytest.raises(ApiError) as refused:
        gw.intake.prepare(
            msgspec.structs.replace(request, to="+1 0"), None, clock.time(), to_index=stale
        )
    assert refused.value.code == "invalid_number"


async def test_counting_replies_and_opt_outs_costs_as_the_replies_not_the_audience(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """They were found by probing the inbound messages and the ledger for each of the
    campaign's messages: at 100,000 a count took a quarter of a second of the core."""
    from drivers.base import InboundSms
    from gateway.campaigns import store as sql

    gw = await open_gateway(campaigns=FAST)
    few = await add_contacts(gw, 4, group="few")
    await add_contacts(gw, 400, group="many", first=1000)
    ids = [
        await _started(gw, rate=1000.0, audience=AudienceSpec(groups=[g])) for g in ("few", "many")
    ]
    campaigns = [await gw.campaigns.get(USER, cid) for cid in ids]
    for campaign in campaigns:
        await gw.campaign_runner.run_pass(campaign, 1000)
    await gw.scheduler.run_until_idle()
    clock.advance(1.0)
    await gw.sink.inbound("main", InboundSms(sender=few[0], body="yes please"))
    await gw.sink.inbound("main", InboundSms(sender=few[1], body="STOP"))

    def steps(campaign_id: str, created_at: float) -> Any:
        def job(conn: sqlite3.Connection) -> int:
            ticks = 0

            def tick() -> int:
                nonlocal ticks
                ticks += 1
                return 0

            conn.set_progress_handler(tick, 10)
            try:
                for query in (sql.REPLIES_SQL, sql.OPT_OUTS_SQL):
                    args = (campaign_id, created_at) if "?2" in query else (campaign_id,)
                    conn.execute(query, args).fetchall()
            finally:
                conn.set_progress_handler(None, 0)
            return ticks

        return job

    small, large = [await gw.store.writer.run(steps(c.id, c.created_at)) for c in campaigns]
    assert large <= small + 20, (small, large)  # 100 times the audience, not its cost
    counted = await gw.campaigns.progress(USER, campaigns[0])
    assert (counted.campaign.replies, counted.campaign.opt_outs) == (1, 1)


async def test_the_reasons_of_blocked_messages_are_read_only_when_some_are_blocked(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Reading the reasons fetches each of the campaign's rows (an `error_code` is not
    in its index): the most costly of the counts, for nothing when none is blocked."""
    from gateway.campaigns import store as sql

    gw = await open_gateway(campaigns=FAST)
    numbers = await add_contacts(gw, 6)
    cid = await _started(gw, rate=1000.0)
    await gw.campaign_runner.run_pass(await gw.campaigns.get(USER, cid), 3)
    reader = gw.store.reader
    real, ran = reader.all, []

    async def recorded(query: str, params: Any = ()) -> Any:
        ran.append(query)
        return await real(query, params)

    reader.all = recorded  # type: ignore[method-assign]
    counted = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, cid))
    assert counted.campaign.queued == 3 and sql.BLOCKED_SQL not in ran
    for number in numbers:  # the three not yet handled are blocked
        await record_decision(gw, number, "opt_out", "all")
    await gw.campaigns.act(USER, cid, "pause")
    await gw.campaigns.act(USER, cid, "resume")
    await gw.campaign_runner.run_pass(await gw.campaigns.get(USER, cid), 10)
    counted = await gw.campaigns.progress(USER, await gw.campaigns.get(USER, cid))
    assert sql.BLOCKED_SQL in ran and counted.campaign.blocked == {"opted_out": 3}


async def test_a_clinical_accept_never_commits_in_a_pass_transaction(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """A pass of 200 recipients is tens of ms of the writer: an accept that shared its
    transaction would wait for all of it before its 202 (make bench-campaign)."""
    from gateway.intake import SendRequest

    gw = await open_gateway(campaigns=FAST)
    await add_contacts(gw, 40)
    cid = await _started(gw, rate=1000.0)
    campaign = await gw.campaigns.get(USER, cid)
    statements: list[str] = []
    await gw.store.writer.run(lambda c: c.set_trace_callback(statements.append))
    clinical = SendRequest(to="+12025559999", body="Your result is ready.", purpose="results")
    passed, accepted = await asyncio.gather(
        gw.campaign_runner.run_pass(campaign, 40),
        gw.usecases.messages.accept(USER, clinical),
    )
    await gw.store.writer.run(lambda c: c.set_trace_callback(None))
    assert len(passed.prepared) == 40 and accepted.status in ("queued", "scheduled")
    transactions = " ".join(statements).split("BEGIN IMMEDIATE")
    (with_pass,) = [t for t in transactions if "INSERT INTO campaign_recipients" in t]
    (with_accept,) = [t for t in transactions if "INSERT INTO messages" in t and t is not with_pass]
    assert with_pass != with_accept
    assert transactions.index(with_accept) < transactions.index(with_pass)  # it went first
