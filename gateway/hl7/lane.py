"""The outbound lane: HL7 messages queued in `hl7_outbound` (reply write-back, see
`gateway.clinical.outbound`) sent to their EHR one at a time, in order.

Theory of operation. Per outbound interface, one task takes the oldest due `pending`
row, sends it with the MLLP client and waits for its ACK. AA/CA: `acked`. AE/CE: the
EHR refused the content, a resend would fail the same: `parked` for staff. AR/CR, a
timeout or a broken connection: `pending` again after a back-off that doubles from
`backoff_initial` to `backoff_max`, until `retries` more attempts failed: `parked`.
Every outcome is one conditional UPDATE on the writer (`WHERE state = 'pending'`), so a
row cancelled or re-sent meanwhile is not overwritten. `run_due()` drains what is due
now, for tests; `run()` loops on the gateway clock.

The rows are the `ClinicalDb`'s: the node's SQLite, or on a cluster the shared
PostgreSQL (cluster migration 23), where every node runs a lane per interface but only
the one that leads it (`leadership`, a session advisory lock per interface as the
outbox lanes take, `cluster/outbox_lanes.py`) sends: one connection to the EHR, the
rows in order. A leader that dies loses the lock with its session and a survivor takes
the lane on its next round.

At least once, and a repeat is flagged. Before its bytes leave, an attempt is marked
on its row (`sending_at`, committed; cleared with the outcome). A row picked with the
mark still on was cut off mid-attempt (its leader died or was fenced, or this node
crashed), and one whose ACK never came (a timeout, a connection lost after the write)
may have reached the EHR: either is flagged `possible_duplicate` and goes again with
its control id (MSH-10), which lets the EHR drop it. A connection that never opened
sent nothing, and an AR was an answer: neither flags.
"""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

import structlog

from drivers.clock import Clock
from gateway.clinical.db import ClinicalDb
from gateway.clinical.outbound import OutboundState
from gateway.hl7.client import Ack, MllpClient, MllpError, NotConnected
from gateway.hl7.settings import Hl7Interface

log = structlog.get_logger("smsgw.hl7")

POLL = 1.0  # rows are queued by other parts' transactions: look again this often


class Leadership(Protocol):
    """Which node sends a lane's rows (`cluster.outbox_lanes.LaneLocks`)."""

    def lead(self, consumer: str) -> Awaitable[bool]: ...

    def close(self) -> Awaitable[None]: ...


def lane_name(iface: Hl7Interface) -> str:
    """The lane's leadership name (beside the outbox consumers' names)."""
    return f"hl7_out:{iface.name}"


@dataclass(frozen=True, slots=True)
class Due:
    id: str
    control_id: str
    message: str
    attempts: int
    cut_off: bool  # an earlier attempt's mark is still on: its fate is unknown


def backoff(iface: Hl7Interface, attempts: int) -> float:
    return float(min(iface.backoff_max, iface.backoff_initial * 2 ** max(0, attempts - 1)))


