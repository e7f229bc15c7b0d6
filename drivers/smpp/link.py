"""One SMPP link of a route: a connection, its session and its flow-control state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from drivers.base import Receipt
from drivers.smpp.pdu import Pdu
from drivers.smpp.session import BindMode, LocalProtocolError, Session

# deliver_sm awaiting their commit per link before the link stops reading
INBOUND_CONCURRENCY = 256


@dataclass(eq=False)
class Link:
    """One connection and its session; `mode` is what this link binds as."""

    index: int
    mode: BindMode
    session: Session | None = None
    writer: asyncio.StreamWriter | None = None
    bound: bool = False
    throttled_until: float = 0.0
    throttle_backoff: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inbound_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(INBOUND_CONCURRENCY)
    )
    flush_pending: bool = False
    # receipts read in this turn, for the sink as one group: (deliver_sm, receipt)
    receipts: list[tuple[Pdu, Receipt]] = field(default_factory=list)
    sleeps_until: float | None = None  # the deadline the link's loop waits for
    dropping: bool = False  # its bind slot was revoked: unbind, and hang up if need be

    @property
    def transmits(self) -> bool:
        return self.mode != "receiver"

    def unbind(self, now: float) -> None:
        """Start the unbind handshake if bound (again: nothing); `Unbound` ends it."""
        session = self.session
        if session is None or not self.bound or session.closed or self.writer is None:
            return
        try:
            session.unbind(now=now)
        except LocalProtocolError:  # not in a state to unbind: a hang-up ends it
            return
        self.flush()
        self.wake.set()

    def hang_up(self) -> None:
        """Drop the connection now; the link's loop reads its end and the link ends."""
        if self.writer is not None and self.session is not None:
            self.writer.transport.abort()

    def flush(self) -> None:
        if self.session is not None and self.writer is not None:
            data = self.session.data_to_send()
            if data:
                self.writer.write(data)

    def nudge(self) -> None:
        """After a request or response was queued on the session: write it soon (one
        write for everything queued in this turn of the loop, not one per PDU), and wake
        the link's loop only if the session now has an earlier deadline than the one the
        loop sleeps until."""
        if not self.flush_pending:
            self.flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        session = self.session
        deadline = None if session is None else session.next_deadline()
        if deadline is not None and (self.sleeps_until is None or deadline < self.sleeps_until):
            self.wake.set()

    def _flush_soon(self) -> None:
        self.flush_pending = False
        self.flush()
