"""The modem route: a bank of modems that sends as one route (`type = "modem"`).

Theory of operation. Each configured modem is a `Modem` (drivers/modem/driver.py)
with its own supervisor; the bank only chooses. A message goes to the least-loaded
usable modem: ready (SIM unlocked, registered), not sending (one send per modem at a
time), not drained, and with room in its budget (`per_minute`/`per_day`/`per_month`
parts, `Budget`). When every usable modem is busy, `submit` waits for one to finish.

A send that fails before anything left the modem (timeout before the prompt, no
network on that SIM, SIM busy, SMS not subscribed) is tried on the next usable modem at
once, so a sick modem costs the message nothing. A send that may have reached the
network (a part was accepted, or the PDU was written and the answer never came or the
port went) raises `TransientSendError(maybe_sent=True)`: the gateway re-queues it
flagged as a possible duplicate, and its next try goes to whichever modem is usable.
A permanent error (unassigned number, invalid PDU) fails the message. When every
modem's SIM needs an operator (PIN refused, PUK, missing SIM), the route is parked:
`DriverAuthFailed`, and its state says so.

`failure_limit` failed sends in a row drain a modem for `drain_seconds`; a success
resets the count. A modem over budget is parked until its budget resets. When no
modem is usable the bank raises `DriverNotReady` with `retry_after` set to when the
first parked modem frees up, if that is what blocks it.

`health()` is the route's state (up: every modem usable; degraded: some; down: none)
plus `members`, one entry per modem (state, signal, registration, operator, sent
today, errors): the API's `GET /routes` and `/metrics` show them, labelled by modem
name only.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import structlog

from drivers.base import (
    DriverAuthFailed,
    DriverNotReady,
    EventSink,
    OutboundSms,
    PermanentSendError,
    RouteHealth,
    RouteState,
    SubmitResult,
    TransientSendError,
)
from drivers.clock import Clock
from drivers.modem.budget import Budget
from drivers.modem.driver import Modem, ModemState, SendFailed
from drivers.modem.errors import Kind
from drivers.modem.options import ModemBankOptions

log = structlog.get_logger("smsgw.modem")


@dataclass(eq=False, slots=True)
class _Member:
    modem: Modem
    budget: Budget
    failures_in_a_row: int = 0
    drained_until: float = 0.0
    errors: int = 0

    def state(self, now: float, parts: int = 1) -> str:
        if not self.modem.ready:
            return self.modem.state.value
        if now < self.drained_until:
            return "drained"
        if self.budget.wait(parts) > 0:
            return "parked"
        return "ready"


class ModemBankDriver:
    Options: ClassVar[type[ModemBankOptions]] = ModemBankOptions

    def __init__(self, name: str, options: ModemBankOptions, sink: EventSink, clock: Clock) -> None:
        self.name = name
        self._opts = options
        self._sink = sink
        self._clock = clock
        self._closing = False
        self._started = False
        self._freed = asyncio.Condition()
        self._members = [
            _Member(
                Modem(name, m, options, sink, clock, on_change=self._changed),
                Budget(clock, per_minute=m.per_minute, per_day=m.per_day, per_month=m.per_month),
            )
            for m in options.modems
        ]
        self._last: tuple[RouteState, str] | None = None
        self._wakers: set[asyncio.Task[None]] = set()
        self._counters = dict.fromkeys(("submitted", "rejected", "failovers", "drained"), 0)

    @property
    def modems(self) -> dict[str, Modem]:
        return {m.modem.name: m.modem for m in self._members}

    def seed_usage(self, usage: Mapping[str, tuple[int, int]]) -> None:
        """Parts each modem sent earlier today and this month, by modem name (from the
        gateway's store at start), so per-day and per-month caps survive a restart."""
        for member in self._members:
            today, this_month = usage.get(member.modem.name, (0, 0))
            member.budget.seed(today, this_month)

    def drain(self, unit: str) -> None:
        """An operator takes a modem out of rotation until `restore`; its current send
        finishes, new work goes to the others."""
        member = self._member(unit)
        member.drained_until = math.inf
        log.info("modem_drained_by_operator", route=self.name, modem=unit)
        self._changed()

    def restore(self, unit: str) -> None:
        """Put a drained modem (by an operator or after repeated failures) back; a modem
        stopped on its SIM (PIN, PUK, missing SIM) tries its SIM again."""
        member = self._member(unit)
        member.drained_until = 0.0
        member.failures_in_a_row = 0
        member.modem.retry_sim()
        log.info("modem_restored", route=self.name, modem=unit)
        self._changed()

    def _member(self, unit: str) -> _Member:
        for member in self._members:
            if member.modem.name == unit:
                return member
        raise KeyError(unit)

    # -- the driver contract -------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        for member in self._members:
            member.modem.start()
        self._changed()

    def health(self) -> RouteHealth:
        now = self._clock.monotonic()
        states = {m.modem.name: m.state(now) for m in self._members}
        usable = [n for n, s in states.items() if s == "ready"]
        if self._closing:
            state, detail = RouteState.DOWN, "closed"
        elif not self._started:
            state, detail = RouteState.STARTING, "starting"
        elif len(usable) == len(states):
            state, detail = RouteState.UP, f"{len(usable)} of {len(states)} modems ready"
        elif usable:
            state, detail = RouteState.DEGRADED, f"{len(usable)} of {len(states)} modems ready"
        elif self._all_sims_failed():
            state, detail = RouteState.PARKED, "every SIM needs an operator (PIN, PUK, missing)"
        else:
            state = RouteState.DOWN
            detail = "no modem ready: " + ", ".join(f"{n} {s}" for n, s in states.items())
        members = {
            m.modem.name: {
                **m.modem.snapshot(),
                "state": states[m.modem.name],
                "sent_today": m.budget.sent_today,
                "sent_this_month": m.budget.sent_this_month,
                "errors": m.errors,
            }
            for m in self._members
        }
        in_flight = sum(1 for m in self._members if m.modem.sending)
        return RouteHealth(state, detail, in_flight, dict(self._counters), members)

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        tried: set[str] = set()
        last: SendFailed | None = None
        parts = len(sms.parts)
        while True:
            member = await self._take(parts, tried)
            if member is None:
                raise self._nothing_usable(parts, last)
            tried.add(member.modem.name)
            try:
                ids = await member.modem.send(sms)
            except SendFailed as e:
                self._failed(member, e)
                if e.maybe_sent:
                    raise TransientSendError(
                        "the modem may have sent the message", code=e.info.code, maybe_sent=True
                    ) from None
                if e.info.kind is Kind.PERMANENT:
                    self._counters["rejected"] += 1
                    raise PermanentSendError(
                        "the network refused the message", code=e.info.code
                    ) from None
                self._counters["failovers"] += 1
                last = e
                continue
            finally:
                await self._notify_freed()
            member.failures_in_a_row = 0
            member.budget.spend(parts)
            self._counters["submitted"] += 1
            self._changed()
            return SubmitResult(carrier_ids=ids)

    async def aclose(self) -> None:
        self._closing = True
        await asyncio.gather(*(m.modem.aclose() for m in self._members))
        await self._notify_freed()
        self._changed()

    # -- choosing ------------------------------------------------------------------------

    async def _take(self, parts: int, tried: set[str]) -> _Member | None:
        """The least-loaded usable modem not yet tried; waits while all usable are busy."""
        async with self._freed:
            while not self._closing:
                now = self._clock.monotonic()
                usable = [
                    m
                    for m in self._members
                    if m.modem.name not in tried and m.state(now, parts) == "ready"
                ]
                free = [m for m in usable if not m.modem.sending]
                if free:
                    member = min(free, key=lambda m: (m.budget.sent_today, m.errors))
                    member.modem.sending = True  # reserved until its send starts
                    return member
                if not usable:
                    return None
                await self._freed.wait()
        return None

    def _nothing_usable(self, parts: int, last: SendFailed | None) -> Exception:
        if self._closing:
            return DriverNotReady(f"route {self.name} is closed", code="modem:closed")
        if last is not None:
            return TransientSendError("no modem could take the message", code=last.info.code)
        if self._all_sims_failed():
            return DriverAuthFailed("every SIM of the bank needs an operator", code="modem:sim")
        now = self._clock.monotonic()
        waits = [
            m.budget.wait(parts)
            for m in self._members
            if m.modem.ready and now >= m.drained_until and m.budget.wait(parts) > 0
        ]
        finite = [w for w in waits if math.isfinite(w)]
        if finite and len(waits) == len(finite):
            return DriverNotReady(
                "every modem has used its budget", code="modem:budget", retry_after=min(finite)
            )
        return DriverNotReady(f"route {self.name} has no modem ready", code="modem:not_ready")

    def _all_sims_failed(self) -> bool:
        return all(m.modem.state is ModemState.SIM_ERROR for m in self._members)

    def _failed(self, member: _Member, error: SendFailed) -> None:
        if error.info.kind is Kind.PERMANENT:
            return
        member.errors += 1
        member.failures_in_a_row += 1
        if member.failures_in_a_row >= self._opts.failure_limit:
            member.failures_in_a_row = 0
            member.drained_until = self._clock.monotonic() + self._opts.drain_seconds
            self._counters["drained"] += 1
            log.warning(
                "modem_drained",
                route=self.name,
                modem=member.modem.name,
                code=error.info.code,
                seconds=self._opts.drain_seconds,
            )
        self._changed()

    async def _notify_freed(self) -> None:
        async with self._freed:
            self._freed.notify_all()

    def _changed(self) -> None:
        health = self.health()
        key = (health.state, health.detail)
        if key != self._last:
            self._last = key
            self._sink.health_changed(self.name, health)
        # A modem may have become ready: wake submits waiting for one.
        task = asyncio.get_running_loop().create_task(self._notify_freed())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)
