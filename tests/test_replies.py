"""Replies to appointment texts (issue 13, point 6): each intent in English and
Spanish, the short code's pick, look-alikes never guessed, `STOP 1234` scoped to one
appointment while a bare STOP stays the consent keywords', the write-back queued and
valid per hl7apy STRICT, the `appointment.reply` event without PHI.

Each text goes in where a driver hands it over (`GatewaySink.inbound`), so it is
stored, keyword-checked and replied to in the one inbound transaction, as in service.
"""

from __future__ import annotations

from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from structlog.testing import capture_logs

from drivers.base import InboundSms
from gateway.app import Gateway
from gateway.clinical import notices
from gateway.clinical.notices import Notice, NoticeKind
from gateway.clinical.profile import InterfaceProfile
from gateway.integrations.events import EVENT_TYPES
from gateway.replies.intents import Intent, Parsed, parse
from gateway.store.outbox_sql import OutboxRow, keep_only
from tests.appointment_rows import DAY, appointment, book, context, outbound_messages, reply_rows
from tests.conftest import GatewayFactory

WHO = "+12025550123"
OTHER = "+12025550188"


async def text(gw: Gateway, body: str, sender: str = WHO) -> str:
    """`body` from `sender` through the sink; the stored inbound id."""
    await gw.sink.inbound("main", InboundSms(sender=sender, body=body, recipient="4000"))
    row = await gw.store.reader.one("SELECT id FROM inbound ORDER BY seq DESC LIMIT 1")
    assert row is not None
    return str(row[0])


async def answers(gw: Gateway, who: str = WHO) -> list[tuple[str, str]]:
    """(category, body) of the compliance messages made for `who`."""
    rows = await gw.store.reader.all(
        "SELECT id, category, body_ct FROM messages WHERE to_index = ? AND purpose = 'compliance'"
        " ORDER BY created_at, id",
        (gw.store.blind_index(who),),
    )
    return [(r[1], gw.store.decrypt(r[2], r[0], "body")) for r in rows]


