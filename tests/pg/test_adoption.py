"""Adoption in pages (issue 18 pt 2): a survivor takes the rows no live node holds (a
dead node's, or nobody's) into its scheduler a bounded page at a time, critical first,
without decrypting them; two survivors adopting at once split them, each row once; rows
a live node holds, or only another node's routes may send, are left alone."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from gateway.cluster.adoption import (
    _DEAD,
    _HOLDERS,
    PAGE,
    SWEEP_EVERY,
    ClusterAdoption,
    probe_params,
)
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, register
from gateway.cluster.queue_sql import EXPIRE_SQL
from gateway.models import Priority
from gateway.scheduler import Scheduler
from gateway.store.crypto import FieldCipher
from tests.conftest import GatewayFactory
from tests.pg.queue_rows import NOW, add_messages, rows
from tests.pg.test_claim_horizon import buffers

DUE = NOW + 1  # adopt what is due before this

DEAD, NOBODY, CRITICAL, HELD_LIVE, OTHER_GROUP = 450, 100, 50, 40, 30
ADOPTABLE = DEAD + NOBODY + CRITICAL


def no_cipher() -> FieldCipher:
    raise AssertionError("adoption decrypted a row (routes do not look at numbers)")


async def _site(pool: Pool) -> tuple[Incarnation, Incarnation, list[str]]:
    """Two live survivors a and b, a dead node's rows, nobody's, a live node's."""
    async with pool.connection() as conn:
        dead = await register(conn, "dead", 60.0)
        a = await register(conn, "a", 60.0)
        b = await register(conn, "b", 60.0)
        live = await register(conn, "c", 60.0)
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (dead.incarnation,),
        )
    held_dead = await add_messages(pool, DEAD, group="", priority=3, prefix="dead")
    unheld = await add_messages(pool, NOBODY, group="", priority=2, prefix="free")
    # Critical ones fell due last: a page in claim order takes them first all the same.
    critical = await add_messages(pool, CRITICAL, group="", priority=0, due_at=NOW, prefix="c")
    held_live = await add_messages(pool, HELD_LIVE, group="", priority=0, prefix="live")
    await add_messages(pool, OTHER_GROUP, group="elsewhere", priority=0, prefix="x")
    async with pool.connection() as conn:
        for ids, inc in ((held_dead, dead), (held_live, live)):
            await conn.execute(
                "UPDATE messages SET held_by = %s WHERE id = ANY(%s)", (inc.incarnation, ids)
            )
    return a, b, [*held_dead, *unheld, *critical]