def ssl_context(iface: Hl7Interface, ca_path: str | None) -> ssl.SSLContext | None:
    if not iface.tls:
        return None
    context = ssl.create_default_context(cafile=ca_path)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class OutboundLane:
    def __init__(
        self,
        iface: Hl7Interface,
        db: ClinicalDb,
        clock: Clock,
        context: ssl.SSLContext | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        """`leadership`: None on one node (its lane is the only one)."""
        self.iface, self.db, self.clock = iface, db, clock
        self.leadership = leadership
        self.client = MllpClient(iface.host, iface.port, context=context, timeout=iface.ack_timeout)
        self._wake = asyncio.Event()
        self._leading = leadership is None  # as of the last `leads()`

    def wake(self) -> None:
        self._wake.set()

    async def _next(self) -> Due | None:
        now, cipher, name = self.clock.time(), self.db.cipher, self.iface.name

        def job(conn: sqlite3.Connection) -> Due | None:
            r = conn.execute(
                "SELECT id, control_id, message_ct, attempts, sending_at FROM hl7_outbound"
                " WHERE interface = ? AND state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, created_at LIMIT 1",
                (name, now),
            ).fetchone()
            if r is None:
                return None
            return Due(r[0], r[1], cipher.decrypt(r[2], r[0], "message"), r[3], r[4] is not None)

        due: Due | None = await self.db.run(job, serial=False)
        return due

    async def leads(self) -> bool:
        """Whether this node sends the lane's rows now."""
        leadership = self.leadership
        was = self._leading
        self._leading = leadership is None or await leadership.lead(lane_name(self.iface))
        if self._leading and not was:
            log.info("hl7_lane_taken", interface=self.iface.name)
        return self._leading

    async def run_due(self) -> int:
        """Send every row due now, while this node leads the lane; how many were tried."""
        tried = 0
        while True:
            if not await self.leads():
                await self.client.aclose()  # a follower keeps no connection to the EHR
                return tried
            if (due := await self._next()) is None:
                return tried
            await self._attempt(due)
            tried += 1

    async def _mark(self, due: Due) -> bool:
        """The attempt marked on its row before a byte leaves (and the row flagged if
        an earlier attempt was cut off); False if the row is no longer pending."""
        now = self.clock.time()

        def job(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE hl7_outbound SET sending_at = ?, possible_duplicate ="
                    " CASE WHEN sending_at IS NULL THEN possible_duplicate ELSE 1 END"
                    " WHERE id = ? AND state = 'pending' RETURNING id",
                    (now, due.id),
                ).fetchone()
                is not None
            )

        marked: bool = await self.db.run(job, serial=False)
        if marked and due.cut_off:
            log.warning("hl7_outbound_cut_off", interface=self.iface.name, id=due.id)
        return marked

    async def _attempt(self, due: Due) -> None:
        attempts = due.attempts + 1
        if not await self._mark(due):
            return  # cancelled or re-sent meanwhile
        unknown = False  # whether the EHR may have it though no ACK says so
        try:
            ack: Ack | None = await self.client.send(due.message)
            problem = None
        except MllpError as e:
            ack, problem = None, str(e)
            unknown = not isinstance(e, NotConnected)
        code = ack.code if ack is not None else ""
        if ack is not None and ack.control_id != due.control_id:
            code, problem, unknown = "", "the ACK answers another message", True
        if code in ("AA", "CA"):
            state, next_at = OutboundState.ACKED, None
        elif code in ("AE", "CE"):
            state, next_at, problem = OutboundState.PARKED, None, f"refused ({code})"
        elif attempts > self.iface.retries:
            state, next_at = OutboundState.PARKED, None
            problem = f"attempts exhausted: {problem or 'rejected (' + code + ')'}"
        else:
            state = OutboundState.PENDING
            next_at = self.clock.time() + backoff(self.iface, attempts)
            problem = problem or f"rejected ({code or 'no MSA'})"
        now = self.clock.time()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE hl7_outbound SET state = ?, attempts = ?, next_attempt_at = ?,"
                " ack_code = ?, last_error = ?, updated_at = ?, sending_at = NULL,"
                " possible_duplicate = CASE WHEN ? = 1 THEN 1 ELSE possible_duplicate END"
                " WHERE id = ? AND state = 'pending'",
                (state.value, attempts, next_at, code or None, problem, now, int(unknown), due.id),
            )

        await self.db.run(job, serial=False)
        log.info(
            "hl7_outbound_attempt",
            interface=self.iface.name,
            id=due.id,
            attempt=attempts,
            ack=code or None,
            state=state.value,
        )

    async def _next_due_in(self) -> float:
        name = self.iface.name

        def job(conn: sqlite3.Connection) -> float | None:
            r = conn.execute(
                "SELECT MIN(next_attempt_at) FROM hl7_outbound"
                " WHERE interface = ? AND state = 'pending'",
                (name,),
            ).fetchone()
            return None if r is None or r[0] is None else float(r[0])

        at: float | None = await self.db.run(job, serial=False)
        return POLL if at is None else max(0.0, min(POLL, at - self.clock.time()))

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.run_due()
                    # A follower's rows are due now but not its to send: it looks again
                    # after POLL, not at once.
                    delay = await self._next_due_in() if self._leading else POLL
                except Exception as e:  # the store is struggling: look again later
                    log.error(
                        "hl7_outbound_failed", interface=self.iface.name, error=type(e).__name__
                    )
                    delay = POLL
                self._wake.clear()
                sleeper = asyncio.ensure_future(self.clock.sleep(delay))
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                waker.cancel()
        finally:
            await self.client.aclose()


async def resend(db: ClinicalDb, row_id: str, now: float) -> bool:
    """A parked message back to `pending`, due now, attempts counted afresh."""

    def job(conn: sqlite3.Connection) -> bool:
        r = conn.execute(
            "UPDATE hl7_outbound SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " updated_at = ? WHERE id = ? AND state = 'parked' RETURNING id",
            (now, now, row_id),
        ).fetchone()
        return r is not None

    done: bool = await db.run(job, serial=False)
    return done
