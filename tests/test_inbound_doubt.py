"""Inbound deliveries in doubt on the SQLite store (`gateway/inbound_doubt.py`), real
parts: the gateway's sink and SMPP driver bound to the SMSC simulator, one store file.

- A gateway killed between the COMMIT of an MO and writing its deliver_sm_resp (its
  task stops there, nothing after it runs): the carrier delivers it again to the
  gateway started next on the same store, which stores it under the same id, once.
- Two separate identical MOs, both acknowledged: two rows, and no mark is left.
- The sink's pending clears and flags ride one transaction each, come back when it
  fails, and are settled on their own soon after when no delivery comes.
- In the store: this process's mark in flight is not in doubt, flagged failed it is; an
  earlier process's is; not past the keep window, when it is swept.

Waits are on conditions (the simulator's counters), bounded by `WAIT`, never timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import RouteState
from drivers.clock import FakeClock, SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.options import SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.inbound_doubt import InDoubt, Marked, Settle, StoredOnce
from gateway.metrics import Metrics
from gateway.sink import GatewaySink
from gateway.store.store import Store

ROUTE = "carrier"
NUMBER = "+12025550147"
WAIT = 20.0  # an upper bound on waiting for a condition, never an expected duration


@dataclass
class Gateway:
    store: Store
    sink: GatewaySink
    driver: SmppDriver

    async def rows(self, sql: str) -> list[Any]:
        cur = await self.store.reader.execute(sql)
        return list(await cur.fetchall())

    async def texts(self) -> list[str]:
        rows = await self.rows("SELECT id, body_ct FROM inbound ORDER BY seq")
        return [self.store.decrypt(bytes(ct), iid, "body") for iid, ct in rows]


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    async with SmscSimulator(SimulatorConfig(system_id="acme", password="pw"), FakeClock()) as sim:
        yield sim


@asynccontextmanager
async def gateway(
    path: Path, smsc: SmscSimulator, *, killed: bool = False
) -> AsyncIterator[Gateway]:
    """A gateway on the store at `path`, bound; stopped cleanly after, unless `killed`
    (its marks then stay as a dead process leaves them)."""
    store = Store(path, bytes(32))
    await store.open()
    clock = SystemClock()
    sink = GatewaySink(store, clock, Metrics())
    options = SmppOptions(host="127.0.0.1", port=smsc.port, system_id="acme", password="pw")
    driver = SmppDriver(ROUTE, options, sink, clock)
    changed = asyncio.Event()
    sink.wake_on_health(changed.set)
    try:
        await driver.start()
        async with asyncio.timeout(WAIT):
            while driver.health().state is not RouteState.UP:
                await changed.wait()
                changed.clear()
        yield Gateway(store, sink, driver)
    finally:
        await driver.aclose()
        if not killed:
            await sink.aclose()
        await store.close()


async def _until(sim: SmscSimulator, predicate: Callable[[], bool]) -> None:
    await asyncio.wait_for(sim.wait_until(predicate), WAIT)


async def test_an_mo_whose_gateway_died_before_answering_is_stored_once_after_a_restart(
    tmp_path: Path, smsc: SmscSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.db"
    used: list[str] = []
    died = asyncio.Event()
    async with gateway(path, smsc, killed=True) as first:
        real = first.store.insert_inbound_once

        async def commit_then_die(*args: Any, **kwargs: Any) -> Any:
            once = await real(*args, **kwargs)
            used.append(once.inbound_id)
            died.set()
            raise asyncio.CancelledError  # nothing after the COMMIT runs: no answer

        monkeypatch.setattr(first.store, "insert_inbound_once", commit_then_die)
        # A dead process writes nothing more: not even the flag of a failed delivery.
        monkeypatch.setattr(first.sink._in_doubt, "not_answered", lambda digest: None)
        smsc.inject_mo(NUMBER, "4000", "C")
        await asyncio.wait_for(died.wait(), WAIT)
        assert smsc.mo_sent == 0
    with capture_logs() as logs:
        async with gateway(path, smsc) as second:  # the carrier delivers it again here
            await _until(smsc, lambda: smsc.mo_sent == 1)
            assert [r[0] for r in await second.rows("SELECT id FROM inbound")] == used
            smsc.inject_mo(NUMBER, "4000", "C")  # the same text again, a new message
            await _until(smsc, lambda: smsc.mo_sent == 2)
            assert await second.texts() == ["C", "C"]
    stored = [e["event"] for e in logs if e["event"].startswith("inbound_stored")]
    assert stored == ["inbound_stored_before", "inbound_stored"]
    assert smsc.redelivered == 1
    assert all(NUMBER not in str(e) and "'C'" not in str(e) for e in logs)  # no PHI


async def test_separate_identical_mos_both_acknowledged_are_two_and_leave_no_mark(
    tmp_path: Path, smsc: SmscSimulator
) -> None:
    async with gateway(tmp_path / "gw.db", smsc) as gw:
        smsc.inject_mo(NUMBER, "4000", "YES")
        smsc.inject_mo(NUMBER, "4000", "YES")  # in flight together: neither is in doubt
        await _until(smsc, lambda: smsc.mo_sent == 2)
        smsc.inject_mo(NUMBER, "4000", "YES")
        await _until(smsc, lambda: smsc.mo_sent == 3)
        assert await gw.texts() == ["YES"] * 3
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    try:
        cur = await store.reader.execute("SELECT count(*) FROM inbound_doubt")
        assert tuple(await cur.fetchone()) == (0,)  # cleared: a restart takes none for in doubt
    finally:
        await store.close()


async def test_clears_and_flags_ride_one_transaction_come_back_on_failure_and_settle_alone() -> (
    None
):
    settled: list[Settle] = []
    refuse = [OSError("the store is away")]
    changed = asyncio.Event()

    async def settle(s: Settle) -> None:
        changed.set()
        if refuse:
            raise refuse.pop()
        settled.append(s)

    doubt = InDoubt(settle, lambda: 1000.0, keep_seconds=60.0, settle_delay=0.0)
    first = doubt.riding(1000.0)
    assert first == Settle(expired=940.0)  # the first sweeps; nothing else pending
    doubt.answered(b"d1", "in-1", True)
    doubt.answered(b"d2", "in-2", False)
    riding = doubt.riding(1000.0)
    assert riding == Settle(((b"d1", "in-1"),), (b"d2",))
    assert not doubt.riding(1000.0)  # taken: the next transaction carries none of it
    doubt.unsettled(riding)  # that transaction did not commit: back, settled alone
    async with asyncio.timeout(WAIT):
        while not settled:
            await changed.wait()
            changed.clear()
    assert settled == [riding]  # after one refusal
    await doubt.aclose()


async def test_marks_in_doubt_in_the_store(tmp_path: Path) -> None:
    stores = [Store(tmp_path / "gw.db", bytes(32)) for _ in range(2)]  # two processes' in turn
    for store in stores:
        await store.open()
    try:
        first, later = stores
        digest = first.inbound_digest("route:r", NUMBER, "4000", "YES")
        assert digest == later.inbound_digest("route:r", NUMBER, "4000", "YES")
        assert digest != first.inbound_digest("route:r", NUMBER, "400", "0YES")

        async def deliver(
            store: Store, iid: str, at: float, settle: Settle | None = None
        ) -> StoredOnce:
            marked = Marked(digest, 100.0, settle or Settle())
            return await store.insert_inbound_once(
                iid, "r", NUMBER, "YES", "4000", None, at, marked
            )

        assert await deliver(first, "in-a", 1000.0) == StoredOnce("in-a", True)
        assert await deliver(first, "in-b", 1001.0) == StoredOnce("in-b", True)  # a's in flight
        failed = Settle(failed=(digest,))  # both answered with an error: the oldest first
        assert await deliver(first, "in-c", 1002.0, failed) == StoredOnce("in-a", False)
        assert await deliver(first, "in-d", 1003.0) == StoredOnce("in-b", False)
        # The process stops without clearing: the next one's deliveries take its marks.
        assert await deliver(later, "in-e", 1004.0) == StoredOnce("in-a", False)
        assert await deliver(later, "in-f", 1100.5) == StoredOnce("in-b", False)  # a is ours now
        await later.settle_inbound_doubt(Settle(expired=1000.5))
        cur = await later.reader.execute("SELECT inbound_id FROM inbound_doubt ORDER BY at")
        assert [r[0] for r in await cur.fetchall()] == ["in-b"]
    finally:
        for store in stores:
            await store.close()
