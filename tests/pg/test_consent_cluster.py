"""Issue 18 point 5: one consent list for every node of a cluster.

The same cases run on one SQLite gateway and on two gateways sharing one PostgreSQL
(`nodes`: on SQLite both "nodes" are the one gateway), through the use cases every
front end calls: a decision recorded on one node is the answer at accept and at claim
on the other, with the same stable reason codes as SQLite gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster import consent_store
from gateway.cluster.consent_reviews import ClusterReviews
from gateway.cluster.consent_store import ClusterLedger
from gateway.cluster.lease import Pool
from gateway.cluster.schema import migrate
from gateway.config import from_mapping
from gateway.consent.ledger import Entry
from gateway.consent.ledger_store import ConsentLedger, SqliteLedger
from gateway.errors import ApiError
from gateway.intake import Prepared, SendRequest
from gateway.models import State
from gateway.store import crypto
from gateway.store.claim_check import Held
from gateway.store.consent_sql import ContactChanges
from gateway.store.crypto import FieldCipher
from gateway.store.queue_store import QueueStore
from gateway.store.store import Store
from gateway.usecases import Caller
from gateway.usecases import consent as consent_usecase
from gateway.usecases.consent import DecisionRequest, ImportReport
from gateway.usecases.consent_csv import Options
from tests.conftest import CANARY_NUMBER, LOOPBACK_TEST, GatewayFactory, record_decision
from tests.pg.two_nodes import in_process_nodes
from tests.test_api import _api, _error
from tests.test_caps import CAPS as CAPPED
from tests.test_consent_inbound import SHORT_CODE
from tests.test_consent_policy import caller, send

NOW = 1_800_000_000.0
# test_caps's: every purpose at any hour; appointments 1 a day, marketing 1 a day
# (written consent needed); informational uncapped here.
CAPS: dict[str, Any] = {
    "default_purpose": "informational",
    "purposes": {
        **CAPPED["purposes"],
        "informational": {"window": "", "caps": []},
        "results": {"window": "07:00-21:00"},
    },
}
OTHER = "+12025550123"
LONDON = "+447400123456"  # one time zone, UTC in January


@dataclass
class Nodes:
    kind: str
    a: Gateway
    b: Gateway

    def queue(self, gw: Gateway) -> QueueStore:
        return gw.store if gw.cluster is None else gw.cluster.queue

    async def record(
        self, gw: Gateway, decision: str, scope: str = "all", **more: Any
    ) -> tuple[str, int]:
        staff = await caller(gw, "consent", "phi")
        done = await gw.usecases.consent.record(
            staff,
            DecisionRequest(CANARY_NUMBER, decision, "api", scope, **more),  # type: ignore[arg-type]
        )
        return done.id, done.seq

    async def racing(self, gw: Gateway, decision: str, scope: str = "all") -> None:
        """A decision that raced the accepts of the messages waiting now: appended with
        nothing else (no withdrawal), so only the claim's own check can stop them."""
        if gw.cluster is None:
            await record_decision(gw, CANARY_NUMBER, decision, scope)
            return
        assert gw.store.cipher is not None
        entry = Entry(
            gw.store.blind_index(CANARY_NUMBER),
            CANARY_NUMBER,
            decision,  # type: ignore[arg-type]
            scope,
            "*",
            "api",
            gw.clock.time(),
        )
        async with gw.cluster.queue.pool.connection() as conn, conn.transaction():
            await consent_store.append(conn, gw.store.cipher, entry, "gw1")


def _cluster_config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    raw = {
        "data_dir": str(data),
        "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
        "http": {"shutdown_grace": 1.0},
        "consent": CAPS,
        "source": str(data / "smsgw.toml"),
        # A fake clock never renews the lease: long enough for any test here.
        "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
    }
    return from_mapping(raw)


@pytest.fixture(params=["sqlite", "postgresql"])
async def nodes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: FakeClock,
    open_gateway: GatewayFactory,
) -> AsyncIterator[Nodes]:
    if request.param == "sqlite":
        gw = await open_gateway(consent=CAPS)
        yield Nodes("sqlite", gw, gw)
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    async with in_process_nodes(
        tmp_path, clock, lambda data, name: _cluster_config(data, name, dsn)
    ) as opened:
        yield Nodes("postgresql", opened[0], opened[1])


