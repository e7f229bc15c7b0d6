"""A modem bank driver on emulated modems over real pseudo-terminals, for the modem tests.

Timers are shortened to fractions of a second on the system clock; nothing sleeps: a
test waits with `Bench.until`, which re-checks its condition after everything a modem
answers and everything the driver reports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from drivers.base import EventSink, InboundSms, OutboundSms
from drivers.clock import Clock, SystemClock
from drivers.modem.bank import ModemBankDriver
from drivers.modem.driver import Modem
from drivers.modem.emulator import EmulatedModem
from drivers.modem.options import ModemBankOptions
from tests.sinks import RecordingSink

FAST: dict[str, Any] = {
    "command_timeout": 0.5,
    "send_timeout": 1.0,
    "probe_interval": 30.0,
    "hang_limit": 2,
    "reopen_min": 0.02,
    "reopen_max": 0.1,
    "sim_busy_delay": 0.01,
    "rescan_interval": 0.1,
}
EMULATED: dict[str, Any] = {"send_latency": 0.01, "report_delay": 0.01}


@dataclass
class HoldingSink(RecordingSink):
    """The gateway's sink as the modem sees it: it also quarantines what does not decode.
    With `gate` set (a cleared Event) every commit waits for it, and `waiting` counts
    the commits held, so a test can look at the SIM while the gateway has not committed."""

    quarantined: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    waiting: int = 0

    async def _commit(self) -> None:
        if self.gate is not None and not self.gate.is_set():
            self.waiting += 1
            self.changed.set()
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1

    async def inbound(self, route: str, sms: InboundSms) -> None:
        await self._commit()
        await super().inbound(route, sms)

    async def quarantine(self, route: str, source: str, record: str) -> None:
        await self._commit()
        self.quarantined.append(record)
        self.changed.set()


@dataclass
class Bench:
    bank: ModemBankDriver
    sink: HoldingSink
    emulators: list[EmulatedModem]
    extra: list[asyncio.Event] = field(default_factory=list)

    def modem(self, index: int = 0) -> Modem:
        return list(self.bank.modems.values())[index]

    def member(self, index: int = 0) -> dict[str, Any]:
        return dict(self.bank.health().members[self.modem(index).name])

    async def until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Return once `predicate()` holds, re-checked after every answer and report."""
        events = [self.sink.changed, *(m.progress for m in self.bank.modems.values())]
        async with asyncio.timeout(within):
            while True:
                for event in events:
                    event.clear()
                if predicate():
                    return
                waiters = [asyncio.ensure_future(e.wait()) for e in events]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()

    async def until_ready(self, index: int = 0) -> None:
        await self.until(lambda: self.modem(index).ready)


def bank_options(paths: list[str], modems: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    tables = [{"name": f"m{i + 1}", "port": p} for i, p in enumerate(paths)]
    for table, more in zip(tables, modems or [{} for _ in paths], strict=True):
        table.update(more)
    return msgspec.convert({"modems": tables, **FAST, **extra}, ModemBankOptions)


BenchFactory = Callable[..., Awaitable[Bench]]


@contextlib.asynccontextmanager
async def bench_factory(link_dir: Path, clock: Clock | None = None) -> AsyncIterator[BenchFactory]:
    """Banks on emulated modems whose ports are symlinks in `link_dir`, re-pointed on
    replug as udev re-points /dev/serial/by-id/."""
    opened: list[Bench] = []
    clock = clock or SystemClock()
    made = 0

    async def factory(
        count: int = 1,
        *,
        emulated: list[dict[str, Any]] | None = None,
        modems: list[dict[str, Any]] | None = None,
        sink: EventSink | None = None,
        ready: bool = True,
        before_start: Callable[[list[EmulatedModem]], None] | None = None,
        **options: Any,
    ) -> Bench:
        nonlocal made
        emulators = []
        for i in range(count):
            made += 1
            settings = {**EMULATED, **(emulated[i] if emulated else {})}
            emulators.append(EmulatedModem(link_path=link_dir / f"modem-{made}", **settings))
        for emulator in emulators:
            await emulator.start()
        if before_start is not None:
            before_start(emulators)
        recording = HoldingSink()
        bank = ModemBankDriver(
            "bank",
            bank_options([e.path for e in emulators], modems, **options),
            sink or recording,
            clock,
        )
        bench = Bench(bank, recording, emulators)
        if sink is not None and isinstance(sink, RecordingSink):
            bench.sink = sink  # type: ignore[assignment]  # a test's own recording sink
        opened.append(bench)
        await bank.start()
        if ready:
            for i in range(count):
                await bench.until_ready(i)
        return bench

    try:
        yield factory
    finally:
        for bench in opened:
            await bench.bank.aclose()
            for emulator in bench.emulators:
                await emulator.aclose()


def sms(
    *parts: str, to: str = "+12025550147", encoding: str = "gsm7", reference: int = 7
) -> OutboundSms:
    return OutboundSms(
        message_id="m", to=to, parts=parts or ("hello",), encoding=encoding, reference=reference
    )
