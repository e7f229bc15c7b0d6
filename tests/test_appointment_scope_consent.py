"""Issue 13 glue, point 4: the consent ledger's `appointment:<id>` scope (from
`STOP 1234`) with the rest of consent: the CSV export re-imports it (and an imported
one stops that appointment's pending notices to that number), and HELP after
`STOP 1234` does not tell a patient who is still subscribed that they are not."""

from __future__ import annotations

import pytest

from gateway.app import Gateway
from gateway.clinical import notices
from gateway.clinical.notices import Notice, NoticeKind
from gateway.usecases.consent_csv import EXPORT_HEADER, Options, csv_line, export_line
from tests.appointment_rows import DAY, book, context
from tests.conftest import GatewayFactory
from tests.store_rows import message_row
from tests.test_consent_import import STAFF, _chunks
from tests.test_replies import WHO, answers, ledger, notice_states, text


@pytest.fixture
async def gw(open_gateway: GatewayFactory) -> Gateway:
    return await open_gateway(consent={"help_contact": "555-0100"})


async def _plan(gw: Gateway, appointment_id: str, rule: str) -> None:
    ctx = context(gw)
    notice = Notice(
        NoticeKind.REMINDER,
        gw.store.blind_index(WHO),
        "reminder",
        "appointment",
        gw.clock.time() + DAY,
        appointment_id=appointment_id,
        rule_id=rule,
    )
    await gw.store.writer.run(lambda c: notices.schedule(c, ctx.cipher, notice, gw.clock.time()))


async def _export(gw: Gateway) -> str:
    rows = [r async for r in await gw.usecases.consent.export(STAFF)]
    return csv_line(EXPORT_HEADER) + "".join(export_line(r) for r in rows)


async def test_an_appointment_opt_out_is_exported_and_imported_again(gw: Gateway) -> None:
    booked = await book(gw, WHO, code="1234")
    await text(gw, "STOP 1234")
    exported = await _export(gw)
    assert f"appointment:{booked.id}" in exported
    consent = gw.usecases.consent
    report = await consent.import_csv(STAFF, _chunks(exported.encode()), Options())
    assert (report.failed, report.unchanged, report.appended) == (0, 1, 0), report.errors


async def test_an_imported_appointment_opt_out_stops_its_pending_notices(gw: Gateway) -> None:
    booked = await book(gw, WHO, code="1234", reminded=False)
    other = await book(gw, WHO, code="5678", ext_key="A2", reminded=False)
    await _plan(gw, booked.id, "rule-1")
    await _plan(gw, other.id, "rule-1")
    csv_text = f"number,decision,scope\n{WHO},opt_out,appointment:{booked.id}\n"
    csv_text += f"{WHO},opt_out,appointment:apt_nothex\n"
    report = await gw.usecases.consent.import_csv(STAFF, _chunks(csv_text.encode()), Options())
    assert (report.appended, report.failed) == (1, 1)
    assert [(e.code, e.field) for e in report.errors] == [("invalid_scope", "scope")]
    assert await notice_states(gw, booked.id) == [("cancelled", "opted_out")]
    assert await notice_states(gw, other.id) == [("pending", None)]
    await _plan(gw, booked.id, "rule-2")  # planned after it: cancelled as it is made
    assert await notice_states(gw, booked.id, "rule-2") == [("cancelled", "opted_out")]


async def test_an_imported_appointment_opt_out_blocks_its_waiting_message(gw: Gateway) -> None:
    """The import withdraws as `STOP 1234` does: the appointment's reminder already
    queued is blocked at once, another appointment's is not."""
    booked = await book(gw, WHO, code="1234")
    other = await book(gw, WHO, code="5678", ext_key="A2")
    assert booked.reminder_message is not None and other.reminder_message is not None
    csv_text = f"number,decision,scope\n{WHO},opt_out,appointment:{booked.id}\n"
    report = await gw.usecases.consent.import_csv(STAFF, _chunks(csv_text.encode()), Options())
    assert report.appended == 1
    stopped = await message_row(gw.store, booked.reminder_message)
    kept = await message_row(gw.store, other.reminder_message)
    assert stopped is not None and kept is not None
    assert (stopped["state"], stopped["error_code"]) == ("blocked", "opted_out")
    assert kept["state"] == "queued"


async def test_help_after_stop_1234_is_the_ordinary_help(gw: Gateway) -> None:
    await book(gw, WHO, code="1234")
    await text(gw, "STOP 1234")
    await text(gw, "HELP")
    (category, body) = (await answers(gw))[-1]
    assert category == "consent:help:default", body
    assert "unsubscribed" not in body.lower() and "555-0100" in body
    # START still lifts the appointment's opt-out (an opt-in of everything).
    await text(gw, "START")
    assert [d[:2] for d in await ledger(gw)][-1] == ("opt_in", "all")
    # A real opt-out of everything is still reported by HELP.
    await text(gw, "STOP")
    await text(gw, "HELP")
    (category, body) = (await answers(gw))[-1]
    assert category != "consent:help:default" or "unsubscribed" in body.lower()