async def state(nodes: Nodes, who: Caller, message_id: str) -> tuple[State, str | None]:
    record = await nodes.b.usecases.messages.get(who, message_id)
    return record.status, record.error_code


# -- accept-time policy (point 2) ------------------------------------------------------


async def test_an_opt_out_recorded_on_one_node_blocks_the_accept_on_the_other(
    nodes: Nodes,
) -> None:
    who = await caller(nodes.b, "send", "read")
    assert (await send(nodes.b, who)).status == "queued"
    await nodes.record(nodes.a, "opt_out")
    refused = await send(nodes.b, who)
    assert (refused.status, refused.reason) == ("blocked", "opted_out")
    assert await state(nodes, who, refused.id) == (State.BLOCKED, "opted_out")
    assert (await send(nodes.b, who, to=OTHER)).status == "queued"  # another number


async def test_an_accept_within_a_use_cases_transaction_is_judged_and_commits_with_it(
    nodes: Nodes,
) -> None:
    """`accept_many_within_shared`: a clinical use case's own rows and its messages in
    one PostgreSQL transaction, judged as `accept` judges (an opt-out on the other node
    blocks); a rolled-back transaction keeps none of them."""
    if nodes.a.cluster is None:
        pytest.skip("SQLite's twin, accept_many_within, is the writer job's")
    await nodes.record(nodes.b, "opt_out")
    who = await caller(nodes.a, "send", "read")
    messages, pool = nodes.a.usecases.messages, nodes.a.cluster.queue.pool
    requests = [
        (SendRequest(to=CANARY_NUMBER, body="within"), None),
        (SendRequest(to=OTHER, body="within"), None),
        (SendRequest(to="not a number", body="within"), None),
    ]
    async with pool.connection() as conn, conn.transaction():
        out = await messages.accept_many_within_shared(conn, who, requests)
    blocked, going, invalid = out
    assert isinstance(blocked, Prepared) and isinstance(going, Prepared)
    assert isinstance(invalid, ApiError) and invalid.code == "invalid_number"
    messages.hand_over([blocked, going])
    assert await state(nodes, who, blocked.message.id) == (State.BLOCKED, "opted_out")
    assert (await state(nodes, who, going.message.id))[0] == State.QUEUED

    kept: list[Prepared | ApiError] = []

    async def accepted_then_failed() -> None:
        async with pool.connection() as conn, conn.transaction():
            kept.extend(await messages.accept_many_within_shared(conn, who, requests[1:2]))
            raise RuntimeError("the use case's own rows failed")

    with pytest.raises(RuntimeError):
        await accepted_then_failed()
    assert isinstance(kept[0], Prepared)
    with pytest.raises(ApiError) as gone:
        await nodes.b.usecases.messages.get(who, kept[0].message.id)
    assert gone.value.status == 404


async def test_marketing_answers_match_sqlite_no_consent_then_a_cap(nodes: Nodes) -> None:
    who_a = await caller(nodes.a, "send")
    who_b = await caller(nodes.b, "send")
    first = await send(nodes.a, who_a, purpose="marketing")
    assert (first.status, first.reason) == ("blocked", "no_consent")
    await nodes.record(nodes.b, "opt_in", "purpose:marketing", disclosure="Texts? Reply YES")
    assert (await send(nodes.a, who_a, purpose="marketing")).status == "queued"
    over = await send(nodes.b, who_b, purpose="marketing")  # the cap counts the other's
    assert (over.status, over.reason) == ("blocked", "frequency_cap")


async def test_a_clinical_cap_defers_across_nodes(nodes: Nodes, clock: FakeClock) -> None:
    who_a = await caller(nodes.a, "send", "read")
    who_b = await caller(nodes.b, "send", "read")
    assert (await send(nodes.a, who_a, purpose="appointment")).status == "queued"
    later = await send(nodes.b, who_b, purpose="appointment")
    assert (later.status, later.reason) == ("scheduled", "frequency_cap")
    record = await nodes.b.usecases.messages.get(who_b, later.id)
    assert record.send_at == clock.time() + 86400.0


