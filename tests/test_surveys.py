"""Surveys end to end in one gateway on a fake clock: each text goes in where a driver
hands it over (`GatewaySink.inbound`), so the answer is matched in the inbound's own
transaction, after the consent keywords, as in service.

Covers: the walk through every kind with the re-ask and an invalid answer recorded;
the time-out (fake clock, the runner's pass and a late answer); one open survey per
number under parallel starts; STOP during a survey (it wins even where an option reads
"Stop"); HELP is no answer; an appointment reply with its code is left alone; the
answer texts stay encrypted; the send policy blocks a first question; audience sends.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from structlog.testing import capture_logs

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.contacts.audience import AudienceSpec
from gateway.errors import ApiError
from gateway.surveys.usecase import Target
from tests.conftest import GatewayFactory, poke_on_commit, record_decision
from tests.survey_rows import (
    ADMIN,
    OTHER,
    WHO,
    answer_rows,
    make_survey,
    sent_to,
    session_state,
    start,
    text,
)


@pytest.fixture
async def gw(open_gateway: GatewayFactory) -> Gateway:
    return await open_gateway()


async def test_a_walk_through_every_kind_with_one_reask(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    first = (await sent_to(gw))[0]
    assert first.startswith("GH Clinic: 3 quick questions.\nHow was your visit?\n1) Good")
    await text(gw, "maybe")  # not an option: asked again, nothing recorded
    assert await session_state(gw, session) == ("open", 0, 1)
    assert (await sent_to(gw))[-1].startswith("Sorry, we could not read that answer.\nHow was")
    await text(gw, "GOOD!")
    await text(gw, "eleven")  # the scale: asked again
    await text(gw, "11")  # still not 0-10: recorded invalid, and on to the next question
    await text(gw, "=1+1 the nurse was kind")
    assert await session_state(gw, session) == ("completed", 2, 0)
    assert await answer_rows(gw, session) == [
        (0, True, "1", None),
        (1, False, None, "out_of_range"),
        (2, True, None, None),
    ]
    bodies = await sent_to(gw)
    assert len(bodies) == 6 and bodies[-1] == "Thank you!"
    assert bodies[3].startswith("Sorry") and bodies[4] == "Anything else?"


async def test_the_language_of_the_contact_or_the_send(gw: Gateway) -> None:
    sid = await make_survey(gw)
    await start(gw, sid, language="es")
    assert (await sent_to(gw))[0].startswith("Clinica GH: 3 preguntas.\nComo fue")
    await text(gw, "regular")  # the Spanish label
    assert (await sent_to(gw))[-1] == "Califiquenos 0-10"


async def test_a_question_times_out_and_a_late_answer_is_no_answer(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    await text(gw, "1")  # now on the scale, whose time-out is 60 minutes
    gw.clock.advance(3599)  # type: ignore[attr-defined]
    assert await gw.survey_timeouts.run_once() == []
    gw.clock.advance(2)  # type: ignore[attr-defined]
    await text(gw, "7")  # past the deadline, before the runner's pass: not an answer
    assert await session_state(gw, session) == ("timed_out", 1, 0)
    assert await answer_rows(gw, session) == [(0, True, "1", None)]
    assert len(await sent_to(gw)) == 2


async def test_the_runner_closes_what_timed_out(gw: Gateway) -> None:
    sid = await make_survey(gw, timeout_minutes=30)
    session = await start(gw, sid)
    other = await start(gw, sid, to=OTHER)
    await text(gw, "2", OTHER)  # the other number moved on: its scale has 60 minutes
    gw.clock.advance(31 * 60)  # type: ignore[attr-defined]
    with capture_logs() as logs:
        assert await gw.survey_timeouts.run_once() == [session]
    assert await session_state(gw, session) == ("timed_out", 0, 0)
    assert (await session_state(gw, other))[0] == "open"
    assert {e["event"] for e in logs} == {"survey_timed_out"}
    assert all(WHO not in str(e) for e in logs)


async def test_one_open_survey_per_number_under_parallel_starts(gw: Gateway) -> None:
    sid = await make_survey(gw)
    outcomes = await asyncio.gather(
        *(gw.surveys.send(ADMIN, sid, Target(to=WHO)) for _ in range(8)), return_exceptions=True
    )
    started = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(started) == 1 and len(refused) == 7
    assert {(e.status, e.code, e.field) for e in refused} == {(409, "survey_open", "to")}
    assert all(WHO not in e.message for e in refused)
    rows = await gw.store.reader.all("SELECT state FROM survey_sessions")
    assert [r[0] for r in rows] == ["open"]
    assert len(await sent_to(gw)) == 1  # no first question for a refused start
    # once it is over, the number may start another
    for answer in ("1", "5", "fine"):
        await text(gw, answer)
    await start(gw, sid)


async def test_stop_during_a_survey_wins_and_closes_it(gw: Gateway) -> None:
    options = [
        {"key": "1", "label": {"en": "Go on", "es": "Seguir"}},
        {"key": "2", "label": {"en": "Stop", "es": "Alto"}},  # an option reading STOP
    ]
    sid = await make_survey(gw, questions=[
        {"kind": "choice", "text": {"en": "More tips?", "es": "Mas consejos?"},
         "options": options},
    ])  # fmt: skip
    session = await start(gw, sid)
    await text(gw, "Stop")
    assert await session_state(gw, session) == ("stopped", 0, 0)
    assert await answer_rows(gw, session) == []
    ledger = await gw.store.reader.all(
        "SELECT decision FROM consent_ledger WHERE contact_idx = ?", (gw.store.blind_index(WHO),)
    )
    assert [r[0] for r in ledger] and {r[0] for r in ledger} == {"opt_out"}
    assert len(await sent_to(gw)) == 1  # nothing more of the survey's
    await text(gw, "1")  # no session: ordinary conversation
    assert await answer_rows(gw, session) == []


async def test_help_is_no_answer_and_the_survey_waits(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    await text(gw, "HELP")
    assert await session_state(gw, session) == ("open", 0, 0)
    await text(gw, "3")
    assert await answer_rows(gw, session) == [(0, True, "3", None)]


async def test_an_appointment_reply_with_its_code_is_not_an_answer(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    await text(gw, "C 1234")
    assert await session_state(gw, session) == ("open", 0, 0)
    assert await answer_rows(gw, session) == []


async def test_answer_texts_stay_encrypted_and_out_of_the_logs(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    with capture_logs() as logs:
        for answer in ("1", "9", "Dr Quill was lovely"):
            await text(gw, answer)
    assert await session_state(gw, session) == ("completed", 2, 0)
    for table in ("survey_sessions", "survey_answers", "surveys"):
        rows = await gw.store.reader.all(f"SELECT * FROM {table}")  # noqa: S608
        assert "Quill" not in repr(rows) and "555" not in repr(rows)
    assert not any("Quill" in str(e) or WHO in str(e) for e in logs)
    assert {e.get("survey_event") for e in logs if e["event"] == "survey_reply"} == {
        "answered",
        "completed",
    }


async def test_the_policy_blocks_a_first_question_and_no_session_stays_open(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await record_decision(gw, WHO, "opt_out", "all")
    sid = await make_survey(gw)
    sent = await gw.surveys.send(ADMIN, sid, Target(to=WHO))
    assert sent.status == "blocked" and sent.started == 0
    assert dict(sent.blocked) == {"opted_out": 1}
    rows = await gw.store.reader.all("SELECT state FROM survey_sessions")
    assert [r[0] for r in rows] == ["blocked"]
    row = await gw.store.reader.one("SELECT state FROM messages WHERE category = 'survey'")
    assert row is not None and row[0] == "blocked"


async def test_an_audience_send_counts_each_outcome(gw: Gateway) -> None:
    sid = await make_survey(gw)
    numbers = [f"+1202555{n:04d}" for n in range(150, 156)]
    await _contacts(gw, numbers, group="flu")
    await record_decision(gw, numbers[0], "opt_out", "all")
    await start(gw, sid, to=numbers[1])  # already answering
    sent = await gw.surveys.send(ADMIN, sid, Target(audience=AudienceSpec(groups=["flu"])))
    assert (sent.started, sent.already_open, dict(sent.blocked)) == (4, 1, {"opted_out": 1})
    with pytest.raises(ApiError) as e:
        await gw.surveys.send(ADMIN, sid, Target(audience=AudienceSpec(groups=["nobody"])))
    assert e.value.code == "empty_audience"


async def _contacts(gw: Gateway, numbers: list[str], group: str) -> None:
    from gateway.consent import ledger

    cipher = gw.store.cipher
    assert cipher is not None
    now = gw.clock.time()

    def job(conn: object) -> None:
        conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO contact_groups (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (group, group, now, now),
        )
        for n in numbers:
            idx = gw.store.blind_index(n)
            ledger.ensure_contact(conn, cipher, idx, n, now)  # type: ignore[arg-type]
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO contact_group_members (group_id, contact_idx, added_at)"
                " VALUES (?, ?, ?)",
                (group, idx, now),
            )

    await gw.store.writer.run(job)


async def test_an_erasure_ends_the_survey_and_unlinks_the_number(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    await text(gw, "1")
    erased = await gw.erasures.erase(WHO, "test")
    assert erased.counts["survey_sessions"] == 1
    row = await gw.store.reader.one(
        "SELECT state, contact_idx FROM survey_sessions WHERE id = ?", (session,)
    )
    assert row is not None and row[0] == "stopped" and bytes(row[1]) == b""
    await start(gw, sid)  # the number may be surveyed afresh: nothing links it to before


async def test_emoji_and_other_scripts_are_read_or_asked_again(gw: Gateway) -> None:
    sid = await make_survey(gw)
    session = await start(gw, sid)
    await text(gw, "\U0001f44d")  # a thumbs-up: no option, asked again
    assert await session_state(gw, session) == ("open", 0, 1)
    await text(gw, "\u0663")  # Arabic-Indic three
    await text(gw, "\uff18 \U0001f642")  # full-width eight and a smile
    assert await answer_rows(gw, session) == [(0, True, "3", None), (1, True, "8", None)]


async def test_a_language_the_survey_does_not_speak_is_refused(gw: Gateway) -> None:
    sid = await make_survey(gw)
    with pytest.raises(ApiError) as e:
        await gw.surveys.send(ADMIN, sid, Target(to=WHO, language="fr"))
    assert (e.value.code, e.value.field) == ("invalid_field", "language")
    assert await sent_to(gw) == []


async def test_the_runner_sleeps_until_the_deadline_on_the_clock(gw: Gateway) -> None:
    sid = await make_survey(gw, timeout_minutes=1)
    session = await start(gw, sid)
    committed = asyncio.Event()
    poke_on_commit(gw.store.writer, committed.set)
    task = asyncio.create_task(gw.survey_timeouts.run())
    clock = gw.clock
    assert isinstance(clock, FakeClock)
    try:
        await asyncio.wait_for(clock.wait_sleeping(1), 5)  # its pass done, asleep
        assert clock.next_deadline == pytest.approx(60)  # until the deadline, no sooner
        assert (await session_state(gw, session))[0] == "open"
        clock.advance(61)
        while (await session_state(gw, session))[0] == "open":
            await asyncio.wait_for(committed.wait(), 5)
            committed.clear()
        assert (await session_state(gw, session))[0] == "timed_out"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_text_before_the_question_has_gone_is_no_answer(
    open_gateway: GatewayFactory,
) -> None:
    # The first question waits for the morning (quiet hours): a text the person sends
    # meanwhile answers nothing they have been asked.
    import zoneinfo
    from datetime import datetime

    windows = {"purposes": {"informational": {"caps": [], "window": "08:00-21:00"}}}
    gw = await open_gateway(consent=windows)
    clock = gw.clock
    assert isinstance(clock, FakeClock)
    new_york = zoneinfo.ZoneInfo("America/New_York")
    clock.advance(datetime(2027, 3, 2, 23, 0, tzinfo=new_york).timestamp() - clock.time())
    sid = await make_survey(gw)
    sent = await gw.surveys.send(ADMIN, sid, Target(to=WHO))
    assert sent.status == "scheduled" and sent.session_id is not None
    await text(gw, "1")
    assert await session_state(gw, sent.session_id) == ("open", 0, 0)
    assert await answer_rows(gw, sent.session_id) == []


async def test_a_question_held_by_quiet_hours_times_out_from_when_it_may_go(
    open_gateway: GatewayFactory,
) -> None:
    import zoneinfo
    from datetime import datetime

    windows = {"purposes": {"informational": {"caps": [], "window": "08:00-21:00"}}}
    gw = await open_gateway(consent=windows)
    clock = gw.clock
    assert isinstance(clock, FakeClock)
    new_york = zoneinfo.ZoneInfo("America/New_York")
    clock.advance(datetime(2027, 3, 2, 23, 0, tzinfo=new_york).timestamp() - clock.time())
    sid = await make_survey(gw, timeout_minutes=60)
    sent = await gw.surveys.send(ADMIN, sid, Target(to=WHO))
    assert (sent.status, sent.started) == ("scheduled", 1)
    opening = datetime(2027, 3, 3, 8, 0, tzinfo=new_york).timestamp()
    row = await gw.store.reader.one(
        "SELECT deadline FROM survey_sessions WHERE id = ?", (sent.session_id,)
    )
    assert row is not None and row[0] == opening + 3600  # not an hour after 23:00
    clock.advance(opening + 1800 - clock.time())
    assert await gw.survey_timeouts.run_once() == []
