"""The per-mailbox limits on their own: weighted slots and the request budget."""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors.outlook.limits import RequestBudget, WeightedLimiter, slot_weight


async def hold(limiter: WeightedLimiter, weight: int, order: list[str], name: str) -> None:
    token = slot_weight.set(weight)
    try:
        async with limiter.slot("mbx"):
            order.append(name)
            await asyncio.sleep(0.01)
    finally:
        slot_weight.reset(token)


async def test_a_batch_waiting_for_four_slots_is_not_overtaken() -> None:
    limiter = WeightedLimiter(4)
    order: list[str] = []
    first = asyncio.create_task(hold(limiter, 1, order, "single-1"))
    await asyncio.sleep(0)
    batch = asyncio.create_task(hold(limiter, 4, order, "batch"))
    await asyncio.sleep(0)
    late = asyncio.create_task(hold(limiter, 1, order, "single-2"))
    await asyncio.gather(first, batch, late)
    assert order == ["single-1", "batch", "single-2"]
    assert limiter.max_in_use == 4


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    limiter = WeightedLimiter(2)
    order: list[str] = []
    busy = asyncio.create_task(hold(limiter, 2, order, "busy"))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(hold(limiter, 2, order, "doomed"))
    after = asyncio.create_task(hold(limiter, 1, order, "after"))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.gather(busy, after)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert order == ["busy", "after"]
    assert limiter._used["mbx"] == 0


async def test_units_in_flight_do_not_leave_the_window() -> None:
    budget = RequestBudget(3, 0.05)
    spending = await budget.reserve("mbx", 3)
    waiter = asyncio.create_task(budget.reserve("mbx", 1))
    await asyncio.sleep(0.1)  # longer than the window, but the answer is not in yet
    assert not waiter.done()
    started = time.monotonic()
    budget.settle("mbx", spending)
    await waiter
    assert time.monotonic() - started >= 0.05  # a whole window after the answer


async def test_a_pause_holds_every_request_of_the_mailbox_only() -> None:
    budget = RequestBudget(100, 60)
    budget.pause("mbx", 0.1)
    started = time.monotonic()
    await budget.reserve("other")
    assert time.monotonic() - started < 0.05
    await budget.reserve("mbx")
    assert time.monotonic() - started >= 0.1
    assert budget.spent("mbx") == budget.spent("other") == 1