async def test_parallel_accepts_on_two_nodes_cannot_race_past_a_cap(nodes: Nodes) -> None:
    """Marketing capped at 1 a day: 10 sends at once on each node, one goes."""
    await nodes.record(nodes.a, "opt_in", "purpose:marketing", disclosure="Texts? Reply YES")
    who_a = await caller(nodes.a, "send")
    who_b = await caller(nodes.b, "send")
    answers = await asyncio.gather(
        *(send(nodes.a, who_a, purpose="marketing") for _ in range(10)),
        *(send(nodes.b, who_b, purpose="marketing") for _ in range(10)),
    )
    statuses = sorted((a.status, a.reason or "") for a in answers)
    assert statuses == [("blocked", "frequency_cap")] * 19 + [("queued", "")]


# -- send time (point 3) and R-OPT-1 across nodes --------------------------------------


async def test_an_opt_out_committed_on_a_blocks_the_next_claim_on_b(
    nodes: Nodes, clock: FakeClock
) -> None:
    """Messages queued, the opt-out committed on A, then B's claim: none is sent,
    each blocked with the stable reason; another number's message still goes."""
    who = await caller(nodes.b, "send", "read")
    queued = [(await send(nodes.b, who, body=f"m{i}")).id for i in range(3)]
    other = (await send(nodes.b, who, to=OTHER)).id
    await nodes.racing(nodes.a, "opt_out", "purpose:informational")
    found = await nodes.queue(nodes.b).claim_group([*queued, other], "main", clock.time())
    assert [c is None for c in found] == [True, True, True, False]
    for message_id in queued:
        assert await state(nodes, who, message_id) == (State.BLOCKED, "opted_out")
    assert (await state(nodes, who, other))[0] is State.SENDING


async def test_an_opt_out_on_a_blocks_the_messages_waiting_on_b_at_once(
    nodes: Nodes, clock: FakeClock
) -> None:
    """In the opt-out's transaction (SQLite's `Withdrawal`): no claim needed."""
    who = await caller(nodes.b, "send", "read")
    queued = (await send(nodes.b, who)).id
    later = (await send(nodes.b, who, send_at=datetime(2027, 2, 1, 10, tzinfo=UTC))).id
    other = (await send(nodes.b, who, to=OTHER)).id
    await nodes.record(nodes.a, "opt_out")
    assert await state(nodes, who, queued) == (State.BLOCKED, "opted_out")
    assert await state(nodes, who, later) == (State.BLOCKED, "opted_out")
    assert (await state(nodes, who, other))[0] is State.QUEUED


async def test_a_claim_by_query_skips_and_blocks_the_opted_out(
    nodes: Nodes, clock: FakeClock
) -> None:
    if nodes.kind == "sqlite":
        pytest.skip("SQLite's scheduler claims by id (claim_group)")
    assert nodes.b.cluster is not None
    who = await caller(nodes.b, "send", "read")
    blocked = (await send(nodes.b, who)).id
    goes = (await send(nodes.b, who, to=OTHER)).id
    await nodes.racing(nodes.a, "opt_out")
    claimed = await nodes.b.cluster.queue.claim_due("main", 10, clock.time())
    assert [c.id for c in claimed] == [goes]
    assert await state(nodes, who, blocked) == (State.BLOCKED, "opted_out")


async def test_an_opt_in_of_one_purpose_does_not_lift_a_stop_all(
    nodes: Nodes, clock: FakeClock
) -> None:
    who = await caller(nodes.b, "send", "read")
    message_id = (await send(nodes.b, who)).id
    await nodes.racing(nodes.a, "opt_out")
    # An opt-in of one purpose, newer, does not cover the informational purpose.
    await nodes.racing(nodes.a, "opt_in", "purpose:results")
    found = await nodes.queue(nodes.b).claim_group([message_id], "main", clock.time())
    assert found == [None]


async def test_a_message_that_waited_past_its_window_is_held_at_claim(
    nodes: Nodes, clock: FakeClock
) -> None:
    """Accepted at 08:00 London time, claimed at 22:00: still queued, due at 07:00."""
    who = await caller(nodes.b, "send", "read")
    accepted = await send(nodes.b, who, to=LONDON, purpose="results")
    assert accepted.status == "queued"
    clock.advance(14 * 3600)
    found = await nodes.queue(nodes.a).claim_group([accepted.id], "main", clock.time())
    assert found == [Held(clock.time() + 9 * 3600, "quiet_hours")]
    assert (await state(nodes, who, accepted.id))[0] is State.QUEUED


