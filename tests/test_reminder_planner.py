"""The reminder planner in the writer's transaction: planned on booking, re-planned on
every change (never two pending per appointment and rule), rule versions immutable and
re-planned over upcoming appointments, the REMINDER recheck."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clinical import notices
from gateway.clinical.commands import ClinicalHooks
from gateway.clinical.notices import NoticeKind, NoticeState
from gateway.reminders import demo, rules
from gateway.reminders.planner import Planner, recheck_reminder
from gateway.reminders.rules import RuleSpec, Variant
from gateway.store.store import Store
from tests.clinical_rows import Booking, book, change, context
from tests.conftest import GatewayFactory

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=NY).timestamp()
START = datetime(2026, 6, 10, 9, 0, tzinfo=NY).timestamp()
H = 3600.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db", bytes(32))
    await s.open()
    yield s
    await s.close()


def _hooks() -> tuple[Planner, ClinicalHooks]:
    planner, hooks = Planner(), ClinicalHooks()
    planner.install(hooks)
    return planner, hooks


def _pending(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in conn.execute(
            "SELECT appointment_id, rule_id, rule_version, appt_version, due_at FROM"
            " clinical_notices WHERE state = 'pending' ORDER BY due_at"
        )
    ]


async def test_booking_plans_each_matching_rule_and_a_move_replans(store: Store) -> None:
    _, hooks = _hooks()
    ctx = context(store, NOW, hooks)

    def job(conn: sqlite3.Connection) -> dict[str, Any]:
        cipher = ctx.cipher
        r72 = rules.save(conn, None, RuleSpec("72h", "-3d", "reminder", "18:00"), "t", NOW)
        r2 = rules.save(conn, None, RuleSpec("2h", "-2h", "reminder"), "t", NOW)
        other = RuleSpec("derm", "-1d", "reminder", services=("DERM",))
        rules.save(conn, None, other, "t", NOW)
        assert r72 and r2
        appt = book(conn, ctx, Booking(START))
        first = _pending(conn)
        rows = notices.of_appointment(conn, cipher, appt)
        change(conn, ctx, appt, start_at=START + 24 * H)  # moved a day later
        second = _pending(conn)
        superseded = [
            r.id for r in notices.of_appointment(conn, cipher, appt)
            if r.state is NoticeState.SUPERSEDED
        ]  # fmt: skip
        change(conn, ctx, appt, status="cancelled")
        return {
            "r72": r72.id, "r2": r2.id, "appt": appt, "first": first, "rows": rows,
            "second": second, "superseded": superseded, "third": _pending(conn),
            "closed": [(r.state, r.reason) for r in notices.of_appointment(conn, cipher, appt)],
        }  # fmt: skip

    out = await store.writer.run(job)
    evening = datetime(2026, 6, 7, 18, 0, tzinfo=NY).timestamp()
    assert out["first"] == [
        (out["appt"], out["r72"], 1, 1, evening),
        (out["appt"], out["r2"], 1, 1, START - 2 * H),
    ]
    row = out["rows"][0]
    assert row.notice.kind is NoticeKind.REMINDER and row.notice.language == "es"
    assert row.notice.expires_at == START and row.notice.purpose == "appointment"
    assert row.notice.variables == {
        "start": "2026-06-10T09:00:00-04:00",
        "time_zone": "America/New_York",
        "short_code": "1234",
        "clinic": "North Clinic",
        "location": "Room 4",
        "provider": "Dr Rivera",
        "service": "CARDIO",
        "split_key": out["appt"],
    }
    assert out["second"] == [
        (out["appt"], out["r72"], 1, 2, evening + 24 * H),
        (out["appt"], out["r2"], 1, 2, START + 22 * H),
    ]
    assert len(out["superseded"]) == 2
    assert out["third"] == []
    assert ("cancelled", "not_booked") in [(s.value, r) for s, r in out["closed"]]


async def test_filters_past_times_and_numbers(store: Store) -> None:
    _, hooks = _hooks()
    ctx = context(store, NOW, hooks)

    def job(conn: sqlite3.Connection) -> list[list[tuple[Any, ...]]]:
        rules.save(
            conn, None,
            RuleSpec("f", "-2h", "reminder", services=("cardio",), locations=("NORTH", "SOUTH"),
                     appointment_types=("FOLLOWUP",)),
            "t", NOW,
        )  # fmt: skip
        seen = []
        for booking in (
            Booking(START),  # matches (services compared case-insensitively)
            Booking(START, service="DERM", mrn="M2"),
            Booking(START, location=None, mrn="M3"),
            Booking(START, appt_type="NEW", mrn="M4"),
            Booking(NOW + H, mrn="M5"),  # 2 h before is already past
            Booking(START, number=None, mrn="M6"),  # no number to text
            Booking(START, status="proposed", mrn="M7"),
        ):
            appt = book(conn, ctx, booking)
            seen.append([p for p in _pending(conn) if p[0] == appt])
        return seen

    seen = await store.writer.run(job)
    assert [len(s) for s in seen] == [1, 0, 0, 0, 0, 0, 0]


async def test_a_rule_edit_is_a_new_version_and_replans_upcoming_appointments(
    store: Store,
) -> None:
    planner, hooks = _hooks()
    ctx = context(store, NOW, hooks)

    def job(conn: sqlite3.Connection) -> dict[str, Any]:
        cipher = ctx.cipher
        rule = rules.save(conn, None, RuleSpec("r", "-2h", "reminder"), "t", NOW)
        assert rule is not None
        a = book(conn, ctx, Booking(START))
        b = book(conn, ctx, Booking(START + 48 * H, mrn="M2"))
        before = _pending(conn)
        # a's reminder was already sent at this version: the edit does not send it again
        notices.finish(conn, notices.of_appointment(conn, cipher, a)[0].id,
                       NoticeState.QUEUED, NOW, message_id="m1")  # fmt: skip
        edited = rules.save(conn, rule.id, RuleSpec("r", "-1d", "reminder", "17:00"), "t", NOW)
        assert edited is not None
        planned = planner.replan_rule(conn, cipher, edited, NOW)
        after = _pending(conn)
        off = rules.save(conn, rule.id, RuleSpec("r", "-1d", "reminder", active=False), "u", NOW)
        assert off is not None
        planner.replan_rule(conn, cipher, off, NOW)
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute("UPDATE reminder_rules SET lead = '-5h' WHERE id = ?", (rule.id,))
        with pytest.raises(sqlite3.IntegrityError, match="kept"):
            conn.execute("DELETE FROM reminder_rules WHERE id = ?", (rule.id,))
        return {
            "a": a, "b": b, "rule": rule.id, "before": before, "after": after,
            "planned": planned, "final": _pending(conn),
            "versions": [(r.version, r.spec.lead, r.spec.active, r.current)
                         for r in rules.history(conn, rule.id)],
            "current": rules.current(conn),
        }  # fmt: skip

    out = await store.writer.run(job)
    assert [p[:3] for p in out["before"]] == [
        (out["a"], out["rule"], 1),
        (out["b"], out["rule"], 1),
    ]
    evening = datetime(2026, 6, 11, 17, 0, tzinfo=NY).timestamp()
    assert out["after"] == [(out["b"], out["rule"], 2, 1, evening)]
    assert len(out["planned"]) == 1
    assert out["final"] == []
    assert out["versions"] == [
        (1, "-2h", True, False), (2, "-1d", True, False), (3, "-1d", False, True)
    ]  # fmt: skip
    assert [(r.version, r.spec.active) for r in out["current"]] == [(3, False)]


async def test_the_recheck_says_why_a_reminder_no_longer_goes(store: Store) -> None:
    _, hooks = _hooks()
    ctx = context(store, NOW, hooks)

    def job(conn: sqlite3.Connection) -> list[str | None]:
        cipher = ctx.cipher
        rules.save(conn, None, RuleSpec("r", "-2h", "reminder"), "t", NOW)
        appt = book(conn, ctx, Booking(START))
        row = notices.of_appointment(conn, cipher, appt)[0]
        reasons = [recheck_reminder(conn, row, START - 2 * H)]
        reasons.append(recheck_reminder(conn, row, START + 1))
        conn.execute("UPDATE appointments SET start_at = ? WHERE id = ?", (START + H, appt))
        reasons.append(recheck_reminder(conn, row, NOW))
        conn.execute("UPDATE appointments SET version = 2 WHERE id = ?", (appt,))
        reasons.append(recheck_reminder(conn, row, NOW))
        conn.execute("UPDATE appointments SET status = 'noshow' WHERE id = ?", (appt,))
        reasons.append(recheck_reminder(conn, row, NOW))
        conn.execute("UPDATE appointments SET status = 'booked', version = 1, start_at = ?"
                     " WHERE id = ?", (START, appt))  # fmt: skip
        rules.save(conn, row.notice.rule_id, RuleSpec("r", "-3h", "reminder"), "t", NOW)
        reasons.append(recheck_reminder(conn, row, NOW))
        return reasons

    assert await store.writer.run(job) == [
        None, "start_passed", "start_moved", "appointment_changed", "not_booked", "rule_changed"
    ]  # fmt: skip


async def test_variants_are_stable_per_appointment_and_follow_the_weights(store: Store) -> None:
    spec = RuleSpec("ab", "-2h", "reminder", variants=(Variant("a", 3), Variant("b", 1)))

    def job(conn: sqlite3.Connection) -> list[str | None]:
        rule = rules.save(conn, None, spec, "t", NOW)
        assert rule is not None
        return [rule.variant_for(f"apt_{i}") for i in range(2000)]

    picks = await store.writer.run(job)
    assert 0.70 < picks.count("a") / len(picks) < 0.80 and set(picks) == {"a", "b"}
    again = rules.Rule("rul_x", 1, spec, "t", NOW)
    assert again.variant_for("apt_1") == again.variant_for("apt_1")


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("book"), st.integers(0, 3), st.integers(-48, 400)),
        st.tuples(st.just("move"), st.integers(0, 3), st.integers(-48, 400)),
        st.tuples(st.just("status"), st.integers(0, 3), st.sampled_from(["booked", "cancelled"])),
        st.tuples(st.just("rule"), st.integers(0, 2), st.sampled_from(["-2h", "-1d", "-3d"])),
        st.tuples(st.just("off"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("time"), st.just(0), st.integers(0, 200)),
    ),
    max_size=14,
)


async def test_replanning_never_leaves_two_pending_per_appointment_and_rule(
    store: Store,
) -> None:
    """Random books, moves, cancellations, rule edits and time passing: after each
    step every pending reminder is for a booked appointment at its current version,
    from its rule's current version, due after the step's time and before the start,
    and there is at most one per (appointment, rule)."""
    planner, hooks = _hooks()

    def run(conn: sqlite3.Connection) -> None:
        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(ops=OPS)
        def check(ops: list[tuple[str, int, Any]]) -> None:
            conn.execute("SAVEPOINT example")
            try:
                _play(conn, store, planner, hooks, ops)
            finally:
                conn.execute("ROLLBACK TO example")
                conn.execute("RELEASE example")

        check()

    await store.writer.run(run)


def _play(
    conn: sqlite3.Connection,
    store: Store,
    planner: Planner,
    hooks: ClinicalHooks,
    ops: list[tuple[str, int, Any]],
) -> None:
    now = NOW
    appts: dict[int, str] = {}
    rule_ids: dict[int, str] = {}
    for op, i, arg in ops:
        ctx = context(store, now, hooks)
        if op == "book" and i not in appts:
            appts[i] = book(conn, ctx, Booking(NOW + arg * H, mrn=f"M{i}"))
        elif op == "move" and i in appts:
            change(conn, ctx, appts[i], start_at=NOW + arg * H)
        elif op == "status" and i in appts:
            change(conn, ctx, appts[i], status=arg)
        elif op in ("rule", "off"):
            spec = RuleSpec(f"r{i}", arg if op == "rule" else "-2h", "reminder",
                            active=op == "rule")  # fmt: skip
            rule = rules.save(conn, rule_ids.get(i), spec, "t", now)
            if rule is None:  # "off" before the rule exists: a new, inactive rule
                continue
            rule_ids[i] = rule.id
            planner.replan_rule(conn, ctx.cipher, rule, now)
        elif op == "time":
            now += arg * H
        _invariants(conn, now)


def _invariants(conn: sqlite3.Connection, now: float) -> None:
    rows = conn.execute(
        "SELECT n.appointment_id, n.rule_id, n.due_at, n.appt_version, n.rule_version,"
        " a.version, a.status, a.start_at, r.version, r.active FROM clinical_notices n"
        " JOIN appointments a ON a.id = n.appointment_id"
        " JOIN reminder_rules r ON r.id = n.rule_id AND r.current = 1"
        " WHERE n.state = 'pending'"
    ).fetchall()
    pairs = [(r[0], r[1]) for r in rows]
    assert len(pairs) == len(set(pairs))
    for _, _, due, appt_v, rule_v, version, status, start, current_v, active in rows:
        assert status == "booked" and appt_v == version and rule_v == current_v and active
        assert due < start
    total = conn.execute(
        "SELECT count(*) FROM clinical_notices WHERE state = 'pending'"
    ).fetchone()[0]
    assert total == len(rows)  # none left behind by a rule or appointment that changed


async def test_the_demo_seeds_its_rules_once(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    assert await demo.seed(gw.reminder_rules) == 2
    assert await demo.seed(gw.reminder_rules) == 0  # never over a site's own rules
    made = await gw.reminder_rules.list_rules(demo._DEMO)
    assert sorted((r.spec.lead, r.spec.delivery_time, r.actor) for r in made) == [
        ("-1d", "18:00", "system:demo"),
        ("-2h", None, "system:demo"),
    ]
