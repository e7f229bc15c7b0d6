"""STOP, START and HELP through the real gateway and the SMSC simulator (issue 12,
points 3 and 8; MSG-4/6/7/8/9, R-OPT-1/2/3).

Each test runs the whole gateway (dispatch loop on) bound over TCP to the in-process
`SmscSimulator`, which injects the patient's texts as deliver_sm and records what the
gateway submits. Nothing sleeps: waits re-check after every commit and every simulator
event (`Rig.until`, from test_smpp_faults.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import InboundPart, InboundSms
from drivers.clock import FakeClock, SystemClock
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator, SubmittedMessage
from drivers.text import Encoding, split
from gateway.app import Gateway
from gateway.consent import ledger
from gateway.consent.answers import reply_id
from gateway.models import Priority, new_message_id
from gateway.scheduler_feed import Entry
from gateway.store.store import NewMessage
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    GatewayFactory,
    make_config,
    poke_on_commit,
    state_of,
)
from tests.store_rows import inbound_rows
from tests.test_smpp_faults import PASSWORD, Rig, _relay, smpp_route

SHORT_CODE = "4000"
PHARMACY = "4001"

RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    config = SimulatorConfig(password=PASSWORD, receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(config) as s:
        yield s


# The clinical messages these tests send go at any hour of the test run (quiet hours
# and caps have their own tests).
ANY_HOUR = {p: {"window": "", "caps": []} for p in ("appointment", "informational")}


@pytest.fixture
async def open_rig(tmp_path: Path, sim: SmscSimulator) -> AsyncIterator[RigFactory]:
    """Gateways on one store and one simulator; `consent` settings as keywords."""
    opened: list[tuple[Rig, asyncio.Task[None]]] = []

    async def factory(**consent: Any) -> Rig:
        config = make_config(
            tmp_path,
            [smpp_route(sim)],
            queue={"retry_base": 0.05, "retry_cap": 0.2},
            http={"shutdown_grace": 0.5},
            consent={"help_contact": "555-0100", "purposes": ANY_HOUR, **consent},
        )
        gw = await Gateway.open(config, SystemClock())
        rig = Rig(gw, sim)
        poke_on_commit(gw.store.writer, rig.poke)
        relay = asyncio.create_task(_relay(sim, rig.poke))
        opened.append((rig, relay))
        await gw.start(dispatch=True)
        await rig.until_up()
        return rig

    yield factory
    for rig, relay in opened:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        if not rig.gw.stopped:
            await rig.gw.stop()


def number(i: int) -> str:
    return f"+1202555{i:04d}"


def to(sim: SmscSimulator, who: str) -> list[SubmittedMessage]:
    """What the gateway submitted to `who`, in order."""
    return [m for m in sim.submitted if m.destination == who.removeprefix("+")]


async def inbound_count(gw: Gateway) -> int:
    return len(await inbound_rows(gw.store, 1000))


async def inbound_ids(gw: Gateway) -> list[str]:
    return [r["id"] for r in reversed(await inbound_rows(gw.store, 1000))]


async def decisions(gw: Gateway, who: str) -> list[tuple[Any, ...]]:
    rows = await gw.store.reader.all(
        "SELECT decision, scope, program, source, inbound_id, message_id FROM consent_ledger"
        " WHERE contact_idx = ? ORDER BY seq",
        (gw.store.blind_index(who),),
    )
    return [tuple(r) for r in rows]


async def reviews(gw: Gateway, who: str) -> list[tuple[Any, ...]]:
    rows = await gw.store.reader.all(
        "SELECT reason, program, inbound_id FROM consent_review WHERE contact_idx = ?"
        " ORDER BY created_at",
        (gw.store.blind_index(who),),
    )
    return [tuple(r) for r in rows]


async def replies(gw: Gateway, who: str) -> list[tuple[Any, ...]]:
    """The compliance messages made for `who`: (id, category, priority, state)."""
    rows = await gw.store.reader.all(
        "SELECT id, category, priority, state FROM messages WHERE to_index = ?"
        " AND purpose = 'compliance' ORDER BY created_at",
        (gw.store.blind_index(who),),
    )
    return [tuple(r) for r in rows]


async def send(gw: Gateway, who: str, body: str, purpose: str) -> str:
    """A message of `purpose` committed and queued (what accept will do once the API
    names purposes); its id."""
    now = gw.clock.time()
    plan = split(body)
    m = NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to=who,
        body=body,
        encoding=plan.encoding.value,
        segments=plan.segments,
        created_at=now,
        expires_at=now + 3600.0,
    )
    statements = gw.store.insert_statements(m)

    def job(conn: Any) -> None:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("UPDATE messages SET purpose = ? WHERE id = ?", (purpose, m.id))

    await gw.store.writer.run(job)
    candidates = gw.router.candidates(who, Priority.NORMAL)
    gw.scheduler.add(Entry(m.id, Priority.NORMAL, now, m.expires_at, candidates))
    return m.id


async def settled(rig: Rig, who: str, inbound: int, submitted: int) -> None:
    """Wait until `inbound` texts are stored and `submitted` messages reached the SMSC
    for `who`, every one of them delivered."""

    async def check() -> bool:
        if await inbound_count(rig.gw) < inbound or len(to(rig.sim, who)) < submitted:
            return False
        states = [r[3] for r in await replies(rig.gw, who)]
        return all(s == "delivered" for s in states)

    await rig.until(check)


# -- the matrix (R-OPT-2) -------------------------------------------------------------------

ALL_OUT = [("opt_out", "all", "default", "keyword")]
PHRASE_OUT = [("opt_out", "all", "default", "phrase")]
# text -> (ledger rows, review reasons, reply category or None)
MATRIX: dict[str, tuple[list[tuple[str, ...]], list[str], str | None]] = {
    "stop": (ALL_OUT, [], "consent:opt_out_all:default"),
    " Stop ": (ALL_OUT, [], "consent:opt_out_all:default"),
    "STOP.": (ALL_OUT, [], "consent:opt_out_all:default"),
    "stop!": (ALL_OUT, [], "consent:opt_out_all:default"),
    "\uff33\uff34\uff2f\uff30": (ALL_OUT, [], "consent:opt_out_all:default"),
    "Stop \U0001f6d1": (ALL_OUT, [], "consent:opt_out_all:default"),
    "UNSUBSCRIBE": (ALL_OUT, [], "consent:opt_out_all:default"),
    "opt-out": (ALL_OUT, [], "consent:opt_out_all:default"),
    "Opt Out": (ALL_OUT, [], "consent:opt_out_all:default"),
    "revoke": (ALL_OUT, [], "consent:opt_out_all:default"),
    "STOP ALL": (ALL_OUT, [], "consent:opt_out_all:default"),
    "Stop all": (ALL_OUT, [], "consent:opt_out_all:default"),
    "please stop texting me": (PHRASE_OUT, ["phrase"], "consent:opt_out_all:default"),
    "STOP PLEASE": (PHRASE_OUT, ["phrase"], "consent:opt_out_all:default"),
    "stopp": ([], ["ambiguous"], None),
    "stopping by later": ([], ["ambiguous"], None),
    "Don't stop": ([], ["ambiguous"], None),
    "START": ([], [], None),  # no earlier opt-out: an ignored keyword
    "unstop": ([], [], None),
    "YES": ([], [], None),
    "See you on Tuesday": ([], [], None),
}


async def test_the_keyword_and_look_alike_matrix_through_the_smsc(open_rig: RigFactory) -> None:
    """Every R-OPT-2 input from its own number: exact keywords suppress (scope "all":
    nothing was sent to them before), phrases suppress and go to review, look-alikes
    only go to review, and nothing is an opt-in."""
    rig = await open_rig()
    texts = list(MATRIX)
    for i, text in enumerate(texts):
        rig.sim.inject_mo(number(i), SHORT_CODE, text)
    expected_replies = sum(1 for _, _, reply in MATRIX.values() if reply)
    await rig.until(lambda: len(rig.sim.submitted) == expected_replies)
    await settled(rig, number(0), len(texts), 1)
    ids = await inbound_ids(rig.gw)
    assert len(ids) == len(texts)
    for i, text in enumerate(texts):
        rows, reasons, reply = MATRIX[text]
        who = number(i)
        got = await decisions(rig.gw, who)
        assert [r[:4] for r in got] == rows, text
        assert all(r[4] in ids and r[5] is None for r in got)
        assert [r[0] for r in await reviews(rig.gw, who)] == reasons, text
        made = await replies(rig.gw, who)
        assert [r[1] for r in made] == ([reply] if reply else []), text
        assert len(to(rig.sim, who)) == (1 if reply else 0), text
    assert not [
        r for i in range(len(texts)) for r in await decisions(rig.gw, number(i)) if r[0] == "opt_in"
    ]


# -- STOP, scope, one confirmation, START (MSG-6, MSG-7, MSG-9) -----------------------------


async def test_stop_takes_the_last_purpose_and_marketing_and_is_confirmed_exactly_once(
    open_rig: RigFactory,
) -> None:
    rig = await open_rig()
    who = number(1)
    with capture_logs() as logs:
        sent = await send(rig.gw, who, CANARY_BODY, "appointment")
        await rig.until(rig.all_in([sent], ("delivered",)))

        rig.sim.inject_mo(who, SHORT_CODE, "STOP")
        await settled(rig, who, 1, 2)
        (stop_id,) = await inbound_ids(rig.gw)
        assert await decisions(rig.gw, who) == [
            ("opt_out", "purpose:appointment", "default", "keyword", stop_id, sent),
            ("opt_out", "kind:marketing", "default", "keyword", stop_id, sent),
        ]
        ((reply, category, priority, _),) = await replies(rig.gw, who)
        assert reply == reply_id(stop_id)  # the reply is fixed by the STOP it answers
        assert (category, priority) == ("consent:opt_out:default", int(Priority.HIGH))
        confirmation = to(rig.sim, who)[1].text
        assert "unsubscribed" in confirmation and "STOP ALL" in confirmation  # MSG-7
        plan = split(confirmation)
        assert (plan.encoding, plan.segments) == (Encoding.GSM7, 1)

        # The same STOP again (a patient, or an auto-responder): no second confirmation.
        rig.sim.inject_mo(who, SHORT_CODE, "Stop")
        await settled(rig, who, 2, 2)
        assert len(await replies(rig.gw, who)) == 1
        assert len(await decisions(rig.gw, who)) == 2

        # STOP ALL widens it: a decision of its own, and its own confirmation.
        rig.sim.inject_mo(who, SHORT_CODE, "STOP ALL")
        await settled(rig, who, 3, 3)
        all_id = (await inbound_ids(rig.gw))[2]
        assert (await decisions(rig.gw, who))[2] == (
            "opt_out",
            "all",
            "default",
            "keyword",
            all_id,
            sent,
        )
        assert "from all texts" in to(rig.sim, who)[2].text

        # START brings it back, with the opt-in confirmation's elements (MSG-9).
        rig.sim.inject_mo(who, SHORT_CODE, "start")
        await settled(rig, who, 4, 4)
        start_id = (await inbound_ids(rig.gw))[3]
        assert (await decisions(rig.gw, who))[3] == (
            "opt_in",
            "all",
            "default",
            "keyword",
            start_id,
            None,
        )
        welcome = to(rig.sim, who)[3].text
        for needed in ("resubscribed", "Msg & data rates may apply", "HELP", "STOP"):
            assert needed in welcome
        # START again: nothing to undo, so nothing happens.
        rig.sim.inject_mo(who, SHORT_CODE, "START")
        await settled(rig, who, 5, 4)
        assert len(await decisions(rig.gw, who)) == 4
        assert len(await replies(rig.gw, who)) == 3

    shown = repr(logs)
    assert CANARY_DIGITS not in shown and who.removeprefix("+") not in shown
    assert "potassium" not in shown and "unsubscribed" not in shown
    assert [e["action"] for e in logs if e["event"] == "consent_keyword"] == [
        "opt_out",
        "opt_out",
        "opt_out_all",
        "opt_in",
        "opt_in",
    ]


async def test_revoke_all_makes_one_stop_stop_every_purpose(open_rig: RigFactory) -> None:
    rig = await open_rig(revoke_all=True)
    who = number(2)
    sent = await send(rig.gw, who, "Your appointment is at 9", "appointment")
    await rig.until(rig.all_in([sent], ("delivered",)))
    rig.sim.inject_mo(who, SHORT_CODE, "stop")
    await settled(rig, who, 1, 2)
    assert [r[:2] for r in await decisions(rig.gw, who)] == [("opt_out", "all")]
    assert "from all texts" in to(rig.sim, who)[1].text


async def test_a_stop_to_a_program_decides_for_that_program_alone(open_rig: RigFactory) -> None:
    rig = await open_rig(
        programs=[{"name": "pharmacy", "senders": [PHARMACY]}],
        program_titles={"pharmacy": "Mercy Pharmacy"},
    )
    who = number(3)
    rig.sim.inject_mo(who, PHARMACY, "STOP")
    await settled(rig, who, 1, 1)
    assert [r[:3] for r in await decisions(rig.gw, who)] == [("opt_out", "all", "pharmacy")]
    assert to(rig.sim, who)[0].text.startswith("Mercy Pharmacy: ")
    # START to the other program changes nothing: it has no opt-out there.
    rig.sim.inject_mo(who, SHORT_CODE, "START")
    await settled(rig, who, 2, 1)
    assert len(await decisions(rig.gw, who)) == 1


async def test_yes_is_an_opt_in_only_as_the_answer_to_our_opt_out_confirmation(
    open_rig: RigFactory,
) -> None:
    rig = await open_rig()
    stranger, quitter = number(4), number(5)
    rig.sim.inject_mo(stranger, SHORT_CODE, "Yes")
    rig.sim.inject_mo(quitter, SHORT_CODE, "STOP")
    await settled(rig, quitter, 2, 1)
    rig.sim.inject_mo(quitter, SHORT_CODE, "yes!")
    await settled(rig, quitter, 3, 2)
    assert await decisions(rig.gw, stranger) == []
    assert [r[0] for r in await decisions(rig.gw, quitter)] == ["opt_out", "opt_in"]
    assert "resubscribed" in to(rig.sim, quitter)[1].text


async def test_a_revocation_split_over_two_parts_is_decided_when_whole(
    open_rig: RigFactory,
) -> None:
    rig = await open_rig()
    who = number(6)
    text = "Please stop texting me, I moved away and this is not my clinic any more. " * 3
    rig.sim.inject_mo(who, SHORT_CODE, text, parts=2)
    await settled(rig, who, 1, 1)
    (inbound_id,) = await inbound_ids(rig.gw)
    assert [r[:4] for r in await decisions(rig.gw, who)] == PHRASE_OUT
    assert await reviews(rig.gw, who) == [("phrase", "default", inbound_id)]


async def test_the_reply_speaks_the_contacts_language_else_the_keywords(
    open_rig: RigFactory,
) -> None:
    rig = await open_rig()
    spanish_keyword, spanish_contact = number(7), number(8)
    cipher = rig.gw.store.cipher
    assert cipher is not None
    idx = rig.gw.store.blind_index(spanish_contact)

    def job(conn: Any) -> None:
        ledger.ensure_contact(conn, cipher, idx, spanish_contact, 0.0)
        conn.execute("UPDATE contacts SET language = 'es-MX' WHERE idx = ?", (idx,))

    await rig.gw.store.writer.run(job)
    rig.sim.inject_mo(spanish_keyword, SHORT_CODE, "¡Alto!")
    rig.sim.inject_mo(spanish_contact, SHORT_CODE, "HELP")
    await settled(rig, spanish_keyword, 2, 1)
    await settled(rig, spanish_contact, 2, 1)
    assert "Suscripcion cancelada" in to(rig.sim, spanish_keyword)[0].text
    assert to(rig.sim, spanish_contact)[0].text.startswith("Hospital: Ayuda: 555-0100.")


# -- HELP (MSG-8, R-OPT-3) --------------------------------------------------------------------


@pytest.mark.parametrize("answer_opted_out", [True, False])
async def test_help_is_answered_to_a_stranger_and_as_configured_to_an_opted_out_number(
    open_rig: RigFactory, answer_opted_out: bool
) -> None:
    rig = await open_rig(answer_help_opted_out=answer_opted_out)
    stranger, quitter = number(9), number(10)
    rig.sim.inject_mo(stranger, SHORT_CODE, "HELP")
    rig.sim.inject_mo(quitter, SHORT_CODE, "STOP")
    await settled(rig, stranger, 2, 1)
    await settled(rig, quitter, 2, 1)
    rig.sim.inject_mo(quitter, SHORT_CODE, "info")
    await settled(rig, quitter, 3, 2 if answer_opted_out else 1)
    help_text = to(rig.sim, stranger)[0].text
    for needed in ("Hospital", "555-0100", "Msg frequency varies", "Msg & data rates may apply"):
        assert needed in help_text
    assert "Reply STOP to cancel" in help_text
    plan = split(help_text)
    assert (plan.encoding, plan.segments) == (Encoding.GSM7, 1)
    if answer_opted_out:
        answer = to(rig.sim, quitter)[1].text
        assert "unsubscribed" in answer and "START" in answer and "555-0100" in answer
        assert "Msg & data rates may apply" in answer
    else:
        assert len(to(rig.sim, quitter)) == 1


# -- faults: atomicity, restart, loops (MSG-5, R-OPT-1) -----------------------------------


async def test_the_stop_commits_with_its_text_or_neither_does(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision fails once (a full disk, say): the text is not stored either, the
    SMSC gets no deliver_sm_resp and delivers it again; then both commit, once."""
    rig = await open_rig()
    who = number(11)
    append = ledger.append
    failures = [RuntimeError("disk full")]

    def failing_once(*args: Any, **kwargs: Any) -> tuple[str, int]:
        if failures:
            raise failures.pop()
        return append(*args, **kwargs)

    monkeypatch.setattr(ledger, "append", failing_once)
    rig.sim.inject_mo(who, SHORT_CODE, "STOP")
    await settled(rig, who, 1, 1)
    assert rig.sim.redelivered == 1
    assert await inbound_count(rig.gw) == 1
    assert len(await decisions(rig.gw, who)) == 1
    assert len(await replies(rig.gw, who)) == 1


