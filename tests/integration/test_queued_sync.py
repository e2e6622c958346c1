"""QueuedSync, what "sync now" (API, and the CLI beside a daemon) goes through: a work
item like the schedule's, waited for; withdrawn when no daemon claims it in time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from daemon.config import CustomerConfig
from daemon.service import NotClaimed, QueuedSync
from daemon.store import Store

ACME = CustomerConfig(id="acme", name="Acme AS")
LEASE = timedelta(seconds=30)


async def test_unclaimed_it_is_withdrawn_and_says_so(store: Store) -> None:
    queue = QueuedSync(store, poll_seconds=0.02, claim_timeout=0.2)
    with pytest.raises(NotClaimed, match=r"no daemon claimed the sync of acme within 0\.2 s"):
        await queue.sync(ACME, trigger="cli:kari:1")
    [item] = store.work_items(kind="sync")
    assert (item.state, item.error, item.trigger) == ("failed", "not claimed in time", "cli:kari:1")
    assert store.enqueue_work("sync", "acme") is not None  # nothing left in the way


async def test_a_running_sync_is_waited_for_then_its_own_is_queued_and_carried_out(
    store: Store,
) -> None:
    running = store.enqueue_work("sync", "acme")
    assert running is not None and store.claim_work(lease=LEASE) is not None
    queue = QueuedSync(store, poll_seconds=0.02, claim_timeout=5)
    asked = asyncio.create_task(queue.sync(ACME, trigger="api:olga:2"))
    await asyncio.sleep(0.2)
    assert [w.id for w in store.work_items(kind="sync")] == [running]  # waits its turn
    assert store.finish_work(running)

    async def worker() -> None:  # what a daemon's worker does with the item
        while (item := store.claim_work(lease=LEASE)) is None:
            await asyncio.sleep(0.02)
        assert item.trigger == "api:olga:2"
        store.finish_work(item.id)

    await asyncio.wait_for(worker(), 5)
    done = await asyncio.wait_for(asked, 5)
    assert done is not None and (done.state, done.trigger) == ("done", "api:olga:2")


def test_a_claimed_item_cannot_be_withdrawn(store: Store) -> None:
    item_id = store.enqueue_work("sync", "acme")
    assert item_id is not None and store.claim_work(lease=LEASE) is not None
    assert store.withdraw_work(item_id, reason="x") is False
    item = store.work_item(item_id)
    assert item is not None and item.state == "running"
