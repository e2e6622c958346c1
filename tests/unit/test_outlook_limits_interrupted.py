"""Ctrl-C during an erasure cancels every request waiting for a mailbox slot while those
holding one finish and hand theirs on: a waiter cancelled just before its turn came
must leave quietly (it raised `ValueError: (4, <Future cancelled>) is not in deque`)."""

from __future__ import annotations

import asyncio

import pytest

from connectors.outlook.limits import WeightedLimiter, slot_weight


async def test_a_waiter_cancelled_as_the_slot_is_handed_on_leaves_quietly() -> None:
    limiter = WeightedLimiter(4)
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot("mbx"):
            await release.wait()

    async def batch() -> None:
        token = slot_weight.set(4)
        try:
            async with limiter.slot("mbx"):
                raise AssertionError("the batch was cancelled before its turn")
        finally:
            slot_weight.reset(token)

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(batch())
    await asyncio.sleep(0)  # queued behind the holder
    # In one turn of the loop, as on Ctrl-C: the holder is woken to hand its slot on,
    # then the waiter is cancelled; the holder runs first and drops the cancelled
    # waiter from the queue before the waiter's own clean-up runs.
    release.set()
    waiting.cancel()
    await held
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter._used["mbx"] == 0 and not limiter._queues["mbx"]