async def test_a_restart_between_the_stop_and_its_confirmation_still_sends_exactly_one(
    open_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The STOP commits, then the gateway goes before handing the reply to its
    scheduler and before the SMSC has the deliver_sm_resp (so the STOP comes again).
    The next gateway on the same store sends the committed confirmation, once."""
    first = await open_rig()
    who = number(12)
    consent = first.gw.sink._consent
    assert consent is not None
    handed: list[object] = []

    def die_before_handing_over(outcome: object) -> None:  # the process "dies" here
        handed.append(outcome)
        first.poke()

    monkeypatch.setattr(consent, "after", die_before_handing_over)
    store = first.gw.store
    insert_inbound = store.insert_inbound_once
    drops = [True]

    # The link falls under the answer: written to a socket the SMSC already closed, it
    # counts as acknowledged here (its mark cleared), so the STOP is stored again.
    async def commit_then_lose_the_link(*args: Any, **kwargs: Any) -> Any:
        once = await insert_inbound(*args, **kwargs)
        if drops:
            drops.pop()
            first.sim.drop_connections()  # the deliver_sm_resp never arrives
        return once

    monkeypatch.setattr(store, "insert_inbound_once", commit_then_lose_the_link)
    first.sim.inject_mo(who, SHORT_CODE, "STOP")
    await first.until(lambda: len(handed) == 2)  # the STOP, and the STOP delivered again
    assert first.sim.redelivered >= 1
    stop_id, _ = await inbound_ids(first.gw)
    await first.gw.stop()
    assert to(first.sim, who) == []

    second = await open_rig()
    await settled(second, who, 2, 1)
    assert [r[0] for r in await replies(second.gw, who)] == [reply_id(stop_id)]
    assert len(to(second.sim, who)) == 1
    assert len(await decisions(second.gw, who)) == 1


@pytest.mark.parametrize(("echo", "replies_made"), [("HELP", 3), ("STOP", 1), ("info", 3)])
async def test_an_auto_responder_cannot_start_a_reply_loop(
    open_rig: RigFactory, echo: str, replies_made: int
) -> None:
    """The patient's phone answers everything we send with `echo`: at most three
    automatic replies an hour (R-OPT-1), one for a repeated STOP."""
    rig = await open_rig()
    who = number(13)

    async def responder() -> None:
        answered = 0
        while True:
            await rig.sim.wait_until(lambda n=answered: len(to(rig.sim, who)) > n)
            answered += 1
            rig.sim.inject_mo(who, SHORT_CODE, echo)

    task = asyncio.create_task(responder())
    try:
        rig.sim.inject_mo(who, SHORT_CODE, echo)
        await settled(rig, who, replies_made + 1, replies_made)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # The last echo is stored and earned nothing; nothing else is waiting to go.
    assert await inbound_count(rig.gw) == replies_made + 1
    assert len(await replies(rig.gw, who)) == replies_made
    assert len(to(rig.sim, who)) == replies_made


async def test_an_opt_out_is_confirmed_even_when_the_auto_reply_limit_is_spent(
    open_rig: RigFactory,
) -> None:
    """Three HELP answers spend the hour's automatic replies; a STOP that changes the
    number's consent still gets its one confirmation (MSG-6), a fourth HELP nothing."""
    rig = await open_rig()
    who = number(14)
    for n in range(1, 4):
        rig.sim.inject_mo(who, SHORT_CODE, "HELP")
        await settled(rig, who, n, n)
    rig.sim.inject_mo(who, SHORT_CODE, "HELP")
    rig.sim.inject_mo(who, SHORT_CODE, "STOP")
    await settled(rig, who, 5, 4)
    assert [r[1] for r in await replies(rig.gw, who)] == [
        *["consent:help:default"] * 3,
        "consent:opt_out_all:default",
    ]


async def test_a_revocation_in_a_message_that_never_arrived_whole_is_still_caught(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Part 2 of 2 never comes: the text stored as incomplete at the reassembly timeout
    still holds a revocation phrase, decided in the transaction that stores it."""
    gw = await open_gateway()
    who = number(15)
    part = InboundPart(reference=9, ref_bits=8, total=2, seq=1)
    await gw.sink.inbound("main", InboundSms(who, "Wrong number, please ", SHORT_CODE, part=part))
    assert await decisions(gw, who) == []
    clock.advance(gw.sink.reassembly_timeout)
    await gw.housekeeping_once()
    (inbound_id,) = await inbound_ids(gw)
    assert [r[:5] for r in await decisions(gw, who)] == [
        ("opt_out", "all", "default", "phrase", inbound_id)
    ]
    assert await reviews(gw, who) == [("phrase", "default", inbound_id)]
    ((reply, *_),) = await replies(gw, who)
    assert reply == reply_id(inbound_id)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, reply) in ("sent", "delivered")


async def test_a_stop_from_a_number_the_numbering_plan_does_not_know_still_counts(
    open_rig: RigFactory,
) -> None:
    """+1 555 numbers are not valid to phonenumbers (as a range newer than its data
    would not be): the carrier says who sent the STOP, and that is who is suppressed."""
    rig = await open_rig()
    who = "+15551230000"
    rig.sim.inject_mo(who, SHORT_CODE, "STOP")
    rig.sim.inject_mo("HOSPITAL", SHORT_CODE, "STOP")  # alphanumeric: nobody to suppress
    await settled(rig, who, 2, 1)
    assert [r[:2] for r in await decisions(rig.gw, who)] == [("opt_out", "all")]
    assert len(rig.sim.submitted) == 1


async def test_with_consent_off_a_stop_is_only_stored(
    open_gateway: GatewayFactory,
) -> None:
    """`consent.enabled = false` (a benchmark's baseline) turns keyword handling off too."""
    gw = await open_gateway(consent={"enabled": False})
    who = number(16)
    await gw.sink.inbound("main", InboundSms(who, "STOP", SHORT_CODE))
    assert len(await inbound_ids(gw)) == 1
    assert await decisions(gw, who) == []
    assert await replies(gw, who) == []
