"""Adoption in pages (issue 18 pt 2): a survivor takes the rows no live node holds (a
dead node's, or nobody's) into its scheduler a bounded page at a time, critical first,
without decrypting them; two survivors adopting at once split them, each row once; rows
a live node holds, or only another node's routes may send, are left alone."""

from __future__ import annotations

import asyncio

from gateway.cluster.adoption import _GONE, PAGE, ClusterAdoption
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, register
from gateway.models import Priority
from gateway.scheduler import Scheduler
from gateway.store.crypto import FieldCipher
from tests.conftest import GatewayFactory
from tests.pg.queue_rows import NOW, add_messages, rows

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
            "gone": [dead.incarnation],
        }  # fmt: skip
        plan = await (await conn.execute(("EXPLAIN " + PAGE).encode(), params)).fetchall()
        holders = await (await conn.execute(("EXPLAIN " + _GONE).encode())).fetchall()
        gone = await (await conn.execute(_GONE.encode())).fetchone()
    for found in (plan, holders):
        text = "\n".join(str(line[0]) for line in found)
        assert "messages_held" in text and "Seq Scan on messages" not in text, text
    assert gone is not None and gone[0] == [dead.incarnation]
