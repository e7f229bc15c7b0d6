"""Adopting queued rows no live node holds: a dead node's, or nobody's, in pages.

Theory of operation. Each queued or scheduled row names the incarnation whose scheduler
holds it (`messages.held_by`: the accepting node, or the last adopter). A survivor takes
rows into its scheduler a page at a time: the next `limit` rows in claim order (class,
due time, id) held by no live incarnation, marked as its own in the same statement with
`FOR UPDATE SKIP LOCKED`, so two survivors adopting at once split a dead node's rows
between them instead of both holding every id and racing for each claim. A page carries
what the scheduler needs to order and route a message (id, class, due, expiry,
attempts, route hint), never its body; the number is decrypted only when routes look at
it. No cursor is needed: taken rows are held and drop out of the next page's query.

A node that lost its lease and rejoined under a new incarnation still has in its
scheduler the rows its old one held; once that one lapsed, peers may adopt them. On
rejoining it takes back, in one statement, those no peer adopted yet (`take_back`), and
its scheduler drops the others (`Scheduler.rehold`): each waiting row is then held by
one live incarnation, in that node's scheduler only.

Which holders are gone. Every node polls every lease, so the poll must not grow with
what live nodes sent while a transaction holds the xmin horizon (S9): their range of
`messages_held` keeps an entry per row they ever held until VACUUM may remove it. The
poll (`_DEAD`) starts from `nodes`: it probes only the incarnations whose lease is over
and which this node has not yet found holding no waiting row, each through the index; a
dead incarnation gets no new rows, so a drained one is not read again. A sweep
(`_HOLDERS`: every holder that is not live, by a skip scan of the index) at a node's
first poll and every SWEEP_EVERY polls finds what the poll cannot see: a holder whose
`nodes` row was pruned, or a row a stale incarnation's accept committed after it was
found drained.

`servable` narrows the pages to the (route group, class) pairs this node can send (the
group is the route hint, '' for none), so a row only another node's routes may take is
left for that node. A row this node took but cannot send anyway (its routes look at the
number) is given back (`release`), as is a row accepted here for another node.

A dead incarnation whose rows only it could send (a group whose only route is its modem
bank) is probed with `servable` too: found holding none this node may send, it is
passed like a drained one (log `adoption_left_waiting`, once, with how many rows wait)
instead of having every one of its rows read and filtered out by each poll's page. Its
rows wait as their rules say: for their node (back under a new incarnation, it takes
them back), for a node with a route for their group (whose first poll, a sweep, adopts
them), or for their expiry (`ClusterQueue.expire_due`, every poll on every node, holds
no matter who). Nothing of this node changes what it may send while it runs (its routes
are its configuration), so only the sweep probes such an incarnation again (a row an
accept of it committed late). Rows this node gave back are not taken again until the
next sweep either (`release`): with routes that look at the number, each poll took,
decrypted and gave back every one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.models import Priority, State
from gateway.store.crypto import FieldCipher
from gateway.store.store import LiveMessage

log = structlog.get_logger("smsgw.cluster")

_PRIORITIES = {int(p): p for p in Priority}
_STATES = {State.QUEUED.value: State.QUEUED, State.SCHEDULED.value: State.SCHEDULED}

_WAITING = f"m.state IN ('{State.QUEUED.value}', '{State.SCHEDULED.value}')"

_LIVE = "n.recovered_at IS NULL AND n.lease_until > clock_timestamp()"

# The rows this node may send: any (`%(any)s`: its routes look at the number), or those
# of its (route group, class) pairs.
_SERVABLE = """(%(any)s OR (m.route_group, m.priority) IN
        (SELECT * FROM unnest(%(groups)s::text[], %(prios)s::int[])))"""

# Which dead incarnations (lease over, or recovered) still hold waiting rows, probing
# each by `messages_held` except those this node found holding none before
# (`%(drained)s`: NULL for them, no probe). The live ones are never probed: with the
# xmin horizon held (S9) their range of the index keeps an entry for every row they
# held and sent since, and probing it meant a heap visit per entry, every poll. A dead
# incarnation holds no new row (its lease is not renewed), so once found drained it is
# not read again; its range is walked once, by each node.
# (The probe is ordered as `messages_held` is: an EXISTS alone may be planned as a
# sequential scan to the first match, which the dead rows make long.)
# Each is answered `adopt` (it holds a waiting row this node may send), `elsewhere`
# (waiting rows, none for this node: a group whose only route is that node's modem
# bank; passed like a drained one, so its rows are not read again every poll),
# `drained`, or NULL (not probed). CASE stops at its first answer: the second probe runs
# only where the first found no row for this node.
_HOLDS = f"""(SELECT m.priority FROM messages m WHERE m.held_by = n.incarnation AND {_WAITING}
          {{}} ORDER BY m.priority, m.due_at, m.id LIMIT 1) IS NOT NULL"""  # noqa: S608
_DEAD = f"""
SELECT n.incarnation, n.node_id, CASE
    WHEN n.incarnation = ANY(%(drained)s::bigint[]) THEN NULL
    WHEN {_HOLDS.format("AND " + _SERVABLE)} THEN 'adopt'
    WHEN NOT %(any)s AND {_HOLDS.format("")} THEN 'elsewhere'
    ELSE 'drained' END
FROM nodes n WHERE NOT ({_LIVE})
"""  # noqa: S608 - fixed state names

# How many waiting rows a dead incarnation holds (once, when the probe found them all
# for other nodes: for the log line).
_HELD = f"SELECT count(*) FROM messages m WHERE m.held_by = %s AND {_WAITING}"  # noqa: S608

# The sweep, every SWEEP_EVERY polls and at a node's first: every holder of waiting
# rows that is not live, by a skip scan of `messages_held` (the planner sees which
# holders the page asks for, and so their share of the rows). It walks the live
# holders' dead entries, so it is not run every poll; it finds what `_DEAD` cannot: a
# holder whose `nodes` row was pruned, and a row an incarnation wrote after its lease
# lapsed (an accept already on its way) once it had been found drained.
_HOLDERS = f"""
WITH RECURSIVE holders(inc) AS (
    (SELECT m.held_by FROM messages m WHERE {_WAITING} AND m.held_by IS NOT NULL
     ORDER BY m.held_by LIMIT 1)
    UNION ALL
    SELECT (SELECT m.held_by FROM messages m WHERE {_WAITING} AND m.held_by > h.inc
            ORDER BY m.held_by LIMIT 1)
    FROM holders h WHERE h.inc IS NOT NULL
)
SELECT coalesce(array_agg(h.inc), '{{}}') FROM holders h
WHERE h.inc IS NOT NULL AND h.inc NOT IN (SELECT n.incarnation FROM nodes n WHERE {_LIVE})
"""  # noqa: S608 - fixed state names

SWEEP_EVERY = 30  # polls between two sweeps (a poll each lease: 5 minutes at 10 s)
# Rows given back that a page skips until the next sweep, at most (sent with each page:
# past this many the page reads them again rather than carry a longer list).
DECLINED_MAX = 5000


def probe_params(
    drained: Iterable[int], servable: Sequence[tuple[str, Priority]] | None
) -> dict[str, object]:
    """`_DEAD`'s parameters: the incarnations not to probe, and what this node may send."""
    return {"drained": sorted(drained), **_servable_params(servable)}


def _servable_params(servable: Sequence[tuple[str, Priority]] | None) -> dict[str, object]:
    return {
        "any": servable is None,
        "groups": [g for g, _ in servable or ()],
        "prios": [int(p) for _, p in servable or ()],
    }


PAGE = f"""
SELECT m.id FROM messages m
WHERE {_WAITING}
    AND m.due_at < %(before)s
    AND (m.held_by IS NULL OR m.held_by = ANY(%(gone)s::bigint[]))
    AND {_SERVABLE}
    AND m.id <> ALL(%(declined)s::text[])
ORDER BY m.priority, m.due_at, m.id
LIMIT %(n)s
FOR UPDATE OF m SKIP LOCKED
"""  # noqa: S608 - fixed state names

_TAKE = f"""
WITH page AS ({PAGE})
UPDATE messages m SET held_by = %(inc)s FROM page WHERE m.id = page.id
RETURNING m.id, m.priority, m.state, m.due_at, m.expires_at, m.attempts, m.route_hint,
    CASE WHEN %(numbers)s THEN m.to_ct END
"""  # noqa: S608 - fixed fragments


# After a rejoin: of the ids the scheduler holds, those an earlier incarnation of this
# node still holds become this one's (a peer adopting one at once either locked it first,
# and the re-check after the wait finds it the peer's, or skips it); with those this
# incarnation holds already (the snapshot is the statement's: before the update).
_TAKE_BACK = f"""
WITH back AS (
    UPDATE messages m SET held_by = %(inc)s
    WHERE m.id = ANY(%(ids)s) AND {_WAITING} AND m.held_by IN (SELECT n.incarnation
        FROM nodes n WHERE n.node_id = %(node)s AND n.incarnation < %(inc)s)
    RETURNING m.id
)
SELECT id FROM back
UNION ALL
SELECT m.id FROM messages m WHERE m.id = ANY(%(ids)s) AND {_WAITING} AND m.held_by = %(inc)s
"""  # noqa: S608 - fixed fragments


