"""The per-mailbox limits on their own: weighted slots, the request budget, turns."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from connectors.outlook.limits import MailboxTurns, RequestBudget, WeightedLimiter, slot_weight


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


class _Lease:
    """A MailboxLease held by "another instance" until `free` is set; counts the calls."""

    def __init__(self) -> None:
        self.free = threading.Event()
        self.takes = 0
        self.given_back: list[str] = []

    def take(self, scope: str, wait: float = 0.0) -> str | None:
        self.takes += 1
        return "" if self.free.wait(wait) else None

    def others_waiting(self, scope: str) -> bool:
        return False

    def give_back(self, scope: str, handoff: str) -> None:
        self.given_back.append(handoff)


async def test_a_turn_is_waited_for_in_the_lease_not_by_polling() -> None:
    lease = _Lease()
    turns = MailboxTurns(lease, RequestBudget(100, 60.0), wait_seconds=0.2, linger_seconds=0.05)
    entered = asyncio.Event()

    async def request() -> None:
        async with turns.turn("mbx"):
            entered.set()

    task = asyncio.create_task(request())
    await asyncio.sleep(1.0)  # the other instance holds the mailbox meanwhile
    assert not entered.is_set()
    lease.free.set()
    await asyncio.wait_for(task, 5)
    assert lease.takes <= 10  # a wait of 0.2 s at a time: about 6, not one per 10 ms
    deadline = time.monotonic() + 5
    while not lease.given_back and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(lease.given_back) == 1  # given back once idle (linger)
    await turns.close()


async def test_the_window_does_not_creep_later_as_it_is_handed_over_and_back() -> None:
    # Two instances taking turns a thousand times (hours of turns): what was spent must
    # leave the window when it is due, not seconds or minutes later.
    first, second = RequestBudget(1000, 600.0), RequestBudget(1000, 600.0)
    async with first.spending("mbx", 10):
        pass
    handoff = first.handoff("mbx")
    [[spent_at, units]] = json.loads(handoff)["spent"]
    assert units == 10
    for _ in range(500):
        second.take_over("mbx", handoff)
        handoff = second.handoff("mbx")
        first.take_over("mbx", handoff)
        handoff = first.handoff("mbx")
    assert json.loads(handoff)["spent"] == [[spent_at, 10]]
