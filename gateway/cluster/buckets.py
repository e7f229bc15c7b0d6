"""Carrier accounts' rates across nodes: a locked bucket row, taken from before a claim.

Theory of operation. An account's row (`rate_accounts`) is a token bucket: `rate`
tokens a second, at most `burst` saved. A claim (`claims.py`, the cluster queue) first
takes its tokens (`take`): in a statement of its own it locks and refills the row on
the database's clock, so every node's takes on that account queue behind one row lock
and see one clock, and takes off as many tokens as it may claim (`reserve`). It then
claims at most that many messages in its own transaction, and once that is over gives
back what it did not claim (`settle`). In any window of T seconds the account's
claims therefore number at most `burst + rate * T` (the claims' `claimed_at` is the
take's stamp; a give-back never lifts the bucket past `burst`, so it never counts more
than a bucket that saw only the claims): configure `rate + burst` at or under the
contract's per-second figure.

Why apart from the claim (S6 on a shared account): a lock taken in the claim's
transaction is held through its statements and its commit's flush, and every claim of
every node (the rounds' bulk groups, an accept's claim) queued behind the one before:
seconds under load. A take is one statement on its own (`rate_take_reserved`, a
server-side function: `bucket_reserve.py`, `bucket_take.py`), so it holds the row for
that statement only, not across its node's round trips, and commits without waiting
for the flush (`synchronous_commit = off`): a crash that loses it loses only tokens,
unless a claim that used them committed, and that claim's commit, later in the log,
flushed it. An accept's claim takes with `NOWAIT` (`BucketBusy`): if the row is locked
it leaves its message to the next round rather than hold the accept; a critical one's
waits for the row at most `CRITICAL_LOCK_WAIT` first (a take is short, a round not).
A round's claim waits a few ms (`lock_wait`) and a settle too, then gives its pooled
connection back and tries again later (`account_takes.py`): no connection of the node
waits out a queue on the row.

Priority across nodes (S6): the bottom `reserve` tokens of an account's row are for
takes of critical messages alone (`bucket_reserve.py`, cluster schema 29). A bulk take
leaves them; a critical take (a claim with a critical message among its ids, or an
accept's of one) draws them and may also go past its node's share. So a critical
message finds a token at once although the other nodes' bulk takes every token above
the reserve as it comes; the row never goes below zero, so the windows' bound above
holds as it is. Bulk claims see a bucket of `burst - reserve` at the same rate.

Fairness: max-min shares from reported demand. Each node also has a sub-bucket per
account (`rate_shares`), and with each claim it reports what it wants a second
(`demand`): NULL (more than it gets) after a claim its own share cut short, else a
moving average of what it asked for (the due messages, whether the buckets let it take
them all or not) over the time between its claims, or what the caller states. A claim
refills this node's share at what max-min fairness gives a node that wants more: the
live nodes that claimed in the last `active_window` seconds wanting less than an equal
part get their demand, the rest is split equally among the others and this node
(`fair_share`). So a lightly loaded node does not strand tokens (A wanting 10/s of 100/s
leaves B 90/s, not 50), nodes that all want more share equally, and a node that stopped
claiming (killed) drops out one window after its last claim, long before its lease ends.
The global row still holds the cap if the shares are momentarily wrong (they add up to
more than the rate whenever a node wants less than its part: its part is an upper bound,
not a reservation). A share saves up to the account's whole `burst`, not its n-th: a
node whose claims come late (a busy machine, a slow round trip) catches up on the tokens
of its share instead of losing them, and the account's row still bounds every window.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from gateway.cluster.nodes import Incarnation

ACTIVE_WINDOW = 1.0  # seconds a node keeps counting in the shares after its last claim
DEMAND_WEIGHT = 0.25  # of the newest sample in a node's moving average of its demand
MIN_GAP = 0.05  # seconds: a shorter time between two claims counts as this long
# Seconds a critical message's accept waits for the account's row (`take(nowait=True)`):
# a take holds it for one short statement, and a message left to the next round waited
# hundreds of milliseconds for it on a loaded machine (bench/README.md, S6 on a shared
# account). As long as a critical takes a token ahead (`scheduler.CRITICAL_AHEAD_S`).
CRITICAL_LOCK_WAIT = 0.05


def fair_share(rate: float, others: list[float]) -> float:
    """Max-min: the part of `rate` a node wanting more than it gets has, when the other
    nodes want `others` a second each (`math.inf`: more than they get)."""
    rest, wanting = rate, len(others) + 1
    for demand in sorted(others):
        if demand >= rest / wanting:
            break
        rest -= demand
        wanting -= 1
    return rest / wanting


# The whole take in one statement (`bucket_reserve.py`, `bucket_take.py`).
_TAKE = "SELECT * FROM rate_take_reserved(%s, %s, %s, %s, %s, %s, %s, %s)"

# The settling statements, when on their own (autocommit), commit without waiting for
# the flush: lost in a crash, they lose only tokens given back and a demand's sample;
# and with `lock_ms` they wait at most that long for their row (`SettleBusy`). (In the
# caller's transaction both are None: its settings are kept.)
_NO_FLUSH = """(SELECT set_config('synchronous_commit',
    coalesce(%(off)s, current_setting('synchronous_commit')), true),
    set_config('lock_timeout', coalesce(%(lock_ms)s, current_setting('lock_timeout')), true)) f"""

# The tokens taken and not claimed back in the account's bucket (never past its burst).
_GIVE_BACK = f"""
UPDATE rate_accounts SET tokens = least(burst, tokens + %(back)s) FROM {_NO_FLUSH}
WHERE account = %(a)s
"""  # noqa: S608 - fixed text

# ... and in this node's share; report the demand: the caller's figure, else NULL if its
# share cut the claim short, else the moving average of what it asked for a second.
_SETTLE = f"""
UPDATE rate_shares SET tokens = least(%(burst)s, tokens + %(share_back)s),
    starved_at = CASE WHEN %(starved)s THEN stamp ELSE starved_at END,
    demand = CASE
        WHEN %(stated)s::float8 IS NOT NULL THEN %(stated)s::float8
        WHEN %(capped)s THEN NULL
        WHEN demand IS NULL OR gap IS NULL
            THEN %(asked)s / greatest(coalesce(gap, %(window)s), %(min_gap)s)
        ELSE (1 - %(weight)s) * demand + %(weight)s * %(asked)s / greatest(gap, %(min_gap)s)
    END
