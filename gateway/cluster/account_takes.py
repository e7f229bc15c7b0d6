"""A carrier account's tokens around a claim on the shared queue (S6).

A claim for a route with an `account` takes its tokens from the account's shared bucket
on the claim's connection, before the claim's transaction (`buckets.take`, migration 28's
`rate_take`: `bucket_take.py`), and gives back what the claim did not use after it,
whatever became of the claim (`settle`). A claim that rides in an accept
(`ClusterQueue.claim_group_soon`) never waits for the account's row: busy, it is left to
the next round (`take_for_accept`). What this node last got per account (`grants`) and
how many of its claims got fewer tokens than they asked for (`starved`) are what the
shared rate's adaptation reads (`shared_rate.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gateway.cluster import buckets
from gateway.cluster.nodes import Incarnation
from gateway.cluster.queue_sql import Conn
from gateway.logs import exception_summary
from gateway.store.claim_check import ACCOUNT_EMPTY, Held
from gateway.store.store import ClaimedMessage

log = structlog.get_logger("smsgw.cluster")


class AccountTakes:
    """This node's takes from its routes' carrier accounts."""

    def __init__(self) -> None:
        # Route -> carrier account; a claim for the route debits its bucket.
        self.accounts: dict[str, str] = {}
        self.grants: dict[str, buckets.Grant] = {}  # each account's last grant here
        self.starved: dict[str, int] = {}  # per account: claims here that got fewer tokens

    async def take(
        self,
        conn: Conn,
        account: str,
        me: Incarnation,
        want: int,
        *,
        ids: list[str] | None = None,
    ) -> buckets.Grant:
        """A claim's tokens, before its transaction (`buckets.take`)."""
        grant = await buckets.take(conn, account, me, want, ids=ids)
        self.grants[account] = grant
        return grant

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
        try:
            wait = await buckets.settle(conn, account, me, grant, got, asked)
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