# -- inbound STOP on a cluster node (point 4) -----------------------------------------


async def compliance(nodes: Nodes, to: str = CANARY_NUMBER) -> list[tuple[str, str]]:
    """(category, state) of the replies (compliance messages) made for `to`."""
    gw = nodes.a
    idx = gw.store.blind_index(to)
    sql = "SELECT category, state FROM messages WHERE to_index = ? AND purpose = 'compliance'"
    if gw.cluster is None:
        rows = await gw.store.reader.all(sql + " ORDER BY created_at, id", (idx,))
    else:
        async with gw.cluster.queue.pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s") + " ORDER BY created_at, id", (idx,))
            rows = await cur.fetchall()
    return [(r[0], r[1]) for r in rows]


async def test_stop_to_node_a_blocks_the_next_claim_on_b_with_one_confirmation(
    nodes: Nodes, clock: FakeClock
) -> None:
    """R-OPT-1 across nodes: messages queued, STOP received by A and committed, then
    B claims: none is sent; the STOP is confirmed once, a second STOP on B not again."""
    who = await caller(nodes.b, "send", "read")
    queued = [(await send(nodes.b, who, body=f"m{i}")).id for i in range(3)]
    await nodes.a.sink.inbound("main", InboundSms(CANARY_NUMBER, "STOP", SHORT_CODE))
    found = await nodes.queue(nodes.b).claim_group(queued, "main", clock.time())
    assert found == [None, None, None]
    for message_id in queued:
        assert await state(nodes, who, message_id) == (State.BLOCKED, "opted_out")
    assert await compliance(nodes) == [("consent:opt_out_all:default", "queued")]
    clock.advance(60)
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, "STOP", SHORT_CODE))
    assert len(await compliance(nodes)) == 1  # repeated within the hour: not again
    staff = await caller(nodes.b, "consent", "phi")
    view = await nodes.b.usecases.consent.lookup(staff, CANARY_NUMBER)
    assert [(h.decision, h.scope, h.source) for h in view.history] == [
        ("opt_out", "all", "keyword")
    ]


async def test_stops_on_both_nodes_at_once_are_confirmed_once(
    nodes: Nodes, clock: FakeClock
) -> None:
    stop = InboundSms(CANARY_NUMBER, "STOP", SHORT_CODE)
    await asyncio.gather(nodes.a.sink.inbound("main", stop), nodes.b.sink.inbound("main", stop))
    assert await compliance(nodes) == [("consent:opt_out_all:default", "queued")]
    staff = await caller(nodes.a, "consent", "phi")
    view = await nodes.a.usecases.consent.lookup(staff, CANARY_NUMBER)
    assert [h.decision for h in view.history] == ["opt_out"]


async def test_start_on_b_lifts_a_stop_received_on_a(nodes: Nodes, clock: FakeClock) -> None:
    await nodes.a.sink.inbound("main", InboundSms(CANARY_NUMBER, "STOP", SHORT_CODE))
    clock.advance(60)
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, "START", SHORT_CODE))
    who = await caller(nodes.b, "send", "read")
    message_id = (await send(nodes.b, who)).id
    found = await nodes.queue(nodes.a).claim_group([message_id], "main", clock.time())
    assert found[0] is not None and not isinstance(found[0], (Exception, Held))
    assert [c for c, _ in await compliance(nodes)] == [
        "consent:opt_out_all:default",
        "consent:opt_in:default",
    ]


async def test_help_from_a_stranger_on_a_is_answered_once(nodes: Nodes) -> None:
    """MSG-8 on a cluster: the program's HELP text, queued on the shared queue under
    the inbound's reply id; nothing is decided. A look-alike on B: a review only."""
    await nodes.a.sink.inbound("main", InboundSms(OTHER, "help", SHORT_CODE))
    assert await compliance(nodes, OTHER) == [("consent:help:default", "queued")]
    await nodes.b.sink.inbound("main", InboundSms(OTHER, "stopping by later", SHORT_CODE))
    assert len(await compliance(nodes, OTHER)) == 1
    staff = await caller(nodes.a, "consent", "phi")
    assert (await nodes.a.usecases.consent.lookup(staff, OTHER)).history == ()
    assert [r.reason for r in await nodes.a.usecases.consent.reviews(staff)] == ["ambiguous"]


