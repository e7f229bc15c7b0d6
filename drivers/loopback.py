"""A route that sends nowhere: accepts submits and answers with receipts.

It is the embedded default's route until the SMSC simulator and modem emulator land,
and the reference implementation of the driver contract. Behaviour is configurable:
submit latency, receipt delay, and fractions of permanent rejections, transient errors
and failed receipts. Numbers starting with a configured prefix fail deterministically,
which tests use to walk every error path.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from typing import Annotated, ClassVar

import msgspec

from drivers.base import (
    DriverNotReady,
    EventSink,
    OutboundSms,
    PermanentSendError,
    Receipt,
    ReceiptState,
    RouteHealth,
    RouteState,
    SubmitResult,
    TransientSendError,
)
from drivers.clock import Clock

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0)]


class LoopbackOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Options of a `type = "loopback"` route."""

    latency: Seconds = 0.01
    receipt_delay: Seconds = 1.0
    reject_fraction: Fraction = 0.0
    transient_fraction: Fraction = 0.0
    undelivered_fraction: Fraction = 0.0
    reject_prefixes: tuple[str, ...] = ()
    transient_prefixes: tuple[str, ...] = ()
    undelivered_prefixes: tuple[str, ...] = ()
    seed: int | None = None


class LoopbackDriver:
    Options: ClassVar[type[LoopbackOptions]] = LoopbackOptions

    def __init__(self, name: str, options: LoopbackOptions, sink: EventSink, clock: Clock) -> None:
        self.name = name
        self._opts = options
        self._sink = sink
        self._clock = clock
        self._random = random.Random(options.seed)  # noqa: S311 - simulation, not security
        self._ids = itertools.count(1)
        # The carrier's ids are unique across the nodes of a cluster, whose loopback
        # routes of one name stand for one carrier: a receipt matches by id on any node.
        self._id_prefix = f"lb{secrets.token_hex(3)}-"
        self._state = RouteState.STARTING
        self._in_flight = 0
        self._counters = {"submitted": 0, "rejected": 0, "transient": 0, "receipts": 0}
        self._receipt_tasks: dict[asyncio.Task[None], float] = {}

    async def start(self) -> None:
        self._set_state(RouteState.UP)

    def set_down(self, down: bool) -> None:
        """Simulate a link going down or coming back (tests, demos)."""
        self._set_state(RouteState.DOWN if down else RouteState.UP)

    def _set_state(self, state: RouteState) -> None:
        if state != self._state:
            self._state = state
            self._sink.health_changed(self.name, self.health())

    def health(self) -> RouteHealth:
        return RouteHealth(
            state=self._state, in_flight=self._in_flight, counters=dict(self._counters)
        )

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        if self._state is not RouteState.UP:
            raise DriverNotReady(f"route {self.name} is {self._state}")
        self._in_flight += 1
        try:
            await self._clock.sleep(self._opts.latency)
            outcome = self._outcome(sms.to)
            if outcome == "reject":
                self._counters["rejected"] += 1
                raise PermanentSendError("destination rejected", code="loopback:reject")
            if outcome == "transient":
                self._counters["transient"] += 1
                raise TransientSendError("simulated congestion", code="loopback:busy")
            ids = tuple(f"{self._id_prefix}{next(self._ids):x}" for _ in sms.parts)
            self._counters["submitted"] += 1
        finally:
            self._in_flight -= 1
        if sms.want_receipt:
            failed = self._hit(
                sms.to, self._opts.undelivered_prefixes, self._opts.undelivered_fraction
            )
            due = self._clock.monotonic() + self._opts.receipt_delay
            task = asyncio.create_task(self._send_receipts(ids, failed, due))
            self._receipt_tasks[task] = due
            task.add_done_callback(lambda t: self._receipt_tasks.pop(t, None))
        return SubmitResult(carrier_ids=ids)

    def _outcome(self, to: str) -> str:
        if self._hit(to, self._opts.reject_prefixes, self._opts.reject_fraction):
            return "reject"
        if self._hit(to, self._opts.transient_prefixes, self._opts.transient_fraction):
            return "transient"
        return "ok"

    def _hit(self, to: str, prefixes: tuple[str, ...], fraction: float) -> bool:
        if any(to.startswith(p) for p in prefixes):
            return True
        return fraction > 0 and self._random.random() < fraction

    async def _send_receipts(self, ids: tuple[str, ...], failed: bool, due: float) -> None:
        await self._clock.sleep(due - self._clock.monotonic())
        for i, carrier_id in enumerate(ids):
            # A failed message fails on its last part, as carriers report it.
            bad = failed and i == len(ids) - 1
            state = ReceiptState.FAILED if bad else ReceiptState.DELIVERED
            code = "loopback:undeliverable" if bad else None
            await self._sink.receipt(self.name, Receipt(carrier_id, state, code))
            self._counters["receipts"] += 1

    async def settle(self) -> None:
        """Wait until every receipt due by now on the clock has reached the sink."""
        now = self._clock.monotonic()
        due = [t for t, at in self._receipt_tasks.items() if at <= now]
        await asyncio.gather(*due, return_exceptions=True)

    async def aclose(self) -> None:
        self._set_state(RouteState.DOWN)
        for task in list(self._receipt_tasks):
            task.cancel()
        await asyncio.gather(*self._receipt_tasks, return_exceptions=True)