FROM {_NO_FLUSH}
WHERE account = %(a)s AND incarnation = %(inc)s
"""  # noqa: S608 - fixed text


class UnknownAccount(LookupError):
    """A claim named a rate account that is not configured."""


class BucketBusy(RuntimeError):
    """The account's row is locked by another take (`take(..., nowait=True)`, or past
    its `lock_wait`)."""


class SettleBusy(RuntimeError):
    """A settle's row stayed locked past its `lock_wait`: the tokens it did not give
    back yet (to the account's row, to this node's share), for a later settle (`owed`)."""

    def __init__(self, account: str, owed: tuple[int, int]) -> None:
        super().__init__(account)
        self.owed = owed


@dataclass(frozen=True, slots=True)
class Grant:
    """What the buckets allow this claim: `n` messages, stamped `stamp` (DB time)."""

    n: int
    stamp: datetime
    tokens: float  # the account's whole bucket, before the debit
    share: float  # this node's sub-bucket, before the debit
    rate: float
    burst: float
    nodes: int  # the live nodes counted in the shares, this one included
    share_rate: float  # this node's fair share, tokens a second
    floor: float = 0.0  # the account's tokens this take had to leave (the critical reserve)
    critical: bool = False  # a critical take: bound by the account's row, not the share


async def configure(
    conn: AsyncConnection[TupleRow],
    account: str,
    rate: float,
    burst: float,
    reserve: float = 0.0,
) -> None:
    """Create or change an account's bucket (a change keeps its tokens, capped). `rate`
    is the contract: the same one again keeps the rate throttling lowered it to.
    `reserve`: the bottom tokens only critical takes may draw (`bucket_reserve.py`)."""
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    if not 0 <= reserve <= burst - 1:
        raise ValueError("reserve must be >= 0 and <= burst - 1")
    await conn.execute(
        "INSERT INTO rate_accounts (account, rate, burst, tokens, contract, reserve)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (account) DO UPDATE SET burst = excluded.burst,"
        " rate = CASE WHEN rate_accounts.contract = excluded.contract THEN rate_accounts.rate"
        " ELSE excluded.rate END, contract = excluded.contract,"
        " tokens = least(rate_accounts.tokens, excluded.burst), reserve = excluded.reserve",
        (account, rate, burst, burst, rate, reserve),
    )


async def reserve(
    conn: AsyncConnection[TupleRow],
    account: str,
    me: Incarnation,
    want: int,
    active_window: float = ACTIVE_WINDOW,
    *,
    nowait: bool = False,
    ids: list[str] | None = None,
    critical: bool = False,
) -> Grant:
    """In the caller's transaction: refill and lock the account's row and this node's
    share, say how many messages may be claimed now and take that many tokens off both
    (`settle` gives back what was not claimed). `nowait`: raise `BucketBusy` rather than
    wait for the account's row (with `critical`, wait at most `CRITICAL_LOCK_WAIT`).
    `ids`: the messages to be claimed (a critical one among them may draw the reserve,
    past the share: `bucket_reserve.py`); `critical`: one is, whether its row is written
    yet or not."""
    return await _reserve(conn, account, me, want, active_window, nowait, ids, critical, flush=True)


async def take(
    conn: AsyncConnection[TupleRow],
    account: str,
    me: Incarnation,
    want: int,
    *,
    nowait: bool = False,
    ids: list[str] | None = None,
    critical: bool = False,
    lock_wait: float | None = None,
) -> Grant:
    """`reserve` before the claim's transaction, in one statement on its own that does
    not wait for the flush (in the caller's transaction if `conn` is in one).
    `lock_wait` (without `nowait`): wait at most that many seconds for the account's row,
    then raise `BucketBusy`."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return await reserve(conn, account, me, want, nowait=nowait, ids=ids, critical=critical)
    async with _alone(conn):
        return await _reserve(
            conn, account, me, want, ACTIVE_WINDOW, nowait, ids, critical,
            flush=False, lock_wait=lock_wait,
        )  # fmt: skip


async def _reserve(
    conn: AsyncConnection[TupleRow],
    account: str,
    me: Incarnation,
    want: int,
    active_window: float,
    nowait: bool,
    ids: list[str] | None,
    critical: bool,
    *,
    flush: bool,
    lock_wait: float | None = None,
) -> Grant:
    if nowait:
        lock_wait = CRITICAL_LOCK_WAIT if critical else 0.0
    params = (account, me.incarnation, want, active_window, lock_wait, not flush, ids, critical)
    try:
        cur = await conn.execute(_TAKE, params)
    except psycopg.errors.LockNotAvailable as e:
        raise BucketBusy(account) from e
    row = await cur.fetchone()
    if row is None:
        raise UnknownAccount(account)
    n, stamp, tokens, share, rate, burst, nodes, share_rate, floor, as_critical = row
    return Grant(int(n), stamp, float(tokens), float(share), float(rate), float(burst),
        int(nodes), float(share_rate), float(floor), bool(as_critical))  # fmt: skip


async def settle(
    conn: AsyncConnection[TupleRow],
    account: str,
    me: Incarnation,
    grant: Grant,
    got: int,
    asked: int,
    demand: float | None = None,
    *,
    owed: tuple[int, int] = (0, 0),
    lock_wait: float | None = None,
) -> float:
    """After the claim (statements on their own, or in the caller's transaction): give
    back the tokens taken for `grant` beyond the `got` claimed of the `asked` this node
    would have taken (what was due), and report its demand: `demand` if the caller
    states one (tokens a second), else measured from `asked`, or more than it gets if
    its own share was what cut it short (a refusal by the account's row alone says
    another node took the tokens, not that this one deserves a larger part). Returns
    `retry_after`. `owed`: tokens an earlier settle could not give back yet (to the
    account's row, to this node's share), given back too. `lock_wait` (statements on
    their own only): wait at most that many seconds for each row, else raise
    `SettleBusy` with what is still owed (a demand's sample is then lost)."""
    starved = grant.n < asked
    capped = (  # a critical take is not bound by the share: its refusal is the account's
        starved
        and not grant.critical
        and math.floor(grant.share) <= math.floor(grant.tokens - grant.floor)
    )
    back = max(0, grant.n - got)
    to_account, to_share = back + owed[0], back + owed[1]
    alone = conn.info.transaction_status == TransactionStatus.IDLE
    lock_ms = None
    if alone and lock_wait is not None:
        lock_ms = f"{max(1, round(lock_wait * 1000))}ms"
    params = {"back": to_account, "share_back": to_share, "burst": grant.burst,
        "a": account, "starved": starved, "inc": me.incarnation, "stated": demand,
        "capped": capped, "asked": asked, "window": ACTIVE_WINDOW, "min_gap": MIN_GAP,
        "weight": DEMAND_WEIGHT, "off": "off" if alone else None,
        "lock_ms": lock_ms}  # fmt: skip
    async with _alone(conn) if alone else contextlib.nullcontext():
        try:
            if to_account:  # the account's row first, as `rate_take` locks them: one order
                await conn.execute(_GIVE_BACK, params)
                to_account = 0
            await conn.execute(_SETTLE, params)
        except psycopg.errors.LockNotAvailable as e:
            if lock_ms is None:
                raise
            raise SettleBusy(account, (to_account, to_share)) from e
    return retry_after(grant, got)


def retry_after(grant: Grant, got: int) -> float:
    """Seconds until both buckets hold a whole token again for a take like `grant`
    after `got` of it were claimed (0 if they do now): above the reserve for a bulk
    take, and a critical one is bound by the account's row alone."""
    tokens, share = grant.tokens - grant.floor - got, grant.share - got
    account = (1 - tokens) / grant.rate
    if grant.critical:
        return max(0.0, account)
    return max(0.0, account, (1 - share) / grant.share_rate)


@contextlib.asynccontextmanager
async def _alone(conn: AsyncConnection[TupleRow]) -> AsyncIterator[None]:
    """Each statement in a transaction of its own (autocommit), its row locks held for
    that statement only."""
    was = conn.autocommit
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        await conn.set_autocommit(was)