async def test_a_survivor_adopts_in_bounded_pages_critical_first(
    pool: Pool, open_gateway: GatewayFactory
) -> None:
    a, _, adoptable = await _site(pool)
    gw = await open_gateway()
    scheduler = Scheduler(gw.store, gw.routes, gw.router, gw.config.queue, gw.clock, gw.metrics)
    scheduler.adopt_page = 100
    source = ClusterAdoption(pool, no_cipher, lambda: a)
    first_page = await source.page(DUE, 100, scheduler.servable(), False)
    assert [m.priority for m in first_page[:CRITICAL]] == [Priority.CRITICAL] * CRITICAL
    assert [m.id for m in first_page[:CRITICAL]] == sorted(adoptable[-CRITICAL:])

    taken = await scheduler.adopt(source, DUE)

    assert taken == ADOPTABLE - len(first_page)
    # One read per page of 100 and the short one that ends it: never all rows at once.
    assert source.pages == 1 + (taken // 100 + 1)
    depths = scheduler.depths()["queued"]
    normal_first = sum(m.priority is Priority.NORMAL for m in first_page)  # read above
    assert (depths["critical"], depths["normal"], depths["bulk"]) == (
        0,
        NOBODY - normal_first,
        DEAD,
    )
    held = await rows(pool, "SELECT held_by, count(*) FROM messages GROUP BY 1 ORDER BY 2")
    assert (a.incarnation, ADOPTABLE) in held
    assert await scheduler.adopt(source, DUE) == 0  # held here now: nothing left


async def test_two_survivors_adopting_at_once_take_each_row_once(pool: Pool) -> None:
    a, b, adoptable = await _site(pool)
    servable = [("", p) for p in Priority]
    got: dict[str, list[str]] = {"a": [], "b": []}

    async def adopt(name: str, me: Incarnation) -> None:
        source = ClusterAdoption(pool, no_cipher, lambda: me)
        while True:
            page = await source.page(DUE, 25, servable, False)
            got[name].extend(m.id for m in page)
            if len(page) < 25:
                return

    await asyncio.gather(adopt("a", a), adopt("b", b))

    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(adoptable)
    # What b gives up (only another node could send it) a adopts at its next look.
    given_up = got["b"][:10]
    await ClusterAdoption(pool, no_cipher, lambda: b).release(given_up)
    again = await ClusterAdoption(pool, no_cipher, lambda: a).page(DUE, 100, servable, False)
    assert sorted(m.id for m in again) == sorted(given_up)


async def test_a_node_starting_on_a_cluster_loads_only_what_no_live_node_holds(
    pool: Pool, open_gateway: GatewayFactory
) -> None:
    a, _, _ = await _site(pool)
    gw = await open_gateway()
    scheduler = Scheduler(gw.store, gw.routes, gw.router, gw.config.queue, gw.clock, gw.metrics)
    source = ClusterAdoption(pool, no_cipher, lambda: a)
    assert await scheduler.load(source) == ADOPTABLE  # not c's, not the other group's
    assert await rows(
        pool, "SELECT count(*) FROM messages WHERE held_by = %s", (a.incarnation,)
    ) == [(ADOPTABLE,)]


async def test_the_adoption_poll_reads_only_unheld_and_dead_holders_rows(pool: Pool) -> None:
    """Every node polls for unheld rows every lease: at 20,000 waiting rows held by
    live nodes the page is found through `messages_held` (a skip scan of the holders,
    then the unheld and the dead holder's rows), never by reading or sorting them all."""
    async with pool.connection() as conn:
        live = await register(conn, "live", 60.0)
        dead = await register(conn, "dead", 60.0)
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (dead.incarnation,),
        )
        await conn.execute(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at, held_by)"
            " SELECT 'w-' || i, i %% 4, CASE WHEN i %% 3 = 0 THEN 'scheduled' ELSE 'queued' END,"
            " '', '\\x01', '\\x02', '\\x03', 'gsm7', 1, 0, 0, %s - (i %% 1000), %s + 3600,"
            " CASE WHEN i <= 300 THEN %s WHEN i <= 400 THEN NULL ELSE %s END"
            " FROM generate_series(1, 20000) i",
            (NOW, NOW, dead.incarnation, live.incarnation),
        )
        await conn.execute("ANALYZE messages")
        params = {
            "before": DUE, "any": True, "groups": [], "prios": [], "n": 500,
            "gone": [dead.incarnation], "declined": [],
        }  # fmt: skip
        plan = await (await conn.execute(("EXPLAIN " + PAGE).encode(), params)).fetchall()
        drained = probe_params([], None)
        dead_plan = await (await conn.execute(("EXPLAIN " + _DEAD).encode(), drained)).fetchall()
        holders = await (await conn.execute(("EXPLAIN " + _HOLDERS).encode())).fetchall()
        gone = await (await conn.execute(_HOLDERS.encode())).fetchone()
        probed = await (await conn.execute(_DEAD.encode(), drained)).fetchall()
    for found in (plan, dead_plan, holders):
        text = "\n".join(str(line[0]) for line in found)
        assert "messages_held" in text and "Seq Scan on messages" not in text, text
    assert gone is not None and gone[0] == [dead.incarnation]
    assert probed == [(dead.incarnation, "dead", "adopt")]


