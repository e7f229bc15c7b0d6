"""A route's window slots: `take_free` takes what `acquire()` would give without waiting."""

from __future__ import annotations

import asyncio

from gateway.routes import WindowSlots


async def test_take_free_takes_what_is_free_now() -> None:
    slots = WindowSlots(5)
    assert slots.take_free(0) == 0
    assert slots.take_free(3) == 3
    assert slots.take_free(5) == 2
    assert slots.locked() and slots.take_free(1) == 0
    slots.release()
    assert slots.take_free(4) == 1


async def test_take_free_leaves_a_freed_slot_to_whoever_waits() -> None:
    slots = WindowSlots(1)
    assert slots.take_free(1) == 1
    waiter = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)  # the waiter queues for the slot
    slots.release()
    assert slots.take_free(1) == 0  # the waiter's, first come, first served
    assert await waiter is True
    assert slots.locked()
