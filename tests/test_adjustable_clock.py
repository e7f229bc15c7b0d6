"""The demo's clock: real time plus an offset that only grows; a sleeper whose
deadline a jump passes wakes at once, one whose deadline it does not keeps sleeping."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.clock import AdjustableClock


async def test_a_jump_wakes_the_sleepers_it_passes_and_only_those() -> None:
    clock = AdjustableClock()
    before = clock.time()
    short = asyncio.create_task(clock.sleep(3600))
    long = asyncio.create_task(clock.sleep(7 * 86400))
    await asyncio.sleep(0)
    clock.advance(2 * 3600)
    await asyncio.wait_for(short, 5)
    assert not long.done()
    assert clock.time() - before >= 2 * 3600
    assert clock.offset == 2 * 3600
    long.cancel()


async def test_it_runs_on_real_time_between_jumps() -> None:
    clock = AdjustableClock()
    start = time.monotonic()
    await clock.sleep(0.01)
    assert time.monotonic() - start >= 0.009
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