CHURN = 3000  # rows a live and a restarted incarnation held and sent, the horizon held


async def _held_and_sent(conn: Any, prefix: str, holder: int, count: int, state: str) -> None:
    await conn.execute(
        "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
        " encoding, segments, created_at, updated_at, due_at, expires_at, held_by)"
        " SELECT %s || i, 2, 'queued', '', '\\x01', '\\x02', '\\x03', 'gsm7', 1, 0, 0,"
        " %s - 5, %s + 3600, %s FROM generate_series(1, %s) i",
        (prefix, NOW, NOW, holder, count),
    )
    if state != "queued":  # each leaves a dead entry in `messages_held` no VACUUM removes
        await conn.execute("UPDATE messages SET state = %s WHERE id LIKE %s", (state, prefix + "%"))


async def test_the_adoption_poll_reads_no_dead_entries_of_live_or_drained_holders(
    pool: Pool, held_horizon: Any
) -> None:
    """With xmin held, the holders' range of `messages_held` keeps an entry for every
    row they held and sent: the sweep's skip scan (`_HOLDERS`, the poll as it was) walks
    the live node's, the poll (`_DEAD`) reads none of a live holder's and, once it found
    a dead one drained, none of its either."""
    async with pool.connection() as conn:
        old = await register(conn, "a", 60.0)  # a's incarnation before its restart
        a = await register(conn, "a", 60.0)
        dead = await register(conn, "d", 60.0)
        await _held_and_sent(conn, "old-", old.incarnation, CHURN, "sent")
        await _held_and_sent(conn, "a-", a.incarnation, CHURN, "sent")
        await _held_and_sent(conn, "a-now-", a.incarnation, 5, "queued")
        await _held_and_sent(conn, "d-", dead.incarnation, 5, "queued")
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = ANY(%s)",
            ([old.incarnation, dead.incarnation],),
        )
        await conn.execute("ANALYZE messages")
    adoption = ClusterAdoption(pool, no_cipher, lambda: a)
    first = await adoption.page(DUE, 100, None, False)  # a sweep: the node's first poll
    assert sorted(m.id for m in first) == [f"d-{i}" for i in range(1, 6)]
    assert await adoption.page(DUE, 100, None, False) == []  # probes old and d, once
    assert await adoption.page(DUE, 100, None, False) == []  # probes nothing
    drained = probe_params({old.incarnation, dead.incarnation}, None)
    poll = await buffers(pool, _DEAD, drained)
    sweep = await buffers(pool, _HOLDERS, None)
    first_probe = await buffers(pool, _DEAD, probe_params([], None))
    assert poll <= 10, poll  # 0: only `nodes` is read
    # The control: the poll as it was (the sweep now), and a probe of the restarted
    # incarnation before it was found drained, walk thousands (2,600 buffers here).
    assert min(sweep, first_probe) > CHURN // 2, (sweep, first_probe)


STUCK = 3000  # rows a dead node holds that only its own modem bank may send
BANK = "bank-d"  # their group: a route eligible on the dead node only


async def _held(conn: Any, prefix: str, holder: int, count: int, group: str) -> list[str]:
    await conn.execute(
        "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
        " encoding, segments, created_at, updated_at, due_at, expires_at, held_by)"
        " SELECT %s || lpad(i::text, 6, '0'), 2, 'queued', %s, '\\x01', '\\x02', '\\x03',"
        " 'gsm7', 1, 0, 0, %s - 5, %s + 3600, %s FROM generate_series(1, %s) i",
        (prefix, group, NOW, NOW, holder, count),
    )
    return [f"{prefix}{i:06d}" for i in range(1, count + 1)]