async def ledger(gw: Gateway, who: str = WHO) -> list[tuple[str, str, str | None]]:
    rows = await gw.store.reader.all(
        "SELECT decision, scope, inbound_id FROM consent_ledger WHERE contact_idx = ? ORDER BY seq",
        (gw.store.blind_index(who),),
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def notice_states(
    gw: Gateway, appt_id: str, rule: str | None = None
) -> list[tuple[str, str | None]]:
    """(state, reason) of the appointment's notices (of `rule`), sorted."""
    rows = await gw.store.reader.all(
        "SELECT state, reason, rule_id FROM clinical_notices WHERE appointment_id = ?",
        (appt_id,),
    )
    return sorted((r[0], r[1]) for r in rows if rule is None or r[2] == rule)


@pytest.fixture
async def gw(open_gateway: GatewayFactory) -> Gateway:
    return await open_gateway()


# -- parsing (pure) -------------------------------------------------------------------------

PARSED = {
    "C": Parsed(Intent.CONFIRM, None),
    " c. ": Parsed(Intent.CONFIRM, None),
    "Y": Parsed(Intent.CONFIRM, None),
    "yes!": Parsed(Intent.CONFIRM, None),
    "Confirm": Parsed(Intent.CONFIRM, None),
    "Sí": Parsed(Intent.CONFIRM, None),
    "CONFIRMAR": Parsed(Intent.CONFIRM, None),
    "C 1234": Parsed(Intent.CONFIRM, "1234"),
    "c1234": Parsed(Intent.CONFIRM, "1234"),
    "R": Parsed(Intent.RESCHEDULE, None),
    "reschedule": Parsed(Intent.RESCHEDULE, None),
    "Cambiar": Parsed(Intent.RESCHEDULE, None),
    "N": Parsed(Intent.CANCEL, None),
    "CANCEL 1234": Parsed(Intent.CANCEL, "1234"),
    "cancelar 5678": Parsed(Intent.CANCEL, "5678"),
    "STOP 1234": Parsed(Intent.STOP, "1234"),
    "Alto 1234": Parsed(Intent.STOP, "1234"),
}
LOOK_ALIKES = [
    "Can't make it",
    "C u there",
    "CANCEL my subscription",
    "Yes I'll be there",
    "No",
    "C 12",
    "STOP",
    "stop please",
    "Stop all",
    "Call me",
    "R u sure",
    "",
]


@pytest.mark.parametrize("body", list(PARSED))
def test_each_intent_reads_in_english_and_spanish(body: str) -> None:
    assert parse(body) == PARSED[body]


@pytest.mark.parametrize("body", LOOK_ALIKES)
def test_look_alikes_and_bare_stop_are_no_intent(body: str) -> None:
    assert parse(body) is None


# -- confirm --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "language", "expected"),
    [
        ("C", None, "Thanks, your appointment is confirmed."),
        ("Y", "en", "Thanks, your appointment is confirmed."),
        ("yes", "en", "Thanks, your appointment is confirmed."),
        ("Sí", "es", "Gracias, su cita esta confirmada."),
        ("CONFIRMAR", "es", "Gracias, su cita esta confirmada."),
    ],
)
async def test_confirm_bumps_the_version_and_answers_in_the_patients_language(
    gw: Gateway, body: str, language: str | None, expected: str
) -> None:
    seen: list[str] = []
    gw.clinical_hooks.appointment_changed.append(lambda conn, ctx, appt: seen.append(appt))
    booked = await book(gw, WHO, language=language)
    inbound_id = await text(gw, body)
    after = await appointment(gw, booked.id)
    assert after["status"] == "booked" and after["version"] == 2
    assert after["confirmed_at"] == gw.clock.time() and after["confirmed_via"] == "sms"
    assert seen == [booked.id]  # the planner re-plans
    (row,) = await reply_rows(gw)
    assert (row["inbound_id"], row["appointment_id"], row["intent"]) == (
        inbound_id,
        booked.id,
        "confirm",
    )
    assert (row["outcome"], row["state"], row["writeback_id"]) == ("confirmed", "done", None)
    ((category, answer),) = await answers(gw)
    assert category == "reply:confirmed:default" and answer.endswith(expected)
    trail = await gw.store.reader.all(
        "SELECT event, version, source_ref FROM appointment_events WHERE appointment_id = ?",
        (booked.id,),
    )
    assert [tuple(t) for t in trail] == [("confirmed", 2, inbound_id)]
    assert await ledger(gw) == []  # YES was no opt-in: nothing had been opted out
    await text(gw, body)  # confirmed again: answered, no second version
    assert (await appointment(gw, booked.id))["version"] == 2 and seen == [booked.id]
    assert [r["outcome"] for r in await reply_rows(gw)] == ["confirmed", "confirmed"]


async def test_yes_after_an_opt_out_confirmation_stays_an_opt_in(gw: Gateway) -> None:
    booked = await book(gw, WHO)
    await text(gw, "STOP")
    await text(gw, "YES")
    assert [d[:2] for d in await ledger(gw)] == [("opt_out", "all"), ("opt_in", "all")]
    assert (await appointment(gw, booked.id))["confirmed_at"] is None
    assert await reply_rows(gw) == []


# -- reschedule and cancel ------------------------------------------------------------------


@pytest.mark.parametrize(("body", "word"), [("R", "change"), ("cambiar", "cambiar")])
async def test_a_reschedule_request_goes_to_the_worklist_and_never_cancels(
    open_gateway: GatewayFactory, body: str, word: str
) -> None:
    gw = await open_gateway(replies={"cancel_on_reply": True})
    booked = await book(gw, WHO, language="es" if word == "cambiar" else "en")
    await text(gw, body)
    assert (await appointment(gw, booked.id))["status"] == "booked"
    assert await notice_states(gw, booked.id) == [("queued", None)]
    (row,) = await reply_rows(gw)
    assert (row["intent"], row["outcome"], row["state"]) == (
        "reschedule",
        "reschedule_requested",
        "open",
    )
    ((_, answer),) = await answers(gw)
    assert word in answer


