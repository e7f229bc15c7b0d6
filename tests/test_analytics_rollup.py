"""The rollup against a direct count over the raw rows: random event streams, folded
in random batch sizes and in waves, give the same daily sums as counting the rows
directly; incremental equals a full recompute; a crash between batches or a second
rollup racing the first counts nothing twice; days are the site's, across DST."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.analytics.days import LocalDays
from gateway.analytics.figures import latency_metric
from gateway.analytics.rollup import Rollup, catch_up_on
from gateway.analytics.streams import REPLY_WINDOW, SETTLE, STREAMS
from gateway.store.schema import migrate
from tests import analytics_rows as rows
from tests.analytics_rows import Msg
from tests.conftest import GatewayFactory

ZONE = ZoneInfo("America/New_York")
# Saturday 2027-03-13 00:00 in New York: the clocks go forward the next night.
BASE = datetime(2027, 3, 13, tzinfo=ZONE).timestamp()
CLINICS = (None, "north", "south")
FATES = ("blocked", "blocked_later", "sent", "delivered", "sent_failed", "failed", "expired",
         "queued")  # fmt: skip

Key = tuple[str, str, str, str]


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, ZONE).date().isoformat()


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    return conn


message = st.fixed_dictionaries(
    {
        "person": st.integers(0, 3),
        "campaign": st.sampled_from([None, "cmp_a", "cmp_b"]),
        "variant": st.sampled_from([None, "A", "B"]),
        "purpose": st.sampled_from([None, "informational", "marketing", "compliance"]),
        "segments": st.integers(1, 3),
        "at": st.floats(0, 3 * 86400),
        "fate": st.sampled_from(FATES),
        "reason": st.sampled_from(["no_consent", "quiet_hours", "opted_out"]),
        "route": st.sampled_from(["smsc", "modems"]),
        "delay": st.floats(0.5, 90000),
    }
)
reply = st.fixed_dictionaries(
    {
        "person": st.integers(0, 3),
        "at": st.floats(0, 4 * 86400),
        "intent": st.sampled_from([None, "confirm", "cancel", "reschedule"]),
        "consent": st.sampled_from([None, None, "opt_out", "opt_in"]),
    }
)
scenario = st.fixed_dictionaries(
    {
        "clinics": st.lists(st.sampled_from(CLINICS), min_size=4, max_size=4),
        "messages": st.lists(message, max_size=20),
        "replies": st.lists(reply, max_size=8),
        # (message index, delay, human) clicks; (message index or None, delay) opt-outs
        "clicks": st.lists(st.tuples(st.integers(0, 19), st.floats(1, 5000), st.booleans()),
                           max_size=10),
        "optouts": st.lists(st.tuples(st.integers(0, 19), st.floats(1, 5000)), max_size=4),
        "imports": st.lists(st.tuples(st.integers(0, 3), st.floats(0, 3 * 86400)), max_size=2),
    }
)  # fmt: skip


class World:
    """The scenario's rows, written to a connection, and the sums they should give."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.s = s
        self.expected: Counter[Key] = Counter()
        self.sent_at: dict[str, float] = {}
        self.msgs: list[tuple[Msg, dict[str, Any]]] = []
        self.last_time = BASE
        self.optouts_seen: set[tuple[str, float]] = set()

    def keys(self, m: Msg, route: str | None) -> list[tuple[str, str]]:
        out = [("total", ""), ("purpose", m.purpose or "none")]
        if m.campaign:
            out.append(("campaign", m.campaign))
            if m.variant:
                out.append(("template", f"{m.campaign}/{m.variant}"))
        clinic = self.s["clinics"][m.person]
        if clinic:
            out.append(("clinic", clinic))
        if route:
            out.append(("route", route))
        return out

    def count(self, keys: list[tuple[str, str]], at: float, metric: str, n: int = 1) -> None:
        self.last_time = max(self.last_time, at)
        for dim, key in keys:
            self.expected[(dim, _day(at), key, metric)] += n

    def write_contacts(self, conn: sqlite3.Connection) -> None:
        for person, clinic in enumerate(self.s["clinics"]):
            rows.add_contact(conn, person, clinic, BASE)

    def write_message(self, conn: sqlite3.Connection, i: int, d: dict[str, Any]) -> None:
        at = BASE + d["at"]
        m = Msg(f"m{i:03d}", d["person"], at, d["purpose"], d["campaign"], d["variant"],
                None, d["segments"])  # fmt: skip
        self.msgs.append((m, d))
        fate, route, later = d["fate"], d["route"], at + d["delay"]
        if fate == "blocked":
            rows.add_message(conn, m, "blocked", d["reason"])
            self.count(self.keys(m, None), at, f"blocked:{d['reason']}")
            return
        rows.add_message(conn, m)
        if fate == "blocked_later":
            rows.add_event(conn, m.id, later, "blocked", error=d["reason"])
            self.count(self.keys(m, None), later, f"blocked:{d['reason']}")
        elif fate in ("failed", "expired"):
            rows.add_event(conn, m.id, later, fate)
            self.count(self.keys(m, None), later, fate)
        elif fate != "queued":
            sent = at + 1
            rows.add_event(conn, m.id, sent, "sending", route)
            rows.add_event(conn, m.id, sent, "sent", route)
            self.sent_at[m.id] = sent
            keys = self.keys(m, route)
            self.count(keys, sent, "sent")
            self.count(keys, sent, "parts", m.segments)
            if fate in ("delivered", "sent_failed"):
                state = "delivered" if fate == "delivered" else "failed"
                rows.add_event(conn, m.id, later, state)
                self.count(keys, later, state)
                if state == "delivered":
                    self.count(keys, later, latency_metric(later - sent))

    def last_sent(self, person: int, at: float) -> Msg | None:
        found = [
            m for m, _ in self.msgs
            if m.person == person and m.created_at < at and m.created_at >= at - REPLY_WINDOW
            and m.purpose != "compliance" and self.sent_at.get(m.id, at) < at
        ]  # fmt: skip
        return max(found, key=lambda m: (m.created_at, m.id), default=None)

    def route_of(self, m: Msg) -> str | None:
        return self.s["messages"][int(m.id[1:])]["route"] if m.id in self.sent_at else None

    def write_reply(self, conn: sqlite3.Connection, i: int, d: dict[str, Any]) -> None:
        at = BASE + d["at"]
        rows.add_inbound(conn, f"in{i:03d}", d["person"], at, d["intent"], d["consent"])
        m = self.last_sent(d["person"], at)
        if d["consent"] == "opt_out":
            keys = [("total", "")] if m is None else self.keys(m, self.route_of(m))
            self.count(keys, at, "opted_out")
        elif d["consent"] is None and m is not None:
            kind = d["intent"] if d["intent"] in ("confirm", "cancel") else "other"
            self.count(self.keys(m, self.route_of(m)), at, f"replied_{kind}")

    def write_click(self, conn: sqlite3.Connection, index: int, delay: float, human: bool,
                    clicked: set[str]) -> None:  # fmt: skip
        if index >= len(self.msgs):
            return
        m, _ = self.msgs[index]
        at = m.created_at + delay
        rows.add_click(conn, m.id, at, human)
        if human:
            keys = self.keys(m, self.route_of(m))
            self.count(keys, at, "clicks")
            if m.id not in clicked:
                clicked.add(m.id)
                self.count(keys, at, "clicked")

    def write_optout(self, conn: sqlite3.Connection, index: int, delay: float) -> None:
        if index >= len(self.msgs):
            return
        m, _ = self.msgs[index]
        at = m.created_at + delay
        for scope in ("all", "kind:marketing"):  # one decision, two scopes: counted once
            rows.add_ledger(conn, m.person, at, "opt_out", message_id=m.id, source="api",
                            scope=scope)  # fmt: skip
        # A second opt-out naming the same message at the same instant cannot be told
        # from the first decision's other scopes: the ledger reads it as that decision.
        if (m.id, at) not in self.optouts_seen:
            self.optouts_seen.add((m.id, at))
            self.count(self.keys(m, self.route_of(m)), at, "opted_out")

    def waves(self) -> list[list[Any]]:
        """The scenario's writes in three waves, each a list of calls on a connection."""
        s, clicked = self.s, set[str]()
        calls: list[Any] = [self.write_contacts]
        calls += [lambda c, i=i, d=d: self.write_message(c, i, d)
                  for i, d in enumerate(s["messages"])]  # fmt: skip
        calls += [lambda c, i=i, d=d: self.write_reply(c, i, d) for i, d in enumerate(s["replies"])]
        calls += [lambda c, x=x: self.write_click(c, *x, clicked) for x in s["clicks"]]
        calls += [lambda c, x=x: self.write_optout(c, *x) for x in s["optouts"]]
        calls += [lambda c, p=p, t=t: rows.add_ledger(c, p, BASE + t, "opt_out", source="import")
                  for p, t in s["imports"]]  # fmt: skip
        third = max(1, len(calls) // 3)
        return [calls[:third], calls[third : 2 * third], calls[2 * third :]]


@settings(deadline=None, max_examples=60)
@given(s=scenario, batch=st.integers(1, 7))
def test_rollup_matches_a_direct_count_and_a_full_recompute(s: dict[str, Any], batch: int) -> None:
    world, conn = World(s), _db()
    days = LocalDays(ZONE)
    waves = world.waves()
    for n, wave in enumerate(waves, 1):  # rows arrive between rollup rounds
        for call in wave:
            call(conn)
        # Here rows are written at random times; a real one's time is its commit's, so
        # the rounds between waves read the time-ordered sources no further than BASE.
        now = world.last_time + SETTLE + 1 if n == len(waves) else BASE
        catch_up_on(conn, days, now, batch)
    incremental = rows.sums(conn)
    assert incremental == {k: v for k, v in world.expected.items() if v}
    for table in ("analytics_daily", "analytics_blocked", "analytics_cursors"):
        conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
    catch_up_on(conn, days, world.last_time + SETTLE + 1, 10_000)
    assert rows.sums(conn) == incremental


def test_a_blocked_message_waits_until_its_time_has_settled() -> None:
    conn, days = _db(), LocalDays(ZONE)
    rows.add_message(conn, Msg("m1", 0, BASE + 100), "blocked", "no_consent")
    catch_up_on(conn, days, BASE + 100 + SETTLE - 1)
    assert rows.sums(conn) == {}
    # One committed late with an earlier time is still counted: the cursor waited.
    rows.add_message(conn, Msg("m0", 0, BASE + 95), "blocked", "quiet_hours")
    catch_up_on(conn, days, BASE + 100 + SETTLE + 1)
    found = rows.sums(conn)
    assert found[("total", _day(BASE), "", "blocked:no_consent")] == 1
    assert found[("total", _day(BASE), "", "blocked:quiet_hours")] == 1


def test_days_follow_the_site_zone_across_the_dst_change() -> None:
    conn, days = _db(), LocalDays(ZONE)
    # 23:59 on Saturday and 00:01 on Sunday, New York time; then 23:59 Sunday (EDT now)
    times = [BASE + 86400 - 60, BASE + 86400 + 60, datetime(2027, 3, 14, 23, 59,
             tzinfo=ZONE).timestamp()]  # fmt: skip
    for i, at in enumerate(times):
        rows.add_message(conn, Msg(f"m{i}", 0, at - 10))
        rows.add_event(conn, f"m{i}", at, "sent", "smsc")
    catch_up_on(conn, days, times[-1] + 60)
    sent = {k[1]: v for k, v in rows.sums(conn).items() if k[0] == "total" and k[3] == "sent"}
    assert sent == {"2027-03-13": 1, "2027-03-14": 2}


def _no_show_world(conn: sqlite3.Connection) -> float:
    start = BASE + 86400
    for n in range(5):
        rows.add_contact(conn, n, "contact-clinic", BASE)
        rows.add_appointment(conn, f"apt{n}", n, start + n, "north")
    for n in (0, 1):  # reminded: a rule's reminder sent the day before
        rows.add_message(conn, Msg(f"rem{n}", n, BASE, "appointment"))
        rows.add_notice(conn, f"not{n}", n, f"rem{n}", f"apt{n}", "rul_a", variant="short")
        rows.add_event(conn, f"rem{n}", BASE + 10, "sent", "smsc")
    # apt2's reminder was sent only after the start: it does not count as reminded
    rows.add_message(conn, Msg("rem2", 2, BASE, "appointment"))
    rows.add_notice(conn, "not2", 2, "rem2", "apt2", "rul_a")
    rows.add_event(conn, "rem2", start + 100, "sent", "smsc")
    rows.set_appointment_status(conn, "apt4", "cancelled", BASE)  # not held: left out
    rows.set_appointment_status(conn, "apt0", "noshow", start + 3600)
    rows.set_appointment_status(conn, "apt3", "noshow", start + 3600)
    return start


def test_no_show_rate_with_and_without_a_reminder_per_clinic_and_rule() -> None:
    conn, days = _db(), LocalDays(ZONE)
    start = _no_show_world(conn)
    catch_up_on(conn, days, start - 1)  # not started yet: no appointment counted
    assert not [k for k in rows.sums(conn) if k[3].startswith("appointments")]
    catch_up_on(conn, days, start + 7200)
    found, day = rows.sums(conn), _day(start)
    for dim, key in (("total", ""), ("clinic", "north")):
        assert found[(dim, day, key, "appointments_reminded")] == 2
        assert found[(dim, day, key, "appointments_unreminded")] == 2  # apt2, apt3
        assert found[(dim, day, key, "noshow_reminded")] == 1
        assert found[(dim, day, key, "noshow_unreminded")] == 1
    assert found[("rule", day, "rul_a", "appointments_reminded")] == 2
    assert found[("rule", day, "rul_a", "noshow_reminded")] == 1
    # The reminder's own figures go to the appointment's clinic and the rule's variant.
    assert found[("clinic", _day(BASE + 10), "north", "sent")] == 2
    assert found[("template", _day(BASE + 10), "reminder/short", "sent")] == 2
    assert ("clinic", _day(BASE + 10), "contact-clinic", "sent") not in found


def _fill(conn: sqlite3.Connection, n: int) -> float:
    for i in range(n):
        at = BASE + i * 97.0
        rows.add_message(conn, Msg(f"m{i:04d}", i % 7, at, campaign=f"cmp_{i % 3}"))
        rows.add_event(conn, f"m{i:04d}", at + 1, "sent", "smsc")
        rows.add_event(conn, f"m{i:04d}", at + 30, "delivered")
    return BASE + n * 97.0 + 60


async def test_a_crash_between_batches_counts_nothing_twice(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway(analytics={"time_zone": "America/New_York"})
    path = gw.store.path
    end = await gw.store.writer.run(lambda conn: _fill(conn, 200))
    gw.clock.advance(end - gw.clock.time())  # type: ignore[attr-defined]
    rollup = Rollup(gw.store, gw.clock, ZONE, batch=16)
    stream = STREAMS[0]  # the message events
    for _ in range(5):  # five batches of the events, then the process dies
        await rollup.step(stream)
    await gw.stop()
    gw2 = await open_gateway(analytics={"time_zone": "America/New_York"})
    await gw2.analytics.refresh()
    after_crash = await gw2.store.writer.run(rows.sums)
    full = _db_copy_recomputed(path, end)
    assert after_crash == full
    assert sum(v for k, v in full.items() if k[0] == "total" and k[3] == "sent") == 200


def _db_copy_recomputed(path: Path, now: float) -> dict[Key, int]:
    source = sqlite3.connect(path)
    copy = sqlite3.connect(":memory:", isolation_level=None)
    source.backup(copy)
    source.close()
    for table in ("analytics_daily", "analytics_blocked", "analytics_cursors"):
        copy.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
    catch_up_on(copy, LocalDays(ZONE), now)
    return rows.sums(copy)


async def test_two_rollups_racing_count_each_row_once(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(analytics={"time_zone": "America/New_York"})
    end = await gw.store.writer.run(lambda conn: _fill(conn, 300))
    gw.clock.advance(end - gw.clock.time())  # type: ignore[attr-defined]
    racers = [Rollup(gw.store, gw.clock, ZONE, batch=25) for _ in range(3)]
    results = await asyncio.gather(*(r.catch_up() for r in racers), return_exceptions=True)
    for r in racers:  # a racer that lost a batch stopped there; a last round finishes
        await r.catch_up()
    assert all(isinstance(x, int | Exception) for x in results)
    found = await gw.store.writer.run(rows.sums)
    assert found == _db_copy_recomputed(gw.store.path, end)
    assert sum(v for k, v in found.items() if k[0] == "total" and k[3] == "delivered") == 300


def test_the_sums_table_has_a_column_for_every_metric() -> None:
    """The migration spells the columns out; the code derives them: they must agree."""
    from gateway.analytics.figures import COLUMNS

    names = [r[1] for r in _db().execute("PRAGMA table_info(analytics_daily)")]
    assert names == ["dim", "day", "key", *COLUMNS]