async def test_a_dead_node_holding_rows_only_it_may_send_is_passed_not_read_every_poll(
    pool: Pool,
) -> None:
    """Issue 18 point 3: a group whose only route is a dead node's modem bank waits (or
    fails over, or expires) per its rules; the survivors' poll stops reading its rows
    every lease once it found them not theirs, and says so once."""
    async with pool.connection() as conn:
        dead = await register(conn, "dead", 60.0)
        a = await register(conn, "a", 60.0)
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (dead.incarnation,),
        )
    async with pool.connection() as conn:  # held from their insert: no dead entries
        banked = await _held(conn, "bank-", dead.incarnation, STUCK, BANK)
        mine = await _held(conn, "any-route-", dead.incarnation, 5, "")
        await conn.execute("ANALYZE messages")
    servable = [("", p) for p in Priority]  # a has no route for BANK
    adoption = ClusterAdoption(pool, no_cipher, lambda: a)

    first = await adoption.page(DUE, 100, servable, False)  # the sweep: a's first poll
    assert sorted(m.id for m in first) == mine
    with capture_logs() as logs:
        assert await adoption.page(DUE, 100, servable, False) == []  # probes: elsewhere
        assert await adoption.page(DUE, 100, servable, False) == []  # passes it
    assert adoption.gone == [] and adoption.left_waiting == {dead.incarnation: STUCK}
    left = [e for e in logs if e["event"] == "adoption_left_waiting"]
    assert [(e["node"], e["incarnation"], e["rows"]) for e in left] == [
        ("dead", dead.incarnation, STUCK)
    ]  # once
    assert await rows(
        pool, "SELECT count(*) FROM messages WHERE held_by = %s", (dead.incarnation,)
    ) == [(STUCK,)]  # left as they were: neither taken nor given back
    # The poll now: the probe reads only `nodes`, the page none of the bank's rows; the
    # page as it was (the dead holder among `gone`) read every one of them, every poll.
    poll = await buffers(pool, _DEAD, probe_params([dead.incarnation], servable))
    page = {"before": DUE, "n": 100, "declined": [], **probe_params([], servable)}
    now = await buffers(pool, PAGE, {**page, "gone": []})
    before = await buffers(pool, PAGE, {**page, "gone": [dead.incarnation]})
    assert poll <= 10 and now <= 10, (poll, now)
    assert before > STUCK // 100, before

    # Their rules: past their expiry they end (any node's sweep, every poll).
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE messages SET expires_at = %s WHERE id = ANY(%s)", (NOW - 1, banked[:10])
        )
    params = {"now": NOW, "n": 100, "node": "a", "inc": a.incarnation}
    expired = await rows(pool, EXPIRE_SQL, params)  # `ClusterQueue.expire_due`'s
    assert sorted(r[0] for r in expired) == banked[:10]
    # A node with a route for the group adopts the rest at its first poll.
    async with pool.connection() as conn:
        c = await register(conn, "c", 60.0)
    theirs = ClusterAdoption(pool, no_cipher, lambda: c)
    taken = await theirs.page(DUE, STUCK, [(BANK, p) for p in Priority], False)
    assert sorted(m.id for m in taken) == banked[10:]


async def test_rows_a_node_gave_back_are_not_taken_again_until_its_sweep(pool: Pool) -> None:
    """With routes that look at the number, a node takes rows to decrypt them and gives
    back those it cannot send: its next polls must not take them again each lease."""
    async with pool.connection() as conn:
        a = await register(conn, "a", 60.0)
    ids = await add_messages(pool, 20, group="", prefix="free")
    adoption = ClusterAdoption(pool, no_cipher, lambda: a)
    first = await adoption.page(DUE, 100, None, False)
    assert sorted(m.id for m in first) == ids
    await adoption.release(ids)
    for _ in range(SWEEP_EVERY - 1):  # every poll up to the next sweep
        assert await adoption.page(DUE, 100, None, False) == []
    again = await adoption.page(DUE, 100, None, False)  # the sweep
    assert sorted(m.id for m in again) == ids
