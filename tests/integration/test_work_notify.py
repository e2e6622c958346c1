"""Idle instances wait to be told about work (LISTEN/NOTIFY on PostgreSQL) instead of
polling, and heartbeat less often while idle; a dead instance's lease is still found."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from daemon.service import _lead, _work
from daemon.store import Store
from daemon.store.rows import WorkItem
from daemon.store.work import Leadership, WorkSignal
from tests.fixtures.store import OpenStore

LEASE = timedelta(seconds=30)
postgres_only = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


async def run_worker(
    store: Store, signal: WorkSignal, done: asyncio.Queue[tuple[str, float]]
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    async def carry(item: WorkItem) -> None:
        await done.put((item.key, time.monotonic()))

    stop = asyncio.Event()
    handlers = {"deadlines": carry}
    task = asyncio.create_task(_work(store, handlers, stop, {}, LEASE, signal))
    return stop, task


@postgres_only
async def test_work_queued_by_another_instance_wakes_an_idle_one_at_once(
    store: Store, open_store: OpenStore
) -> None:
    other = open_store()  # another instance (or the CLI) on the same database
    signal = WorkSignal(store, fallback_seconds=30)  # polling alone would take 30 s
    signal.start()
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    stop, task = await run_worker(store, signal, done)
    try:
        assert await asyncio.to_thread(signal.listening.wait, 10)
        await asyncio.sleep(0.3)  # the worker has found nothing and waits
        for key in ("first", "second"):
            queued_at = time.monotonic()
            assert await asyncio.to_thread(other.enqueue_work, "deadlines", key) is not None
            got, finished_at = await asyncio.wait_for(done.get(), 10)
            assert got == key
            assert finished_at - queued_at < 5.0  # polling alone: 30 s (a busy CI: slow)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        signal.close()
    assert not signal.listening.is_set()


async def test_work_queued_in_the_same_instance_wakes_its_workers_on_any_store(
    store: Store,
) -> None:
    signal = WorkSignal(store, fallback_seconds=30)
    signal.start()
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    stop, task = await run_worker(store, signal, done)
    try:
        await asyncio.sleep(0.3)
        queued_at = time.monotonic()
        await asyncio.to_thread(store.enqueue_work, "deadlines", "now")
        got, finished_at = await asyncio.wait_for(done.get(), 10)
        assert got == "now" and finished_at - queued_at < 5.0  # polling alone: 30 s
        # Nothing announced: an idle worker waits out its fallback instead of polling.
        quiet = WorkSignal(store, fallback_seconds=0.5)
        quiet.start()
        if store.dialect == "postgresql":  # it looks once as it starts listening
            assert await asyncio.to_thread(quiet.listening.wait, 10)
            await asyncio.sleep(0.1)
            await asyncio.wait_for(quiet.wait(asyncio.Event()), 5)
        started = time.monotonic()
        await asyncio.wait_for(quiet.wait(asyncio.Event()), 5)
        quiet.close()
        assert time.monotonic() - started >= 0.45
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        signal.close()


async def test_the_fallback_poll_finds_a_lease_that_ran_out(
    store: Store, open_store: OpenStore
) -> None:
    dead = open_store()
    assert dead.enqueue_work("deadlines", "orphan") is not None
    assert dead.claim_work(lease=timedelta(milliseconds=200)) is not None  # then it "dies"
    signal = WorkSignal(store, fallback_seconds=0.3)
    signal.start()
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    stop, task = await run_worker(store, signal, done)
    try:
        got, _ = await asyncio.wait_for(done.get(), 5)
        assert got == "orphan"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        signal.close()


async def test_an_idle_instance_heartbeats_less_often_than_it_polls(store: Store) -> None:
    leadership = Leadership(store._engine, store.dialect)
    stop = asyncio.Event()
    poll = 0.1
    task = asyncio.create_task(
        _lead(store, leadership, lambda: _NoSchedule(), stop, poll)  # type: ignore[arg-type,return-value]
    )
    seen = set()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            rows = await asyncio.to_thread(store.instances)
            seen.update(r.last_seen for r in rows)
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        leadership.release()
    [me] = store.instances()
    assert me.is_leader
    # Every 3 polls (0.3 s) while idle: about 5 heartbeats in 1.5 s, not 15.
    assert 3 <= len(seen) <= 7


class _NoSchedule:
    """Stands in for the leader's schedules (what they run is not under test here)."""

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass
