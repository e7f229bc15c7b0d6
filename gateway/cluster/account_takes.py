"""A carrier account's tokens around a claim on the shared queue (S6).

A claim for a route with an `account` takes its tokens from the account's shared bucket
on the claim's connection, before the claim's transaction (`buckets.take`, migration 28's
`rate_take`: `bucket_take.py`), and gives back what the claim did not use after it,
whatever became of the claim (`settle`). A claim that rides in an accept
(`ClusterQueue.claim_group_soon`) never waits for the account's row: busy, it is left to
the next round (`take_for_accept`). What this node last got per account (`grants`) and
how many of its claims got fewer tokens than they asked for (`starved`) are what the
shared rate's adaptation reads (`shared_rate.py`).

A round's claims never sit on a pooled connection waiting for the account's row (S6 on
a shared account, session 35): every claim of both nodes' rounds queued there, each on
one of the node's few pooled connections, so a critical POST waited for a connection
behind them. Now this node's round claims on an account take their tokens one at a
time (`claim_turn`: the others wait in this process, holding no connection), each
waiting at most `TAKE_LOCK_WAIT` for the row; past that (a take or a long transaction
of another node holds it) the connection goes back to the pool and the take is tried
again after a pause (`RETRY_FIRST`, doubling to `RETRY_MAX`; counted in
`busy_retries`). Settles wait at most `SETTLE_LOCK_WAIT` for a row; what one could not
give back then is `owed` and given back by the account's next settle here (until then
only fewer sends for a moment: the row still bounds every window).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from gateway.cluster import buckets
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.cluster.queue_sql import Conn
from gateway.logs import exception_summary
from gateway.store.claim_check import ACCOUNT_EMPTY, Held
from gateway.store.store import ClaimedMessage

log = structlog.get_logger("smsgw.cluster")

# Seconds a round's take / any settle waits for its row before giving the connection
# back: a take holds the row for one short statement, so longer means a queue or a
# long transaction, which the connection must not wait out.
TAKE_LOCK_WAIT = 0.005
SETTLE_LOCK_WAIT = 0.005
# Seconds before a busy take is tried again, doubling up to the last (within one token
# of a 100/s account: a bulk claim loses little, and the pauses are not a spin).
RETRY_FIRST, RETRY_MAX = 0.002, 0.016


class AccountTakes:
    """This node's takes from its routes' carrier accounts."""

    def __init__(self) -> None:
        # Route -> carrier account; a claim for the route debits its bucket.
        self.accounts: dict[str, str] = {}
        self.grants: dict[str, buckets.Grant] = {}  # each account's last grant here
        self.starved: dict[str, int] = {}  # per account: claims here that got fewer tokens
        self.busy_retries = 0  # round takes tried again: the account's row was held
        self.settles_owed = 0  # settles that left tokens `owed`: a row was held
        self._turns: dict[str, asyncio.Lock] = {}  # per account: this node's round takes
        self._owed: dict[str, tuple[int, int]] = {}  # per account: (its row, this share)

    @contextlib.asynccontextmanager
    async def claim_turn(
        self,
        pool: Pool,
        account: str,
        me: Incarnation,
        want: int,
        ids: list[str] | None = None,
    ) -> AsyncIterator[tuple[Conn, buckets.Grant]]:
        """A round claim's pooled connection and tokens (`buckets.take`), taken after this
        node's earlier round takes on `account`, never waiting on the account's row with
        the connection for more than `TAKE_LOCK_WAIT`: busy, the connection goes back to
        the pool for a pause and the take is tried again. The connection is the claim's
        for the rest of the block; the next take's turn starts once this one is taken."""
        turn = self._turns.setdefault(account, asyncio.Lock())
        pause = RETRY_FIRST
        await turn.acquire()
        taken = False
        try:
            while True:
                async with pool.connection() as conn:
                    try:
                        grant = await buckets.take(
                            conn, account, me, want, ids=ids, lock_wait=TAKE_LOCK_WAIT
                        )
                    except buckets.BucketBusy:
                        pass
                    else:
                        self.grants[account] = grant
                        taken = True
                        turn.release()
                        yield conn, grant
                        return
                self.busy_retries += 1
                await asyncio.sleep(pause)  # without the connection
                pause = min(2 * pause, RETRY_MAX)
        finally:
            if not taken:  # failed or cancelled before its take: the next one's turn
                turn.release()

    async def take_for_accept(
        self,
        conn: Conn,
        account: str,
        me: Incarnation,
        want: int,
        critical: bool,
        future: asyncio.Future[Any],
    ) -> tuple[buckets.Grant | None, bool]:
        """The tokens of a claim riding in an accept, never waiting on the account's row:
        the grant (None: none taken) and whether the row was busy. A take that failed
        otherwise fails the claim's `future`; the accept goes on, queued as usual."""
        try:
            grant = await buckets.take(conn, account, me, want, nowait=True, critical=critical)
        except buckets.BucketBusy:
            return None, True
        except Exception as e:  # the accept goes on, queued as usual
            future.set_exception(e)
            return None, False
        self.grants[account] = grant
        return grant, False

    async def settle(
        self, conn: Conn, me: Incarnation, account: str, grant: buckets.Grant, got: int, asked: int
    ) -> float:
        """After a claim: the tokens it did not use back in the account's buckets
        (`buckets.settle`), and the seconds until the next one if the claim got fewer
        than it asked for (0 if not)."""
        starved = grant.n < asked
        self.starved[account] = self.starved.get(account, 0) + starved
        owed = self._owed.pop(account, (0, 0))
        try:
            wait = await buckets.settle(
                conn, account, me, grant, got, asked, owed=owed, lock_wait=SETTLE_LOCK_WAIT
            )
        except buckets.SettleBusy as e:  # a row held: given back by the next settle here
            self.settles_owed += 1
            before = self._owed.get(account, (0, 0))  # another settle's, left meanwhile
            self._owed[account] = (before[0] + e.owed[0], before[1] + e.owed[1])
            wait = buckets.retry_after(grant, got)
        except Exception as e:  # tokens not given back: only fewer sends for a moment
            log.warning("account_settle_failed", account=account, error=exception_summary(e))
            wait = buckets.retry_after(grant, got)
        return max(wait, 1e-3) if starved else 0.0


def answers(
    ids: list[str],
    found: dict[str, ClaimedMessage | Held | str],
    short: set[str],
    wait: float,
    now: float,
) -> list[ClaimedMessage | Held | Exception | None]:
    """A claim of `ids`, answered per id: its claim, the claim check's verdict (None:
    blocked), or, for those left `short` of the account's tokens, held until the next
    token (`wait` seconds from `now`)."""
    # Not claimed for want of the account's tokens: back in the cache until a token.
    held = Held(now + wait, ACCOUNT_EMPTY)
    result: list[ClaimedMessage | Held | Exception | None] = []
    for i in ids:
        v = found.get(i)
        if isinstance(v, str):  # blocked by the claim check
            result.append(None)
        else:
            result.append(held if v is None and i in short else v)
    return result