async def test_a_cancel_request_is_recorded_unless_the_site_cancels_on_reply(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    booked = await book(gw, WHO)
    await text(gw, "N")
    assert (await appointment(gw, booked.id))["status"] == "booked"
    (row,) = await reply_rows(gw)
    assert (row["outcome"], row["state"]) == ("cancel_requested", "open")
    await gw.stop()

    gw = await open_gateway(replies={"cancel_on_reply": True})
    other = await book(gw, OTHER, code="5678", mrn="MRN7", ext_key="A7", language="es")
    pending = await gw.store.writer.run(
        lambda conn: notices.schedule(
            conn,
            context(gw).cipher,
            Notice(
                NoticeKind.REMINDER,
                gw.store.blind_index(OTHER),
                "reminder",
                "appointment",
                gw.clock.time() + DAY,
                appointment_id=other.id,
                rule_id="rule-2h",
            ),
            gw.clock.time(),
        )
    )
    await text(gw, "CANCELAR 5678", sender=OTHER)
    after = await appointment(gw, other.id)
    assert (after["status"], after["version"]) == ("cancelled", 2)
    assert ("cancelled", "patient_cancel") in await notice_states(gw, other.id)
    assert pending  # the 2 h reminder above is the one withdrawn
    row = (await reply_rows(gw))[-1]
    assert (row["intent"], row["by_code"], row["outcome"], row["state"]) == (
        "cancel",
        1,
        "cancelled",
        "open",  # no write-back: staff must cancel it in the EHR too
    )
    ((_, answer),) = await answers(gw, OTHER)
    assert "cancelada" in answer


async def test_a_bare_cancel_is_an_opt_out_not_a_cancel_request(gw: Gateway) -> None:
    booked = await book(gw, WHO)
    await text(gw, "CANCEL")
    assert [d[:2] for d in await ledger(gw)] == [("opt_out", "all")]  # the per-se word
    assert (await appointment(gw, booked.id))["status"] == "booked"
    assert await reply_rows(gw) == []


# -- matching -------------------------------------------------------------------------------


async def test_the_latest_reminded_appointment_unless_a_code_names_another(gw: Gateway) -> None:
    first = await book(gw, WHO, code="1111", ext_key="A1", start_in=3 * DAY)
    gw.clock.advance(60.0)
    second = await book(gw, WHO, code="2222", ext_key="A2", start_in=5 * DAY)
    silent = await book(gw, WHO, code="3333", ext_key="A3", reminded=False)
    await text(gw, "C")
    assert (await appointment(gw, second.id))["version"] == 2  # reminded last
    assert (await appointment(gw, first.id))["version"] == 1
    await text(gw, "C 1111")
    assert (await appointment(gw, first.id))["version"] == 2
    await text(gw, "R 3333")  # a code picks even an appointment never reminded
    rows = await reply_rows(gw)
    assert [(r["appointment_id"], r["by_code"]) for r in rows] == [
        (second.id, 0),
        (first.id, 1),
        (silent.id, 1),
    ]


async def test_past_cancelled_and_foreign_appointments_do_not_match(gw: Gateway) -> None:
    await book(gw, WHO, code="1111", start_in=-3600.0)  # already past
    await book(gw, WHO, code="2222", ext_key="A2", status="cancelled")
    await book(gw, OTHER, code="4444", ext_key="A4", mrn="MRN7")  # someone else's
    await text(gw, "C")
    await text(gw, "C 2222")
    await text(gw, "C 4444")
    rows = await reply_rows(gw)
    assert [(r["appointment_id"], r["outcome"], r["state"]) for r in rows] == [
        (None, "unmatched", "open")
    ] * 3
    assert await answers(gw) == []  # nothing guessed, nothing answered


@pytest.mark.parametrize("body", LOOK_ALIKES[:6])
async def test_look_alikes_go_to_staff_as_unclear_and_change_nothing(
    gw: Gateway, body: str
) -> None:
    booked = await book(gw, WHO)
    await text(gw, body)
    assert (await appointment(gw, booked.id))["version"] == 1
    rows = await reply_rows(gw)
    if body == "No":  # "no" is one of the consent negations only: plain conversation
        assert [(r["intent"], r["state"]) for r in rows] == [("unclear", "open")]
    else:
        assert [(r["intent"], r["outcome"], r["state"]) for r in rows] == [
            ("unclear", "unclear", "open")
        ]
    assert await answers(gw) == []


async def test_a_text_from_a_number_with_no_reminded_appointment_is_left_alone(
    gw: Gateway,
) -> None:
    await book(gw, WHO, reminded=False)
    await text(gw, "See you on Tuesday")
    assert await reply_rows(gw) == []


# -- STOP 1234 (scoped) vs STOP (consent) ---------------------------------------------------


async def test_stop_with_a_code_stops_that_appointments_texts_only(gw: Gateway) -> None:
    booked = await book(gw, WHO, code="1234", ext_key="A1")
    kept = await book(gw, WHO, code="5678", ext_key="A2", reminded=False)
    ctx = context(gw)
    idx = gw.store.blind_index(WHO)

    def plan(appt_id: str, rule: str) -> Any:
        return lambda conn: notices.schedule(
            conn,
            ctx.cipher,
            Notice(
                NoticeKind.REMINDER,
                idx,
                "reminder",
                "appointment",
                gw.clock.time() + DAY,
                appointment_id=appt_id,
                rule_id=rule,
            ),
            gw.clock.time(),
        )

    await gw.store.writer.run(plan(booked.id, "rule-2h"))
    inbound_id = await text(gw, "STOP 1234")
    assert await ledger(gw) == [("opt_out", f"appointment:{booked.id}", inbound_id)]
    assert await notice_states(gw, booked.id) == [("cancelled", "opted_out"), ("queued", None)]
    reviews = await gw.store.reader.all("SELECT reason FROM consent_review")
    assert reviews == []  # not a look-alike of STOP for staff: it was understood
    # A re-plan after the STOP (a moved appointment, say) is cancelled as it is made.
    await gw.store.writer.run(plan(booked.id, "rule-72h"))
    assert await notice_states(gw, booked.id, "rule-72h") == [("cancelled", "opted_out")]
    await gw.store.writer.run(plan(kept.id, "rule-2h"))  # the other appointment's: kept
    assert await notice_states(gw, kept.id) == [("pending", None)]
    (row,) = await reply_rows(gw)
    assert (row["intent"], row["outcome"], row["by_code"]) == ("stop", "opted_out", 1)
    ((category, answer),) = await answers(gw)
    assert category == "reply:opted_out:default" and "no more texts about this" in answer
    # The reminder that had already gone out is the only message of the appointment.
    (state,) = await gw.store.reader.one(
        "SELECT state FROM messages WHERE id = ?", (booked.reminder_message,)
    )  # type: ignore[misc]
    assert state == "blocked"  # it was still waiting in the queue: held back


async def test_stop_with_an_unknown_code_and_a_bare_stop_are_the_keywords_business(
    gw: Gateway,
) -> None:
    await book(gw, WHO, code="1234")
    await text(gw, "STOP 9999")
    assert await ledger(gw) == []
    reviews = await gw.store.reader.all("SELECT reason FROM consent_review")
    assert [r[0] for r in reviews] == ["ambiguous"]  # as before replies existed
    stop_id = await text(gw, "STOP")
    # MSG-7 as before: the reminder never left the queue here, so STOP stops all.
    assert await ledger(gw) == [("opt_out", "all", stop_id)]
    assert await reply_rows(gw) == []


async def test_start_lifts_an_appointment_opt_out(gw: Gateway) -> None:
    booked = await book(gw, WHO, code="1234")
    await text(gw, "STOP 1234")
    await text(gw, "START")
    assert [d[:2] for d in await ledger(gw)][-1] == ("opt_in", "all")
    await gw.store.writer.run(
        lambda conn: notices.schedule(
            conn,
            context(gw).cipher,
            Notice(
                NoticeKind.REMINDER,
                gw.store.blind_index(WHO),
                "reminder",
                "appointment",
                gw.clock.time() + DAY,
                appointment_id=booked.id,
                rule_id="rule-9",
            ),
            gw.clock.time(),
        )
    )
    assert await notice_states(gw, booked.id, "rule-9") == [("pending", None)]


# -- write-back -----------------------------------------------------------------------------


def strict(message: str) -> Any:
    m = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    m.validate()
    return m


@pytest.mark.parametrize(
    ("kind", "body", "event", "note"),
    [
        ("siu_s14", "C", "SIU^S14^SIU_S12", "Confirmed by SMS"),
        ("siu_s14", "R", "SIU^S14^SIU_S12", "Patient asks to reschedule"),
        ("siu_s14", "STOP 1234", "SIU^S14^SIU_S12", "no more texts"),
        ("srm_s03", "R", "SRM^S03^SRM_S01", "Patient asks to reschedule"),
        ("srm_s04", "N", "SRM^S04^SRM_S01", "Patient asks to cancel"),
    ],
)
async def test_the_write_back_is_queued_per_profile_and_valid_hl7(
    gw: Gateway, kind: str, body: str, event: str, note: str
) -> None:
    gw.clinical_profiles["ehr"] = InterfaceProfile(
        "ehr", writeback="ehr-out", writeback_message=kind
    )
    booked = await book(gw, WHO, ext_key="A1001|x")  # a separator in the key is escaped
    await text(gw, body)
    (row,) = await reply_rows(gw)
    assert row["state"] == "done"  # the EHR has it: nothing for staff here
    ((interface, what, ref, message),) = await outbound_messages(gw)
    assert (interface, what, ref) == ("ehr-out", "appointment_reply", row["id"])
    assert row["writeback_id"] is not None
    parsed = strict(message)
    assert str(parsed.msh.msh_9.value) == event
    assert note in message and "A1001\\F\\x" in message
    assert WHO.removeprefix("+") not in message and "MRN42" not in message
    assert booked.id not in message


async def test_a_cancel_written_back_says_cancelled_in_sch25(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(replies={"cancel_on_reply": True})
    gw.clinical_profiles["ehr"] = InterfaceProfile("ehr", writeback="ehr-out")
    await book(gw, WHO)
    await text(gw, "N")
    ((_, _, _, message),) = await outbound_messages(gw)
    parsed = strict(message)
    assert parsed.sch.sch_25.value == "Cancelled"
    assert (await reply_rows(gw))[0]["state"] == "done"


# -- events and PHI -------------------------------------------------------------------------


async def test_every_reply_is_an_event_without_phi_and_logs_hold_no_phi(gw: Gateway) -> None:
    # As when some consumer (a webhook, MQTT) takes every event type: this gateway has
    # none, so the outbox would drop them at insert.
    await gw.store.writer.run(lambda conn: keep_only(conn, EVENT_TYPES))
    booked = await book(gw, WHO)
    with capture_logs() as logs:
        await text(gw, "C")
        await text(gw, "Can't make it, call me at 2025550199", sender=WHO)
        await text(gw, "C", sender=OTHER)
    rows = await gw.store.reader.all(
        "SELECT type, message_id, route, state, code FROM outbox WHERE type = 'appointment.reply'"
        " ORDER BY seq"
    )
    replies = await reply_rows(gw)
    assert [tuple(r) for r in rows] == [
        ("appointment.reply", replies[0]["id"], booked.id, "confirm", "confirmed"),
        ("appointment.reply", replies[1]["id"], booked.id, "unclear", "unclear"),
        ("appointment.reply", replies[2]["id"], None, "confirm", "unmatched"),
    ]
    kind, ref, appt, intent, outcome = rows[2]
    last = OutboxRow(0, "e", kind, 0.0, ref, appt, intent, outcome, None)
    assert last.data() == {
        "reply_id": replies[2]["id"],
        "appointment_id": None,
        "intent": "confirm",
        "outcome": "unmatched",
    }
    dumped = repr(logs)
    for secret in ("2025550123", "2025550188", "2025550199", "call me"):
        assert secret not in dumped
    assert [e["outcome"] for e in logs if e.get("event") == "appointment_reply"] == [
        "confirmed",
        "unclear",
        "unmatched",
    ]


async def test_replies_off_leaves_every_text_to_the_keywords(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(replies={"enabled": False})
    booked = await book(gw, WHO)
    await text(gw, "C")
    await text(gw, "STOP 1234")
    assert (await appointment(gw, booked.id))["version"] == 1
    assert await reply_rows(gw) == []
    assert await ledger(gw) == []  # STOP 1234: a look-alike for staff, as before


async def test_a_reply_that_fails_is_rolled_back_alone_and_the_text_is_kept(
    gw: Gateway,
) -> None:
    gw.clinical_profiles["ehr"] = InterfaceProfile("ehr", writeback="ehr-out")
    booked = await book(gw, WHO)
    await gw.store.writer.run(
        lambda conn: conn.execute(
            "UPDATE appointments SET ext_key_ct = ? WHERE id = ?", (b"\0" * 40, booked.id)
        )
    )
    with capture_logs() as logs:
        inbound_id = await text(gw, "C")  # the write-back cannot read the key
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["reply_failed"]
    assert (await appointment(gw, booked.id))["version"] == 1  # the confirm undone too
    assert await reply_rows(gw) == [] and await outbound_messages(gw) == []
    row = await gw.store.reader.one("SELECT id FROM inbound WHERE id = ?", (inbound_id,))
    assert row is not None  # the patient's text is stored all the same