async def test_an_auto_responder_answering_both_nodes_is_cut_at_the_limit(
    nodes: Nodes, clock: FakeClock
) -> None:
    """R-OPT-1: a phone echoing HELP to whatever it gets, its texts landing on either
    node: three answers an hour in all (`auto_replies_per_hour`), then silence."""
    for n in range(6):
        gw = nodes.a if n % 2 == 0 else nodes.b
        await gw.sink.inbound("main", InboundSms(OTHER, "HELP", SHORT_CODE))
        clock.advance(1)
    assert await compliance(nodes, OTHER) == [("consent:help:default", "queued")] * 3


async def test_a_revocation_on_b_opts_out_and_is_reviewed_from_a(
    nodes: Nodes, clock: FakeClock
) -> None:
    """MSG-4 on a cluster: "please stop texting me" to B opts out (confirmed once) and
    opens one review, listed with its text and resolved over A's API; once only."""
    text = "please stop texting me"
    await nodes.b.sink.inbound("main", InboundSms(CANARY_NUMBER, text, SHORT_CODE))
    assert await compliance(nodes) == [("consent:opt_out_all:default", "queued")]
    staff = await caller(nodes.b, "consent", "read", "phi")
    async with contextlib.asynccontextmanager(_api)(nodes.a, frozenset({"consent", "phi"})) as a:
        if nodes.a.cluster is not None:  # the token made in A's own store: shared now
            await nodes.a.cluster.tokens.copy_local(nodes.a.store.reader)
        r = await a.get("/api/v1/consents/reviews?texts=true")
        assert r.status == 200, await r.text()
        (item,) = (await r.json())["items"]
        assert (item["reason"], item["program"], item["text"]) == ("phrase", "default", text)
        assert item["number_masked"] == staff.mask(CANARY_NUMBER)
        clock.advance(60)
        path = f"/api/v1/consents/reviews/{item['id']}/resolve"
        r = await a.post(path, {"action": "correct"})
        assert r.status == 200, await r.text()
        done = await r.json()
        assert (done["resolution"], len(done["opt_ins"])) == ("corrected", 1)
        await _error(await a.post(path, {"action": "confirm"}), 404, "not_found")
    assert await nodes.b.usecases.consent.reviews(staff) == []
    with pytest.raises(ApiError) as again:
        await nodes.b.usecases.consent.resolve(staff, item["id"], "confirm")
    assert (again.value.status, again.value.code) == (404, "not_found")
    view = await nodes.b.usecases.consent.lookup(staff, CANARY_NUMBER)
    assert [(h.decision, h.source) for h in view.history] == [
        ("opt_out", "phrase"),
        ("opt_in", "review"),
    ]


# -- the ledger and the API's use cases (points 1 and 5) -------------------------------


async def test_optouts_and_history_recorded_on_one_node_read_on_the_other(
    nodes: Nodes,
) -> None:
    entry_id, _ = await nodes.record(nodes.a, "opt_out", note="asked by phone")
    staff = await caller(nodes.b, "consent", "phi")
    view = await nodes.b.usecases.consent.lookup(staff, CANARY_NUMBER)
    assert view.contact is not None and view.contact.number == CANARY_NUMBER
    assert [(s.program, s.scope, s.opted) for s in view.standing] == [("*", "all", "out")]
    assert [(h.id, h.decision, h.note) for h in view.history] == [
        (entry_id, "opt_out", "asked by phone")
    ]
    lifted = await nodes.b.usecases.consent.record(
        staff, DecisionRequest(CANARY_NUMBER, "opt_in", "api", lifts=True)
    )
    assert lifted.decision == "opt_in"
    staff_a = await caller(nodes.a, "consent", "phi")
    exported = [r async for r in await nodes.a.usecases.consent.export(staff_a)]
    assert [(r.decision, r.number) for r in exported] == [
        ("opt_out", CANARY_NUMBER),
        ("opt_in", CANARY_NUMBER),
    ]


