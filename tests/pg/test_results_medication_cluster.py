"""Issue 18: results-available notices and medication schedules on a cluster.

Two gateways on one PostgreSQL (the fixture of `test_appointments_cluster.py`, whose
SQLite case runs the same steps on one gateway): a results event posted on one node is
a duplicate on the other and its notice is sent once by both nodes' runners passing
at once; a medication schedule put on one node is read on the other, and both nodes'
top-ups running at once plan each dose once.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from drivers.clock import FakeClock
from gateway.clinical.notices import NoticeState
from gateway.medication.commands import Put, PutSchedule, Timing
from gateway.results.commands import ResultsAvailable
from gateway.results.events import OrderKey
from gateway.results.recipient import Number
from tests.conftest import CANARY_NUMBER
from tests.pg.test_appointments_cluster import H, Nodes, nodes  # noqa: F401  # the fixture

DAY = 24 * H


async def test_a_results_event_posted_on_one_node_is_sent_once(
    nodes: Nodes,  # noqa: F811
    clock: FakeClock,
) -> None:
    final = ResultsAvailable(Number(CANARY_NUMBER), ((OrderKey("ord-1", "lab"), "F"),))
    recorded = await nodes.a.result_events.results_available(await nodes.staff(nodes.a), final)
    assert recorded.outcome == "notice" and recorded.notice_id is not None
    again = await nodes.b.result_events.results_available(await nodes.staff(nodes.b), final)
    assert (again.outcome, again.notice_id) == ("duplicate", None)

    clock.advance(60.0)
    a, b = nodes.a.notice_runner(nodes.a.renderer), nodes.b.notice_runner(nodes.b.renderer)
    passes = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    assert sum(p.queued for p in passes) == 1
    [message_id] = [m for p in passes for m in p.messages]
    message = await nodes.b.usecases.messages.get(await nodes.staff(nodes.b), message_id)
    assert (message.category, message.purpose) == ("result_available", "results")


async def test_a_schedule_put_on_one_node_plans_each_dose_once_with_both_top_ups(
    nodes: Nodes,  # noqa: F811
    clock: FakeClock,
) -> None:
    today = dt.datetime.fromtimestamp(clock.time(), dt.UTC).date()
    put = PutSchedule(
        Number(CANARY_NUMBER),
        Timing(("08:00", "20:00"), None, today, today + dt.timedelta(days=5), "times"),
        OrderKey("rx-1", "", "api"),
        time_zone="UTC",
        zone_fallback=False,
    )

    def render(done: Put) -> bytes:
        return done.row.id.encode()

    made = await nodes.a.medications.put(await nodes.staff(nodes.a), put, render)
    schedule_id = made.body.decode()
    for _ in range(3):  # both nodes' loops, several rounds of them, at once
        clock.advance(DAY)
        await asyncio.gather(nodes.a.medications.top_up_once(), nodes.b.medications.top_up_once())

    seen = await nodes.b.medications.get(await nodes.staff(nodes.b), schedule_id)
    due = [row.notice.due_at for row in seen.doses]
    assert len(due) == len(set(due))  # no dose planned twice
    start = dt.datetime.combine(today, dt.time(), dt.UTC).timestamp()
    # Every dose time from the schedule's start (the clock starts at 08:00 UTC) up to
    # the last top-up's horizon, once.
    expected = [
        start + day * DAY + hour * H
        for day in range(6)
        for hour in (8, 20)
        if start + day * DAY + hour * H < clock.time() + 48 * H  # the horizon: excluded
    ]
    assert sorted(due) == expected
    assert {row.state for row in seen.doses} == {NoticeState.PENDING}
