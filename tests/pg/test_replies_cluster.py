"""Issue 18: appointment replies and the worklist on a cluster.

Two gateways on one PostgreSQL (the fixture of `test_appointments_cluster.py`, whose
SQLite case runs the same steps on one gateway): a "C 1234" received on B confirms
the appointment booked on A, its answer is queued once, and the reply is listed on
A; an "R 1234" received on B is on A's worklist, resolved on A, and no longer open
on B; an erasure on B unlinks both from the number; the analytics count a reply as
a confirmation.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.analytics.usecase import Range
from gateway.app import Gateway
from gateway.cluster import consent_store
from gateway.consent.answers import reply_id
from gateway.errors import ApiError
from gateway.intake import SendRequest
from gateway.reminders.rules import RuleSpec
from gateway.surveys.usecase import Target
from tests.conftest import CANARY_NUMBER
from tests.pg.test_appointments_cluster import H, Nodes, nodes  # noqa: F401  # the fixture
from tests.survey_rows import ADMIN, make_survey
from tests.test_consent_inbound import SHORT_CODE
from tests.test_consent_policy import caller


async def _code(pair: Nodes, gw: Gateway, appointment_id: str) -> str:
    detail = await gw.usecases.appointments.get(await pair.staff(gw), appointment_id)
    return detail.view.record.short_code


async def test_a_reply_on_one_node_acts_on_the_appointment_booked_on_the_other(
    nodes: Nodes,  # noqa: F811
) -> None:
    appt = await nodes.book(nodes.a, "ehr-1")
    code = await _code(nodes, nodes.a, appt)
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, f"C {code}", SHORT_CODE))

    staff_a = await nodes.staff(nodes.a)
    detail = await nodes.a.usecases.appointments.get(staff_a, appt)
    assert (detail.view.record.status, detail.view.record.version) == ("booked", 2)
    assert detail.view.record.confirmed_via == "sms"
    [confirmed] = await nodes.a.usecases.replies.of_appointment(staff_a, appt)
    assert (confirmed.intent, confirmed.outcome) == ("confirm", "confirmed")
    assert confirmed.state == "done"
    assert confirmed.number_masked is not None and confirmed.number_masked.endswith("47")
    answer = await nodes.a.usecases.messages.get(staff_a, reply_id(confirmed.inbound_id))
    assert (answer.category, answer.purpose) == ("reply:confirmed:default", "compliance")

    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, f"R {code}", SHORT_CODE))
    [open_reply] = await nodes.a.usecases.replies.listed(staff_a, "open")
    assert (open_reply.intent, open_reply.outcome) == ("reschedule", "reschedule_requested")
    resolved = await nodes.a.usecases.replies.resolve(staff_a, open_reply.id, "handled")
    assert resolved.state == "resolved"
    staff_b = await nodes.staff(nodes.b)
    assert await nodes.b.usecases.replies.listed(staff_b, "open") == []
    with pytest.raises(ApiError) as again:
        await nodes.b.usecases.replies.resolve(staff_b, open_reply.id, "dismissed")
    assert again.value.code == "not_open"

    erased = await nodes.b.erasures.erase(CANARY_NUMBER, "console")
    shared = "" if nodes.kind == "sqlite" else "shared_"
    assert erased.counts[f"{shared}appointment_replies"] == 2
    listed = await nodes.a.usecases.replies.listed(staff_a, None)
    assert [r.number_masked for r in listed] == [None, None]


async def test_the_analytics_classify_a_reply_received_on_the_other_node(
    nodes: Nodes,  # noqa: F811
    clock: FakeClock,
) -> None:
    appt = await nodes.book(nodes.a, "ehr-1")
    code = await _code(nodes, nodes.a, appt)
    staff_a = await nodes.staff(nodes.a)
    await nodes.a.usecases.messages.accept(
        staff_a, SendRequest(to=CANARY_NUMBER, body="Your clinic is open")
    )
    await nodes.a.scheduler.run_until_idle()  # sent: a reply counts against it
    clock.advance(60.0)
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, f"C {code}", SHORT_CODE))

    await nodes.b.analytics.refresh()
    today = dt.datetime.fromtimestamp(clock.time(), dt.UTC).date()
    f = await nodes.a.analytics.summary(staff_a, Range(today, today))
    assert (f["replied_confirm"], f["replied_other"]) == (1, 0)


async def test_stop_with_a_code_on_one_node_stops_that_appointments_texts_only(
    nodes: Nodes,  # noqa: F811
    clock: FakeClock,
) -> None:
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    code = await _code(nodes, nodes.a, appt)
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, "STOP 9999", SHORT_CODE))
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, f"STOP {code}", SHORT_CODE))

    staff_a = await nodes.staff(nodes.a)
    phi = await caller(nodes.a, "admin", "read", "consent", "phi")
    looked = await nodes.a.usecases.consent.lookup(phi, CANARY_NUMBER)
    assert [(h.decision, h.scope) for h in looked.history] == [("opt_out", f"appointment:{appt}")]
    # The unknown code was the keywords' business: a look-alike of STOP for staff.
    assert [r.reason for r in await nodes.a.usecases.consent.reviews(staff_a)] == ["ambiguous"]
    [stopped] = await nodes.a.usecases.replies.of_appointment(staff_a, appt)
    assert (stopped.intent, stopped.outcome, stopped.by_code) == ("stop", "opted_out", True)
    answer = await nodes.a.usecases.messages.get(staff_a, reply_id(stopped.inbound_id))
    assert answer.category == "reply:opted_out:default"

    # Cancelled at once, in the STOP's transaction, read so on the node that booked it.
    [reminder] = await nodes.notices(nodes.a, appt)
    assert (reminder.state.value, reminder.reason, reminder.message_id) == (
        "cancelled",
        "opted_out",
        None,
    )
    clock.advance(24 * H)  # when it would have been due, A's runner sends nothing
    assert (await nodes.a.notice_runner(nodes.a.renderer).run_once()).queued == 0


async def test_stop_with_a_code_blocks_the_waiting_reminder_and_cancels_the_rest_at_once(
    nodes: Nodes,  # noqa: F811
    clock: FakeClock,
) -> None:
    """As `test_replies.py`'s SQLite case: the appointment's reminder already queued by
    A's runner is blocked, its later one cancelled, both read so on A as soon as the
    STOP received on B has committed; a re-plan after it (the appointment moved) is
    cancelled as it is made; A's runner sends none of them."""
    staff = await nodes.staff(nodes.a)
    for name, lead in (("early", "-25h"), ("day before", "-2h")):
        await nodes.a.reminder_rules.create(staff, RuleSpec(name, lead, "reminder"))
    appt = await nodes.book(nodes.a, "ehr-1")  # in 26 h: reminders due in 1 h and 24 h
    clock.advance(1.5 * H)
    assert (await nodes.a.notice_runner(nodes.a.renderer).run_once()).queued == 1
    [queued] = [n for n in await nodes.notices(nodes.a, appt) if n.state.value == "queued"]
    assert queued.message_id is not None

    code = await _code(nodes, nodes.a, appt)
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, f"STOP {code}", SHORT_CODE))

    states = sorted((n.state.value, n.reason) for n in await nodes.notices(nodes.a, appt))
    assert states == [("cancelled", "opted_out"), ("queued", None)]
    waiting = await nodes.a.usecases.messages.get(staff, queued.message_id)
    assert (waiting.status.value, waiting.error_code) == ("blocked", "opted_out")
    await nodes.book(nodes.a, "ehr-1", start_in=30 * H)  # moved: its reminders re-planned
    states = sorted((n.state.value, n.reason) for n in await nodes.notices(nodes.a, appt))
    assert states == [*[("cancelled", "opted_out")] * 3, ("queued", None)]
    clock.advance(30 * H)
    assert (await nodes.a.notice_runner(nodes.a.renderer).run_once()).queued == 0