class ClusterAdoption:
    """This node's side of adoption (`Scheduler.adopt` reads it page by page)."""

    def __init__(
        self, pool: Pool, cipher: Callable[[], FieldCipher], me: Callable[[], Incarnation]
    ):
        self._pool = pool
        self._cipher = cipher  # the queue's, as it is now (a rotation replaces it)
        self._me = me
        self.pages = 0  # pages read since start (a test counts them)
        self.gone: list[int] = []  # the dead holders the last page read (a test reads it)
        # Dead incarnations found holding no waiting row this node may send.
        self._drained: set[int] = set()
        # Of those, the ones holding rows for other nodes' routes: incarnation -> rows
        # (as counted when found; logged once).
        self.left_waiting: dict[int, int] = {}
        # Rows this node gave back (it cannot send them): not taken again until a sweep.
        self._declined: set[str] = set()
        self._polls = 0

    async def page(
        self,
        due_before: float,
        limit: int,
        servable: Sequence[tuple[str, Priority]] | None,
        numbers: bool,
    ) -> list[LiveMessage]:
        """Take up to `limit` unheld rows due before `due_before`, first in claim
        order; `servable` None: of any group and class."""
        params = {
            "before": due_before,
            **_servable_params(servable),
            "n": limit,
            "inc": self._me().incarnation,
            "numbers": numbers,
        }
        async with self._pool.connection() as conn:
            params["gone"] = self.gone = await self._gone(conn, servable)
            params["declined"] = list(self._declined)
            rows = await (await conn.execute(_TAKE, params)).fetchall()
        self.pages += 1
        cipher = self._cipher() if numbers else None
        taken = [
            LiveMessage(
                r[0],
                _PRIORITIES[r[1]],
                _STATES[r[2]],
                cipher.decrypt(bytes(r[7]), r[0], "to") if cipher is not None else "",
                r[3],
                r[4],
                r[5],
                r[6],
            )
            for r in rows
        ]
        taken.sort(key=lambda m: (m.priority, m.due_at, m.id))  # RETURNING keeps no order
        return taken

    async def _gone(
        self, conn: AsyncConnection[TupleRow], servable: Sequence[tuple[str, Priority]] | None
    ) -> list[int]:
        """The dead incarnations holding waiting rows this node may send: by `_DEAD`,
        or by a sweep (`_HOLDERS`) at the first poll and every SWEEP_EVERY."""
        self._polls += 1
        if self._polls % SWEEP_EVERY == 1:
            row = await (await conn.execute(_HOLDERS)).fetchone()
            gone = [int(i) for i in row[0]] if row is not None else []
            self._drained.difference_update(gone)  # probed again at the next poll
            self.left_waiting = {i: n for i, n in self.left_waiting.items() if i in gone}
            self._declined.clear()  # given back by this node: looked at again
            return [inc for inc in gone if inc not in self.left_waiting]
        cur = await conn.execute(_DEAD, probe_params(self._drained, servable))
        probed = [(int(inc), str(node), holds) for inc, node, holds in await cur.fetchall()]
        # Only incarnations still in `nodes` are kept: the sets stay as small as they are.
        self._drained = {inc for inc, _, holds in probed if holds != "adopt"}
        self.left_waiting = {i: n for i, n in self.left_waiting.items() if i in self._drained}
        for inc, node, holds in probed:
            if holds == "elsewhere" and inc not in self.left_waiting:
                await self._count_left(conn, inc, node)
        return [inc for inc, _, holds in probed if holds == "adopt"]

    async def _count_left(self, conn: AsyncConnection[TupleRow], inc: int, node: str) -> None:
        """A dead incarnation just found holding waiting rows, none this node may
        send: say so once, with how many (they wait for a node with a route for them,
        or their expiry)."""
        row = await (await conn.execute(_HELD, (inc,))).fetchone()
        self.left_waiting[inc] = held = int(row[0]) if row is not None else 0
        log.warning("adoption_left_waiting", node=node, incarnation=inc, rows=held)

    async def release(self, message_ids: Sequence[str]) -> None:
        """Give up rows this node adopted but will not send (its routes look at their
        numbers): any node may adopt them, this one not before its next sweep."""
        if not message_ids:
            return
        if len(self._declined) + len(message_ids) > DECLINED_MAX:  # a parameter, not a table
            self._declined.clear()
        self._declined.update(message_ids)
        await self.give_up(message_ids)

    async def give_up(self, message_ids: Sequence[str]) -> None:
        """Give up rows this node holds but will not send (accepted here for another
        node's routes): any node may adopt them."""
        if not message_ids:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE messages SET held_by = NULL WHERE id = ANY(%s) AND held_by = %s",
                (list(message_ids), self._me().incarnation),
            )

    async def take_back(self, message_ids: Sequence[str]) -> list[str]:
        """After this node rejoined under a new incarnation: of `message_ids` (what its
        scheduler holds), those its earlier incarnations still hold are now held by
        this one, in one statement; the ids this incarnation holds (the rest a peer
        adopted, or they left the queue)."""
        me = self._me()
        params = {"inc": me.incarnation, "node": me.node_id, "ids": list(message_ids)}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_TAKE_BACK, params)).fetchall()
        return [str(r[0]) for r in rows]