async def test_a_contact_set_on_one_node_is_the_contact_on_the_other(nodes: Nodes) -> None:
    """`PUT /contacts` on a cluster: the details written on A are what B reads (the
    policy's time zone reads the same `contacts` row, `consent_store.time_zones`)."""
    staff_a = await caller(nodes.a, "consent", "phi")
    changes = ContactChanges(patient_ref="MRN-7", time_zone="Pacific/Auckland")
    written = await nodes.a.usecases.consent.put_contact(staff_a, CANARY_NUMBER, changes)
    assert (written.patient_ref, written.time_zone) == ("MRN-7", "Pacific/Auckland")
    staff_b = await caller(nodes.b, "consent", "phi")
    found = await nodes.b.usecases.consent.contact(staff_b, CANARY_NUMBER)
    assert found is not None
    assert (found.number, found.patient_ref, found.time_zone) == (
        CANARY_NUMBER,
        "MRN-7",
        "Pacific/Auckland",
    )


async def test_the_optouts_api_on_two_nodes_is_one_list(nodes: Nodes) -> None:
    """`/api/v1/optouts` over HTTP: recorded on A, read and lifted on B, lifted once;
    what a cluster does not carry yet is refused with a JSON error."""
    scopes = frozenset({"read", "phi", "consent"})
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(contextlib.asynccontextmanager(_api)(nodes.a, scopes))
        b = await stack.enter_async_context(contextlib.asynccontextmanager(_api)(nodes.b, scopes))
        for gw in (nodes.a, nodes.b):  # tokens made in a node's own store: shared at once
            if gw.cluster is not None:  # (a running node copies them each heartbeat)
                await gw.cluster.tokens.copy_local(gw.store.reader)
        r = await a.post("/api/v1/optouts", {"number": CANARY_NUMBER, "source": "phone"})
        assert r.status == 201, await r.text()
        view = await (await b.get(f"/api/v1/consents?number={CANARY_NUMBER}")).json()
        assert [(s["scope"], s["status"]) for s in view["standing"]] == [("all", "opted_out")]
        lift = f"/api/v1/optouts?number={CANARY_NUMBER.replace('+', '%2B')}"
        assert (await b.client.delete(lift, headers=b.auth())).status == 201
        await _error(await a.client.delete(lift, headers=a.auth()), 404, "not_opted_out")
        # The CSV import too (no longer 501 on a cluster): imported on B, read on A.
        r = await b.post("/api/v1/consents/import", f"number,decision\n{CANARY_NUMBER},opt_out\n")
        assert r.status == 200 and (await r.json())["appended"] == 1
        view = await (await a.get(f"/api/v1/consents?number={CANARY_NUMBER}")).json()
        assert [(s["scope"], s["status"]) for s in view["standing"]] == [("all", "opted_out")]


async def test_a_list_imported_on_a_is_the_standing_on_b_and_imports_once(
    nodes: Nodes,
) -> None:
    """`POST /consents/import` on A: its opt-out blocks what waits on B at once, an old
    row does not undo B's newer STOP, and the same list again on B appends nothing."""
    scopes = frozenset({"read", "phi", "consent"})
    who = await caller(nodes.b, "send", "read")
    waiting = (await send(nodes.b, who)).id
    staff_b = await caller(nodes.b, "consent", "phi")
    await nodes.b.usecases.consent.record(staff_b, DecisionRequest(OTHER, "opt_out", "phone"))
    text = f"number,decision,date\n{CANARY_NUMBER},opt_out,\n{OTHER},opt_in,2020-01-01\n"
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(contextlib.asynccontextmanager(_api)(nodes.a, scopes))
        b = await stack.enter_async_context(contextlib.asynccontextmanager(_api)(nodes.b, scopes))
        for gw in (nodes.a, nodes.b):
            if gw.cluster is not None:
                await gw.cluster.tokens.copy_local(gw.store.reader)
        csv_type = {"Content-Type": "text/csv"}
        first = await (await a.post("/api/v1/consents/import", text, headers=csv_type)).json()
        assert (first["appended"], first["superseded"], first["unchanged"]) == (1, 1, 0)
        assert await state(nodes, who, waiting) == (State.BLOCKED, "opted_out")
        for number in (CANARY_NUMBER, OTHER):  # OTHER: B's STOP is newer than the list's
            view = await (
                await b.get(f"/api/v1/consents?number={number.replace('+', '%2B')}")
            ).json()
            assert [(s["scope"], s["status"]) for s in view["standing"]] == [("all", "opted_out")]
        again = await (await b.post("/api/v1/consents/import", text, headers=csv_type)).json()
        assert (again["appended"], again["superseded"], again["unchanged"]) == (0, 0, 2)
    exported = [r async for r in await nodes.b.usecases.consent.export(staff_b)]
    assert [(r.number, r.decision) for r in exported] == [
        (OTHER, "opt_out"),
        (CANARY_NUMBER, "opt_out"),
        (OTHER, "opt_in"),  # kept as evidence
    ]


