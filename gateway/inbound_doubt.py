"""Inbound messages the carrier will send again: the id each was stored under, if it was.

A message in one piece carries nothing the carrier keeps the same when it delivers it
again (SMPP's deliver_sm has no message id), so a delivery we did not acknowledge
after our attempt to store it committed after all (ESME_RX_T_APPN answered because the
database's answer to COMMIT was lost, or the node died between its COMMIT and writing
deliver_sm_resp) would come back as a second message.

Theory of operation. Every whole message is stored with a durable *mark*, in the same
transaction as its row (`inbound_doubt` in the SQLite store, or in the shared
PostgreSQL tables on a cluster): its inbound id under a keyed digest of what the
carrier will send again (route, sender, recipient, text), with the time and the owner
that delivered it (this store's process on SQLite, the node's incarnation on a
cluster). The digest is keyed with the site's blind-index key (`FieldCipher.
keyed_digest`), so every node computes the same one and the table holds no number or
text. Once the deliver_sm_resp ESME_ROK is written the mark is cleared; a delivery not
acknowledged flags its marks `failed`. Neither costs a commit of its own: both wait in
`InDoubt` and ride the next inbound transaction (one of them each), or a lazy one
`SETTLE_DELAY` later.

A delivery takes, in its transaction, the oldest mark of its digest kept less than
`keep` seconds that is in doubt: flagged failed, or owned by a process or incarnation
no longer alive (restarted, killed, its lease lapsed). If that id is stored, nothing is
stored again (`stored` False) and the mark becomes this delivery's own, cleared when it
is acknowledged. Two genuinely separate messages with the same text from one sender are
still two: each acknowledged one clears its mark, and a mark whose delivery is still in
flight on a live owner (or acknowledged, its clear not yet written) is not in doubt.

What is left. A failed delivery is flagged only when the store takes this owner's next
transaction: a redelivery reaching another node before that, while this node lives, is
stored again. An ESME_ROK written to a link the carrier had just dropped counts as
acknowledged (the driver cannot know): that redelivery is stored again too. A process
killed within `SETTLE_DELAY` of acknowledging leaves that mark: an identical message
from the same sender within `keep` is then taken for its redelivery. Marks older than
`keep` are swept (riding a transaction every `SWEEP_EVERY`). Nothing here is logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

KEEP_SECONDS = 86_400.0  # a carrier's validity period is a day or two at most
SETTLE_DELAY = 0.5  # how long clears and flags wait for an inbound transaction to ride
SWEEP_EVERY = 300.0  # how often expired marks are swept (seconds, on the sink's clock)
MAX_PENDING = 10_000  # clears kept at most while the store is away (the oldest go)
RETRY_MAX = 30.0  # the longest wait between settles while the store is away
DIGEST_PURPOSE = "inbound-doubt"

log = structlog.get_logger("smsgw.sink")


@dataclass(frozen=True, slots=True)
class Settle:
    """What rides a transaction: marks to clear ((digest, inbound id) acknowledged),
    digests whose marks of this owner to flag failed, and marks older than `expired`
    (a time) to sweep, if any."""

    cleared: tuple[tuple[bytes, str], ...] = ()
    failed: tuple[bytes, ...] = ()
    expired: float | None = None

    def __bool__(self) -> bool:
        return bool(self.cleared or self.failed or self.expired is not None)


@dataclass(frozen=True, slots=True)
class Marked:
    """A delivery's mark, for the store: its digest, how long marks are kept, and what
    else rides its transaction."""

    digest: bytes
    keep: float
    settle: Settle = field(default_factory=Settle)


@dataclass(frozen=True, slots=True)
class StoredOnce:
    """The id a delivery is stored under, and whether it stored a row (False: an
    earlier delivery not acknowledged was stored under that id)."""

    inbound_id: str
    stored: bool


class InDoubt:
    """The sink's pending clears and flags, waiting for a transaction to ride."""

    def __init__(
        self,
        settle: Callable[[Settle], Awaitable[None]],
        clock: Callable[[], float],
        keep_seconds: float = KEEP_SECONDS,
        settle_delay: float = SETTLE_DELAY,
    ) -> None:
        self._settle = settle
        self._clock = clock
        self.keep = keep_seconds
        self._delay = self._first_delay = settle_delay
        self._cleared: dict[tuple[bytes, str], None] = {}  # in order, the oldest first
        self._failed: set[bytes] = set()
        self._swept_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def riding(self, now: float) -> Settle:
        """What the next transaction takes along: taken from here, so that deliveries
        stored together do not each carry it (`unsettled` gives it back)."""
        expired = None
        if self._swept_at is None or now - self._swept_at >= SWEEP_EVERY:
            expired = now - self.keep
            self._swept_at = now
        done = Settle(tuple(self._cleared), tuple(self._failed), expired)
        self._cleared.clear()
        self._failed.clear()
        return done

    def unsettled(self, back: Settle) -> None:
        """A transaction that carried `back` did not commit (or did not say)."""
        for key in back.cleared:
            self._cleared[key] = None
        self._failed.update(back.failed)
        if back.expired is not None:
            self._swept_at = None
        if back:
            self._soon()

    def answered(self, digest: bytes, inbound_id: str, acknowledged: bool) -> None:
        """The delivery stored under `inbound_id` was acknowledged (ESME_ROK written), or
        not: its mark is cleared, or flagged failed."""
        if acknowledged:
            self._cleared[(digest, inbound_id)] = None
            while len(self._cleared) > MAX_PENDING:  # a mark left is matched at worst
                del self._cleared[next(iter(self._cleared))]
            self._soon()
        else:
            self.not_answered(digest)

    def not_answered(self, digest: bytes) -> None:
        """A delivery with this digest not acknowledged: whatever it committed, if
        anything, is in doubt."""
        self._failed.add(digest)
        self._soon()

    def _soon(self) -> None:
        if self._timer is None and self._task is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._cleared or self._failed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        done = self.riding(self._clock())
        try:
            await self._settle(done)
        except BaseException as e:  # the store is away: they ride a later transaction
            log.debug("inbound_doubt_not_settled", error=type(e).__name__)
            self._delay = min(self._delay * 2, RETRY_MAX)
            self._task = None
            self.unsettled(done)
            if not isinstance(e, Exception):
                raise
            return
        self._delay = self._first_delay
        self._task = None
        if self._cleared or self._failed:
            self._soon()

    async def aclose(self) -> None:
        """Settle what is pending now (a clean stop); a stop that cannot leaves marks
        that are matched at worst."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._cleared or self._failed:
            self._task = asyncio.get_running_loop().create_task(self._run())
            await asyncio.gather(self._task, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
