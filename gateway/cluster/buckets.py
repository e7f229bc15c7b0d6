"""Carrier accounts' rates across nodes: a locked bucket row, debited in the claim.

Theory of operation. An account's row (`rate_accounts`) is a token bucket: `rate`
tokens a second, at most `burst` saved. A claim (`claims.py`) first refills and locks it
in one UPDATE (`reserve`), on the database's clock, so every node's claims on that
account queue behind one row lock and see one clock; it then claims at most the whole
tokens there are and, still in the same transaction, takes off what it claimed
(`debit`). In any window of T seconds the account's claims therefore number at most
`burst + rate * T` (the claims' `claimed_at` is the refill's stamp): configure
`rate + burst` at or under the contract's per-second figure.

Fairness: each node also has a sub-bucket per account (`rate_shares`) refilled at
`rate / n`, where n counts this node and the other live nodes that were refused tokens
(wanted more than they got) in the last `active_window` seconds. A node with little
to send is never counted, so the nodes with a backlog share what it leaves; the global
row still holds the cap if the shares are momentarily wrong. A share saves up to the
account's whole `burst`, not its n-th: a node whose claims come late (a busy machine,
a slow round trip) catches up on the tokens of its share instead of losing them, and
the account's row still bounds every window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.nodes import Incarnation

ACTIVE_WINDOW = 1.0  # seconds a refused node keeps counting in the shares


# This node's sub-bucket, refilled at rate / n for n = 1 + the live nodes refused tokens
# lately, in one statement (a new row starts full).
_SHARE = """
WITH n AS (
    SELECT 1 + count(*) AS n FROM rate_shares s JOIN nodes d USING (incarnation)
    WHERE s.account = %(a)s AND s.incarnation <> %(inc)s
        AND s.starved_at > %(now)s - make_interval(secs => %(window)s)
        AND d.recovered_at IS NULL AND d.lease_until > %(now)s
), share AS (
    INSERT INTO rate_shares AS s (account, incarnation, tokens, stamp)
    SELECT %(a)s, %(inc)s, greatest(1, %(burst)s / n.n), %(now)s FROM n
    ON CONFLICT (account, incarnation) DO UPDATE SET
        tokens = least(%(burst)s, s.tokens + %(rate)s
            / (SELECT n FROM n) * greatest(0, extract(epoch FROM excluded.stamp - s.stamp))),
        stamp = excluded.stamp
    RETURNING s.tokens
)
SELECT share.tokens, n.n FROM share, n
"""


class UnknownAccount(LookupError):
    """A claim named a rate account that is not configured."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What the buckets allow this claim: `n` messages, stamped `stamp` (DB time)."""

    n: int
    stamp: datetime
    tokens: float  # the account's whole bucket, before the debit
    share: float  # this node's sub-bucket, before the debit
    rate: float
    nodes: int  # the n of `rate / n`


async def configure(
    conn: AsyncConnection[TupleRow], account: str, rate: float, burst: float
) -> None:
    """Create or change an account's bucket (a change keeps its tokens, capped). `rate`
    is the contract: the same one again keeps the rate throttling lowered it to."""
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    await conn.execute(
        "INSERT INTO rate_accounts (account, rate, burst, tokens, contract)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (account) DO UPDATE SET burst = excluded.burst,"
        " rate = CASE WHEN rate_accounts.contract = excluded.contract THEN rate_accounts.rate"
        " ELSE excluded.rate END, contract = excluded.contract,"
        " tokens = least(rate_accounts.tokens, excluded.burst)",
        (account, rate, burst, burst, rate),
    )


async def reserve(
    conn: AsyncConnection[TupleRow],
    account: str,
    me: Incarnation,
    want: int,
    active_window: float = ACTIVE_WINDOW,
) -> Grant:
    """In the claim's transaction: refill and lock the account's row and this node's
    share, and say how many messages may be claimed now."""
    # Lock first, then read the clock: a clock read before waiting for the lock would
    # stamp this claim earlier than the one it waited for, and refill twice over.
    await conn.execute("SELECT 1 FROM rate_accounts WHERE account = %s FOR UPDATE", (account,))
    cur = await conn.execute(
        "UPDATE rate_accounts a SET tokens = least(a.burst, a.tokens + a.rate"
        " * greatest(0, extract(epoch FROM t.now - a.stamp))), stamp = t.now"
        " FROM (SELECT clock_timestamp() AS now) t WHERE a.account = %s"
        " RETURNING a.tokens, a.rate, a.burst, a.stamp",
        (account,),
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownAccount(account)
    tokens, rate, burst, stamp = float(row[0]), float(row[1]), float(row[2]), row[3]
    cur = await conn.execute(_SHARE, {"a": account, "inc": me.incarnation, "now": stamp,
        "window": active_window, "rate": rate, "burst": burst})  # fmt: skip
    share_row = await cur.fetchone()
    assert share_row is not None
    share, nodes = float(share_row[0]), int(share_row[1])
    n = max(0, min(want, math.floor(tokens), math.floor(share)))
    return Grant(n, stamp, tokens, share, rate, nodes)


async def debit(
    conn: AsyncConnection[TupleRow],
    account: str,
    me: Incarnation,
    grant: Grant,
    got: int,
    starved: bool,
) -> float:
    """In the claim's transaction: take off what was claimed; returns the seconds until
    both buckets hold a whole token again (0 if they do now)."""
    await conn.execute(
        "WITH a AS (UPDATE rate_accounts SET tokens = tokens - %(got)s WHERE account = %(a)s)"
        " UPDATE rate_shares SET tokens = tokens - %(got)s,"
        " starved_at = CASE WHEN %(starved)s THEN stamp ELSE starved_at END"
        " WHERE account = %(a)s AND incarnation = %(inc)s",
        {"got": got, "a": account, "starved": starved, "inc": me.incarnation},
    )
    tokens, share = grant.tokens - got, grant.share - got
    return max(0.0, (1 - tokens) / grant.rate, (1 - share) / (grant.rate / grant.nodes))
