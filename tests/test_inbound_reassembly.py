"""Concatenated inbound SMS reassembled in the store: parts held on disk, encrypted,
joined in one transaction when the set is whole, expired as an incomplete message.

Most tests go through the gateway's own `EventSink` (what every driver calls) on a real
store and a `FakeClock`; the property test runs the store's jobs on an in-memory
SQLite connection. The SMPP path and crash tests are in test_smpp_faults.py and below.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import InboundPart, InboundSms
from drivers.clock import FakeClock
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.api.views import mask_number
from gateway.app import Gateway
from gateway.config import ConfigError, from_mapping
from gateway.inbound import join_parts, missing_marker
from gateway.store import crypto, inbound_parts
from gateway.store.inbound_parts import Filed
from gateway.store.schema import MIGRATIONS, migrate
from gateway.store.store import Store
from gateway.tokens import create_token
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    GatewayFactory,
    smsgw_process,
)
from tests.store_rows import inbound_rows
from tests.test_api import start_client
from tests.test_cli import Daemon, _init
from tests.test_store import _files, _needles, _scan

RECIPIENT = "4000"
TIMEOUT = 300.0
ROUTE = "main"


def part(
    text: str,
    seq: int,
    total: int = 3,
    *,
    reference: int = 7,
    ref_bits: int = 8,
    sender: str = CANARY_NUMBER,
    recipient: str | None = RECIPIENT,
) -> InboundSms:
    return InboundSms(sender, text, recipient, part=InboundPart(reference, ref_bits, total, seq))


async def deliver(gw: Gateway, *parts: InboundSms, route: str = ROUTE) -> None:
    for sms in parts:
        await gw.sink.inbound(route, sms)


async def inbound(gw: Gateway) -> list[tuple[str, bool]]:
    """Every stored inbound message as (text, incomplete), oldest first."""
    rows = await inbound_rows(gw.store, 100)
    return [
        (gw.store.decrypt(r["body_ct"], r["id"], "body"), bool(r["incomplete"]))
        for r in reversed(rows)
    ]


async def texts(gw: Gateway) -> list[str]:
    return [text for text, _ in await inbound(gw)]


# -- the pure part ------------------------------------------------------------------------


def test_join_parts_marks_only_absent_parts() -> None:
    assert missing_marker(2, 4) == "[part 2 of 4 missing]"
    assert join_parts({1: "a", 2: "b"}, 2) == "ab"
    assert join_parts({3: "c", 1: "a"}, 4) == "a[part 2 of 4 missing]c[part 4 of 4 missing]"
    assert join_parts({1: ""}, 2) == "[part 2 of 2 missing]"  # empty is not missing


@pytest.mark.parametrize(
    ("reference", "ref_bits", "total", "seq", "problem"),
    [
        (256, 8, 2, 1, "reference does not fit"),
        (0, 12, 2, 1, "ref_bits must be"),
        (1, 8, 2, 3, "seq <= total"),
        (1, 16, 256, 1, "total <= 255"),
        (1, 8, 2, 0, "1 <= seq"),
    ],
)
def test_impossible_parts_are_refused(
    reference: int, ref_bits: int, total: int, seq: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        InboundPart(reference, ref_bits, total, seq)


def test_a_part_shows_no_number_or_text() -> None:
    assert InboundPart(0xFFFF, 16, 255, 255).seq == 255
    shown = repr(part(CANARY_BODY, 1))
    assert CANARY_DIGITS not in shown and "CANARY" not in shown


def test_the_timeout_is_one_gateway_setting() -> None:
    assert from_mapping({}).inbound.reassembly_timeout == TIMEOUT
    assert from_mapping({"inbound": {"reassembly_timeout": 60}}).inbound.reassembly_timeout == 60
    with pytest.raises(ConfigError, match=r"^inbound.reassembly_timeout: expected a positive"):
        from_mapping({"inbound": {"reassembly_timeout": 0}})
    # The SMPP driver no longer reassembles, so it no longer has a timeout of its own.
    route = {"name": "c", "type": "smpp", "host": "h", "system_id": "s"}
    with pytest.raises(ConfigError, match=r"^routes\[0\].inbound_reassembly_timeout: unknown"):
        from_mapping({"routes": [{**route, "inbound_reassembly_timeout": 60}]})


# -- reassembly through the sink ----------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations((1, 2, 3))), ids=str)
async def test_parts_in_any_order_make_one_message(
    open_gateway: GatewayFactory, order: tuple[int, ...]
) -> None:
    gw = await open_gateway()
    words = {1: "Yes I ", 2: "will come ", 3: "on Tuesday"}
    for held, seq in enumerate(order[:-1], start=1):
        await deliver(gw, part(words[seq], seq))
        assert await gw.store.held_inbound_parts() == held
        assert await inbound(gw) == []
    await deliver(gw, part(words[order[-1]], order[-1]))
    assert await inbound(gw) == [("Yes I will come on Tuesday", False)]
    assert await gw.store.held_inbound_parts() == 0
    (row,) = await inbound_rows(gw.store, 10)
    assert gw.store.decrypt(row["sender_ct"], row["id"], "sender") == CANARY_NUMBER
    assert gw.store.decrypt(row["recipient_ct"], row["id"], "recipient") == RECIPIENT
    assert row["route"] == ROUTE


async def test_a_duplicate_part_is_held_once_and_the_first_copy_counts(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await deliver(gw, part("c", 3), part("X", 3), part("a", 1), part("a", 1))
    assert await gw.store.held_inbound_parts() == 2
    await deliver(gw, part("b", 2))
    assert await texts(gw) == ["abc"]


async def test_a_part_redelivered_after_completion_opens_no_set(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """The carrier never got the deliver_sm_resp of the last part (the link fell after
    our commit) and delivers it again, maybe the others too."""
    gw = await open_gateway()
    await deliver(gw, part("a", 1, 2), part("b", 2, 2))
    await deliver(gw, part("b", 2, 2), part("a", 1, 2))
    assert await texts(gw) == ["ab"]
    assert await gw.store.held_inbound_parts() == 0
    clock.advance(TIMEOUT * 3)
    await gw.housekeeping_once()
    assert await inbound(gw) == [("ab", False)]  # no spurious incomplete message


async def test_the_same_reference_with_other_text_after_completion_is_a_new_message(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await deliver(gw, part("a", 1, 2), part("b", 2, 2))
    await deliver(gw, part("c", 1, 2))
    assert await gw.store.held_inbound_parts() == 1
    await deliver(gw, part("b", 2, 2))  # the same text as before, but its set is new
    assert await texts(gw) == ["ab", "cb"]


async def test_sets_are_kept_apart_by_total_width_reference_numbers_and_route(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await deliver(
        gw,
        part("a", 1, 2),
        # The same reference announcing another count: another message reusing it.
        part("X", 2, 3),
        part("R", 2, 2, reference=8),
        part("W", 2, 2, ref_bits=16),
        part("S", 2, 2, sender="+12025550148"),
        part("T", 2, 2, recipient="4001"),
        part("N", 2, 2, recipient=None),
    )
    await deliver(gw, part("Q", 2, 2), route="other")
    assert await gw.store.held_inbound_parts() == 8
    await deliver(gw, part("b", 2, 2))
    assert await texts(gw) == ["ab"]
    await deliver(gw, part("Y", 1, 3), part("Z", 3, 3))
    assert await texts(gw) == ["ab", "YXZ"]
    await deliver(gw, part("w", 1, 2, ref_bits=16))
    assert await texts(gw) == ["ab", "YXZ", "wW"]
    assert await gw.store.held_inbound_parts() == 5


async def test_a_single_part_message_is_stored_at_once(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    await deliver(gw, part("whole", 1, 1), InboundSms(CANARY_NUMBER, "plain"))
    assert await texts(gw) == ["whole", "plain"]
    assert await gw.store.held_inbound_parts() == 0


# -- expiry -------------------------------------------------------------------------------


async def test_an_incomplete_set_expires_as_one_message_with_markers(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    await deliver(gw, part("a", 1, 4))
    clock.advance(100.0)
    await deliver(gw, part("c", 3, 4))
    clock.advance(TIMEOUT - 100.0 - 0.5)
    await gw.housekeeping_once()
    assert await inbound(gw) == []  # 299.5 s after its first part: still waiting
    clock.advance(0.5)
    await gw.housekeeping_once()
    expected = "a" + missing_marker(2, 4) + "c" + missing_marker(4, 4)
    assert await inbound(gw) == [(expected, True)]
    assert await gw.store.held_inbound_parts() == 0
    (row,) = await inbound_rows(gw.store, 10)
    assert row["received_at"] == clock.time() - (TIMEOUT - 100.0)  # its last part's arrival

    # A part delivered again after the expiry is one already stored: ignored. A
    # straggler never seen opens a set of its own rather than reviving the old one.
    await deliver(gw, part("a", 1, 4))
    assert await gw.store.held_inbound_parts() == 0
    await deliver(gw, part("b", 2, 4))
    assert await gw.store.held_inbound_parts() == 1


async def test_sets_expire_oldest_first_each_on_its_own_time(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(inbound={"reassembly_timeout": 100.0})
    for reference in range(5):
        await deliver(gw, part(f"m{reference}", 1, 2, reference=reference))
        clock.advance(10.0)
    # Now 50 s after the first; at 125 s the sets opened at 0, 10 and 20 are due.
    clock.advance(75.0)
    due = await gw.sink.expire_inbound()
    assert await texts(gw) == [f"m{r}" + missing_marker(2, 2) for r in range(3)]
    assert due == clock.time() + 5.0  # the set opened at 30 s
    assert await gw.store.held_inbound_parts() == 2


async def test_the_expiry_timer_stores_incomplete_sets_by_itself(
    open_gateway: GatewayFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await open_gateway(start=False, inbound={"reassembly_timeout": 60.0})
    rounds: asyncio.Queue[float | None] = asyncio.Queue()
    expire = gw.sink.expire_inbound

    async def expire_and_report() -> float | None:
        due = await expire()
        rounds.put_nowait(due)
        return due

    monkeypatch.setattr(gw.sink, "expire_inbound", expire_and_report)
    await gw.start(dispatch=True)
    async with asyncio.timeout(5.0):
        assert await rounds.get() is None  # nothing held: it sleeps a whole timeout
        await deliver(gw, part("a", 1, 2))
        clock.advance(30.0)
        await deliver(gw, part("x", 1, 2, reference=9))
        clock.advance(30.0)  # the first set is due, the second in 30 s
        assert await rounds.get() == clock.time() + 30.0
        assert await inbound(gw) == [("a" + missing_marker(2, 2), True)]
        clock.advance(30.0)
        assert await rounds.get() is None
    assert await texts(gw) == ["a" + missing_marker(2, 2), "x" + missing_marker(2, 2)]


async def test_incomplete_is_shown_by_the_api(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    await deliver(gw, part("a", 1, 2), part("b", 2, 2), part("c", 1, 2, reference=1))
    clock.advance(TIMEOUT)
    await gw.housekeeping_once()
    token = await create_token(gw.store, "t", frozenset({"read"}), gw.clock)
    client = await start_client(gw)
    try:
        resp = await client.get(
            "/api/v1/inbound", headers={"Authorization": f"Bearer {token.text}"}
        )
        assert resp.status == 200
        page = await resp.json()
        spec = await (await client.get("/api/v1/openapi.json")).json()
    finally:
        await client.close()
    assert [m["incomplete"] for m in page["inbound"]] == [True, False]  # newest first
    assert {m["sender_masked"] for m in page["inbound"]} == {mask_number(CANARY_NUMBER)}
    assert CANARY_DIGITS not in str(page)
    schema = spec["components"]["schemas"]["InboundView"]
    assert schema["properties"]["incomplete"]["type"] == "boolean"
    ok = spec["paths"]["/api/v1/inbound"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/InboundPage")


# -- at rest ------------------------------------------------------------------------------


async def test_held_parts_leave_no_plaintext_in_the_database(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    halves = (CANARY_BODY[:20], CANARY_BODY[20:])
    for reference in range(20):
        await deliver(gw, part(halves[0], 1, 2, reference=reference))
    await deliver(gw, part(halves[1], 2, 2, reference=0))  # one set completes
    needles = _needles(CANARY_NUMBER, CANARY_DIGITS, CANARY_BODY, *halves)
    assert _scan(_files(gw.config.db_path), needles) == []
    await gw.store.writer.call_outside_transaction(
        lambda c: c.execute("PRAGMA wal_checkpoint(FULL)")
    )
    assert _scan(_files(gw.config.db_path), needles) == []

    # The held rows are really there, encrypted and bound to their own row.
    cur = await gw.store.reader.execute("SELECT id, sender_ct, body_ct, set_key FROM inbound_parts")
    rows = list(await cur.fetchall())
    assert len(rows) == 19
    first, second = rows[0], rows[1]
    assert gw.store.decrypt(first["body_ct"], first["id"], "body") == halves[0]
    assert gw.store.decrypt(first["sender_ct"], first["id"], "sender") == CANARY_NUMBER
    with pytest.raises(crypto.DecryptError):
        gw.store.decrypt(first["body_ct"], second["id"], "body")
    # The set key is keyed, and not the sender's own blind index.
    assert len({r["set_key"] for r in rows}) == 19
    assert gw.store.blind_index(CANARY_NUMBER) not in {r["set_key"] for r in rows}

    clock.advance(TIMEOUT)
    await gw.housekeeping_once()
    await gw.stop()
    assert _scan(_files(gw.config.db_path), needles) == []


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _back_to_version_1(conn: sqlite3.Connection) -> None:
    """Undo every migration after the first: their tables, indexes and columns."""
    fresh = sqlite3.connect(":memory:")
    fresh.executescript(MIGRATIONS[0])

    def indexes(c: sqlite3.Connection) -> dict[str, str]:
        rows = c.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql NOT NULL"
        )
        return {r[0]: r[1] for r in rows}

    def triggers(c: sqlite3.Connection) -> set[str]:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}

    for trigger in triggers(conn) - triggers(fresh):  # before the tables and columns they use
        conn.execute(f"DROP TRIGGER {trigger}")
    for table in _tables(conn) - _tables(fresh):
        conn.execute(f"DROP TABLE {table}")
    first = indexes(fresh)
    # Indexes a later migration added or redefined (it may cover a column it added).
    for index, sql in indexes(conn).items():
        if first.get(index) != sql:
            conn.execute(f"DROP INDEX {index}")
    for table in _tables(fresh):
        extra = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        extra -= {r[1] for r in fresh.execute(f"PRAGMA table_info({table})")}
        for column in extra:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    for index, sql in first.items():
        if index not in indexes(conn):
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    fresh.close()


async def test_migration_2_keeps_inbound_rows_stored_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0] + ";PRAGMA user_version = 1;")
    version_1 = _tables(conn)
    conn.close()
    key = os.urandom(32)
    store = Store(path, key)
    await store.open()
    try:
        await store.insert_inbound("01OLD", ROUTE, CANARY_NUMBER, "STOP", None, None, 1.0)
    finally:
        await store.close()
    # Now as if that row had been written by the version before: no `incomplete` yet.
    conn = sqlite3.connect(path, isolation_level=None)
    _back_to_version_1(conn)  # what migration 2 and later made goes
    assert _tables(conn) == version_1
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()
    store = Store(path, key)
    await store.open()
    try:
        (row,) = await inbound_rows(store, 10)
        assert (row["id"], row["incomplete"]) == ("01OLD", 0)
        assert store.decrypt(row["body_ct"], row["id"], "body") == "STOP"
    finally:
        await store.close()


# -- the store's jobs, property-tested ----------------------------------------------------

_CIPHER = crypto.FieldCipher({1: os.urandom(32)}, os.urandom(32))

Message = tuple[str, int, list[str]]  # sender, reference, part texts


@st.composite
def messages(draw: st.DrawFn) -> list[Message]:
    """A few messages, some sharing a sender or a reference, none the same identity."""
    result: list[Message] = []
    for _ in range(draw(st.integers(1, 6))):
        sender = draw(st.sampled_from(["+12025550147", "+12025550148"]))
        reference = draw(st.integers(0, 2))
        parts = draw(st.lists(st.text(max_size=5), min_size=2, max_size=5))
        if all((s, r, len(p)) != (sender, reference, len(parts)) for s, r, p in result):
            result.append((sender, reference, parts))
    return result


def _memory_store() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    return conn


def _file(conn: sqlite3.Connection, sms: InboundSms, now: float) -> Filed:
    prepared = inbound_parts.prepare_part(_CIPHER, ROUTE, sms, now)
    conn.execute("BEGIN IMMEDIATE")
    filed = inbound_parts.file_part(conn, _CIPHER, prepared, now, TIMEOUT)
    conn.execute("COMMIT")
    return filed.outcome


def _stored(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    return [
        (_CIPHER.decrypt(body, row_id, "body"), incomplete)
        for row_id, body, incomplete in conn.execute(
            "SELECT id, body_ct, incomplete FROM inbound ORDER BY id"
        )
    ]


# SQLite and AES-GCM per example: the wall-clock deadline would only measure the load.
@settings(deadline=None)
@given(msgs=messages(), data=st.data())
def test_interleaved_messages_complete_exactly_once(
    msgs: list[Message], data: st.DataObject
) -> None:
    conn = _memory_store()
    arrivals = [(i, seq) for i, (_, _, p) in enumerate(msgs) for seq in range(1, len(p) + 1)]
    arrivals += data.draw(st.lists(st.sampled_from(arrivals), max_size=5))  # redeliveries
    arrivals = data.draw(st.permutations(arrivals))
    outcomes = []
    for step, (index, seq) in enumerate(arrivals):
        sender, reference, texts = msgs[index]
        sms = InboundSms(
            sender,
            texts[seq - 1],
            RECIPIENT,
            part=InboundPart(reference, 8, len(texts), seq),
        )
        outcomes.append(_file(conn, sms, float(step)))
    stored = _stored(conn)
    assert sorted(stored) == sorted(("".join(texts), 0) for _, _, texts in msgs)
    assert outcomes.count(Filed.COMPLETED) == len(msgs)
    assert conn.execute("SELECT count(*) FROM inbound_parts").fetchone()[0] == 0
    # Nothing is left to expire, however late.
    assert inbound_parts.expire_sets(conn, _CIPHER, 1e9, TIMEOUT).inbound_ids == ()
    assert len(_stored(conn)) == len(msgs)


@settings(deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 3), st.floats(0, 200)), max_size=30)
)
def test_expiry_is_never_early_never_late_and_loses_no_part(
    steps: list[tuple[int, int, float]],
) -> None:
    conn = _memory_store()
    now, received = 0.0, 0
    opened: dict[int, float] = {}  # reference -> when its open set's first part came
    for reference, seq, advance in steps:
        now += advance
        expired = inbound_parts.expire_sets(conn, _CIPHER, now, TIMEOUT)
        due = [ref for ref, first in opened.items() if first + TIMEOUT <= now]
        assert len(expired.inbound_ids) == len(due)
        for ref in due:
            del opened[ref]
        left = min(opened.values(), default=None)
        assert expired.next_due == (None if left is None else left + TIMEOUT)
        sms = InboundSms(CANARY_NUMBER, "x", None, part=InboundPart(reference, 8, 3, seq))
        outcome = _file(conn, sms, now)
        if outcome is Filed.HELD:
            opened.setdefault(reference, now)
        elif outcome is Filed.COMPLETED:
            del opened[reference]
        received += outcome is not Filed.DUPLICATE
    inbound_parts.expire_sets(conn, _CIPHER, now + TIMEOUT, TIMEOUT)
    stored = _stored(conn)
    # Every part filed is in exactly one stored message: as an "x", never as a marker.
    assert sum(text.count("x") for text, _ in stored) == received
    assert all(incomplete == ("missing" in text) for text, incomplete in stored)
    assert conn.execute("SELECT count(*) FROM inbound_parts").fetchone()[0] == 0


# -- THE crash test: kill -9 between two parts ---------------------------------------------


async def test_a_part_acknowledged_before_kill_9_is_joined_after_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real `smsgw run` bound to the SMSC simulator acknowledges part 1 of 2 and is
    killed with SIGKILL; the next `smsgw run` gets part 2 and stores the whole text."""
    text = "Yes I will come to the appointment on Tuesday at nine. " * 3
    sim_config = SimulatorConfig(password="pw", receipt_delay=0.0, redelivery_delay=0.0)
    async with SmscSimulator(sim_config) as sim:
        conf, token = await asyncio.to_thread(_init, tmp_path, capsys)
        url = await asyncio.to_thread(_add_smpp_route, conf, sim.port)

        async def wait_for(predicate: Callable[[], bool]) -> None:
            async with asyncio.timeout(20.0):
                await sim.wait_until(predicate)

        first = await _daemon(conf, url)
        try:
            await wait_for(lambda: sim.binds == 1)
            sim.inject_mo(CANARY_NUMBER, "4000", text, parts=2, reference=42, seqs=[1])
            await wait_for(lambda: sim.mo_sent == 1)
        finally:
            first.proc.kill()
            await first.proc.wait()

        second = await _daemon(conf, url)
        try:
            await wait_for(lambda: sim.binds == 2)
            sim.inject_mo(CANARY_NUMBER, "4000", text, parts=2, reference=42, seqs=[2])
            await wait_for(lambda: sim.mo_sent == 2)
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                page = await (await http.get(f"{second.url}/api/v1/inbound")).json()
        finally:
            second.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.proc.wait(), 20) == 0
        log_text = "".join(first.lines) + await second.finished()

    assert [(m["route"], m["incomplete"]) for m in page["inbound"]] == [("carrier", False)]
    assert CANARY_DIGITS not in log_text and "Tuesday" not in log_text
    store = Store(tmp_path / "smsgw.db", crypto.read_master_key(tmp_path / "master.key"))
    await store.open()
    try:
        (row,) = await inbound_rows(store, 10)
        assert store.decrypt(row["body_ct"], row["id"], "body") == text
        assert await store.held_inbound_parts() == 0
    finally:
        await store.close()


def _add_smpp_route(conf: Path, port: int) -> str:
    """Add a route to the simulator on `port` to the config; the API's URL."""
    text = conf.read_text()
    conf.write_text(
        text
        + f"""
[[routes]]
name = "carrier"
type = "smpp"
host = "127.0.0.1"
port = {port}
system_id = "smsgw"
password = "pw"
reconnect_min = 0.05
reconnect_max = 0.2
"""
    )
    listen = re.search(r'listen = "([^"]+)"', text)
    assert listen is not None
    return f"http://{listen.group(1)}"


async def _daemon(conf: Path, url: str) -> Daemon:
    """`smsgw run` on `conf`, once it listens."""
    proc = await smsgw_process("run", "--config", str(conf))
    daemon = Daemon(proc, url)
    await daemon.wait_log(lambda e: e.get("event") == "listening")
    return daemon