async def test_a_survey_answer_received_on_the_other_node_is_no_reply(
    nodes: Nodes,  # noqa: F811
) -> None:
    """ "C" to a survey's question is the survey's (re-asked: not one of its options),
    not a confirmation on the worklist as `unmatched`."""
    sent = await nodes.a.surveys.send(ADMIN, await make_survey(nodes.a), Target(to=CANARY_NUMBER))
    assert sent.session_id is not None
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, "C", SHORT_CODE))
    assert await nodes.a.usecases.replies.listed(await nodes.staff(nodes.a), None) == []


async def test_stop_with_a_code_waits_for_a_pass_holding_the_notice_without_a_deadlock(
    nodes: Nodes,  # noqa: F811
) -> None:
    """A runner's pass holds the notices it claimed, then (a capped purpose) the
    contact's advisory lock; the STOP takes the notices before that lock, so it waits
    for the pass and the pass never waits for it (a deadlock would abort one)."""
    if nodes.a.cluster is None:
        pytest.skip("one node: SQLite's single writer orders the two")
    pool = nodes.a.cluster.queue.pool
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    code = await _code(nodes, nodes.a, appt)

    async def waiting() -> bool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            found = await cur.fetchone()
        return found is not None and int(found[0]) >= 1

    async with pool.connection() as held:  # the pass, between its claim and its judge
        await held.execute(
            "SELECT id FROM clinical_notices WHERE appointment_id = %s FOR UPDATE", (appt,)
        )
        stop = asyncio.create_task(
            nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, f"STOP {code}", SHORT_CODE))
        )
        for _ in range(1000):  # what PostgreSQL's sessions wait on: polled
            if stop.done() or await waiting():
                break
            await asyncio.sleep(0.01)
        assert not stop.done()  # the STOP waits on the held notice
        await consent_store.lock_contacts(held, [nodes.a.store.blind_index(CANARY_NUMBER)])
        await held.commit()
    await asyncio.wait_for(stop, 10)
    [reminder] = await nodes.notices(nodes.a, appt)
    assert (reminder.state.value, reminder.reason) == ("cancelled", "opted_out")