async def test_one_list_imported_on_a_and_b_at_once_is_appended_once(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of both imports interleave; each chunk holds its contacts' locks."""
    monkeypatch.setattr(consent_usecase, "IMPORT_CHUNK", 10)
    rows = 40
    text = "number,decision\n" + "".join(f"+1202555{i:04d},opt_out\n" for i in range(rows))

    async def imported(gw: Gateway) -> ImportReport:
        staff = await caller(gw, "consent")
        chunks = _one_chunk(text.encode())
        return await gw.usecases.consent.import_csv(staff, chunks, Options())

    first, second = await asyncio.gather(imported(nodes.a), imported(nodes.b))
    assert (first.appended + second.appended, first.unchanged + second.unchanged) == (rows, rows)
    staff = await caller(nodes.a, "consent", "phi")
    assert len([r async for r in await nodes.a.usecases.consent.export(staff)]) == rows


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_two_nodes_lifting_one_opt_out_at_once_lift_it_once(nodes: Nodes) -> None:
    from gateway.errors import ApiError

    await nodes.record(nodes.a, "opt_out")
    staff_a = await caller(nodes.a, "consent")
    staff_b = await caller(nodes.b, "consent")
    lift = DecisionRequest(CANARY_NUMBER, "opt_in", "api", lifts=True)
    results = await asyncio.gather(
        *(nodes.a.usecases.consent.record(staff_a, lift) for _ in range(4)),
        *(nodes.b.usecases.consent.record(staff_b, lift) for _ in range(4)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(refused) == 7 and {e.code for e in refused} == {"not_opted_out"}


async def test_sqlites_migrated_standing_holds_from_the_first_start(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    """`smsgw store migrate` copied an opt-out into `migrated_consent_state`: the first
    node to start merges it, and its accepts and claims honour it."""
    config = _cluster_config(tmp_path / "gw1", "gw1", pg_dsn)
    crypto.generate_master_key(config.master_key_path)
    store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
    await store.open()
    idx = store.blind_index(CANARY_NUMBER)
    await store.close()
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO migrated_consent_state (contact_idx, program, scope, opted, seq,"
            " since, source) VALUES (%s, '*', 'all', 'out', 7, %s, 'keyword')",
            (idx, NOW),
        )
        await conn.commit()
    gw = await Gateway.open(config, clock)
    try:
        await gw.start(dispatch=False)
        who = await caller(gw, "send")
        refused = await send(gw, who)
        assert (refused.status, refused.reason) == ("blocked", "opted_out")
    finally:
        await gw.stop()


# -- the ledger interface, each backend on its own (point 1) ---------------------------


def _cipher() -> FieldCipher:
    return FieldCipher({1: bytes(range(32))}, bytes(range(32, 64)))


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConsentLedger]:
    if request.param == "sqlite":
        store = Store(tmp_path / "gw.db", bytes(32))
        await store.open()
        try:
            yield SqliteLedger(store, lambda conn, entry: None)
        finally:
            await store.close()
        return
    dsn: str = request.getfixturevalue("migrated_dsn")
    async with AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False) as pool:
        async with pool.connection() as conn:
            await migrate(conn)
        yield _cluster_ledger(pool)


def _cluster_ledger(pool: Pool) -> ClusterLedger:
    cipher = _cipher()
    return ClusterLedger(pool, cipher, "gw1", reviews=ClusterReviews(pool, cipher, "gw1"))


def _entry(idx: bytes, decision: str, scope: str = "all", **more: Any) -> Entry:
    return Entry(idx, CANARY_NUMBER, decision, scope, "*", "api", NOW, **more)  # type: ignore[arg-type]


async def test_the_ledger_contract(ledger: ConsentLedger) -> None:
    idx = b"\x01" * 32
    assert await ledger.record(_entry(idx, "opt_in"), lifts=True) is None  # nothing to lift
    out = await ledger.record(_entry(idx, "opt_out", "kind:marketing", note="n"))
    written = await ledger.record(
        _entry(idx, "opt_in", "purpose:appointment", disclosure="exact text")
    )
    assert out is not None and written is not None and out[1] < written[1]
    contact = await ledger.contact(idx)
    assert contact is not None and contact.number == CANARY_NUMBER
    states = [(s.scope, s.opted, s.written) for s in await ledger.states(idx)]
    assert states == [("kind:marketing", "out", False), ("purpose:appointment", "in", True)]
    history = await ledger.history(idx)
    assert [(h.decision, h.note, h.disclosure) for h in history] == [
        ("opt_out", "n", None),
        ("opt_in", None, "exact text"),
    ]
    lifted = await ledger.record(_entry(idx, "opt_in", "kind:marketing"), lifts=True)
    assert lifted is not None
    page = await ledger.export_page(out[1], 10)
    assert [(r.seq, r.contact, r.number) for r in page] == [
        (written[1], idx.hex(), CANARY_NUMBER),
        (lifted[1], idx.hex(), CANARY_NUMBER),
    ]
    assert await ledger.contact(b"\x02" * 32) is None
    other = b"\x03" * 32  # a contact made by its details alone, then one of them cleared
    details = ContactChanges(patient_ref="MRN-0042", language="es", time_zone="America/Chicago")
    await ledger.put_contact(other, OTHER, details, NOW)
    await ledger.put_contact(other, OTHER, ContactChanges(clear=frozenset({"language"})), NOW + 1)
    made = await ledger.contact(other)
    assert made is not None
    assert (made.number, made.patient_ref, made.language, made.time_zone) == (
        OTHER,
        "MRN-0042",
        None,
        "America/Chicago",
    )
    assert made.updated_at == NOW + 1
    # An import: older than idx's standing (put back: a scope that had none stays
    # without), the same again (in the chunk's own transaction), a new contact's.
    old = dataclasses.replace(_entry(idx, "opt_in", "purpose:results"), at=NOW - 100)
    fresh = _entry(b"\x04" * 32, "opt_out")
    outcomes = await ledger.import_entries([(old, True), (old, False), (fresh, False)])
    assert outcomes == ["superseded", "unchanged", "appended"]
    assert "purpose:results" not in {s.scope for s in await ledger.states(idx)}
    assert [h.scope for h in await ledger.history(idx)][-1] == "purpose:results"  # evidence


async def test_the_cluster_ledger_is_append_only_but_for_its_texts(pool: Pool) -> None:
    ledger = _cluster_ledger(pool)
    done = await ledger.record(_entry(b"\x01" * 32, "opt_out", note="n"))
    assert done is not None
    async with pool.connection() as conn:
        for sql in (
            "UPDATE consent_ledger SET decision = 'opt_in'",
            "DELETE FROM consent_ledger",
            "TRUNCATE consent_ledger",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute(sql)
            await conn.rollback()
        await conn.execute("UPDATE consent_ledger SET note_ct = NULL")  # erasure
        await conn.commit()
    assert [h.note for h in await ledger.history(b"\x01" * 32)] == [None]


async def test_the_migrated_standing_is_merged_once(pool: Pool) -> None:
    """`smsgw store migrate` leaves SQLite's standing in `migrated_consent_state`; the
    first node's start merges it once, and the ledger's numbering moves past it so a
    decision made on the cluster is newer than every migrated one."""
    ledger = _cluster_ledger(pool)
    a = b"\x0a" * 32
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO migrated_consent_state (contact_idx, program, scope, opted, seq,"
            " since, source) VALUES (%s, '*', 'all', 'out', 500, %s, 'keyword')",
            (a, NOW),
        )
        await conn.commit()
        assert await consent_store.merge_migrated(conn) == 1
        assert await consent_store.merge_migrated(conn) == 0
    assert [(s.opted, s.source) for s in await ledger.states(a)] == [("out", "keyword")]
    later = await ledger.record(_entry(a, "opt_in", "purpose:results"))
    assert later is not None and later[1] > 500
