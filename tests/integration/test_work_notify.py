"""Idle instances wait to be told about work (LISTEN/NOTIFY on PostgreSQL) instead of
polling, and heartbeat less often while idle; a dead instance's lease is still found."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.service import _lead
from daemon.store import Store
from daemon.store.rows import WorkItem
from daemon.store.work import Leadership, WorkSignal, _CommitProbe
from daemon.workloop import work as _work
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


async def until(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


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


sqlite_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@sqlite_only
async def test_on_sqlite_work_queued_by_another_process_wakes_an_idle_worker_at_the_next_look(
    store: Store, open_store: OpenStore
) -> None:
    other = open_store()  # the CLI, say: another process on the same file
    signal = WorkSignal(store, fallback_seconds=30, probe_seconds=0.2)  # polling: 30 s
    signal.start()
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    stop, task = await run_worker(store, signal, done)
    try:
        await asyncio.sleep(0.3)  # the worker has found nothing and waits
        for key in ("first", "second"):
            queued_at = time.monotonic()
            assert await asyncio.to_thread(other.enqueue_work, "deadlines", key) is not None
            got, finished_at = await asyncio.wait_for(done.get(), 10)
            assert got == key
            assert finished_at - queued_at < 5.0  # a look every 0.2 s (a busy CI: slow)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        signal.close()


@sqlite_only
async def test_on_sqlite_an_idle_worker_does_not_ask_for_work_while_nothing_is_committed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = 0
    claim = store.claim_work

    def counted(**kwargs: object) -> WorkItem | None:
        nonlocal claims
        claims += 1
        return claim(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "claim_work", counted)
    signal = WorkSignal(store, fallback_seconds=30, probe_seconds=0.05)
    signal.start()
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    stop, task = await run_worker(store, signal, done)
    try:
        await asyncio.sleep(1.0)  # 20 looks at the commit counter, nothing committed
        assert claims == 1  # the first look for work, as it starts
        # A commit that queues nothing (a heartbeat) costs one look, not a poll.
        await asyncio.to_thread(store.heartbeat, leader=True)
        await asyncio.sleep(0.5)
        assert claims == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        signal.close()


@sqlite_only
def test_the_commit_probe_sees_other_connections_commits_and_holds_no_snapshot(
    store: Store, open_store: OpenStore
) -> None:
    probe = _CommitProbe(store._engine.url)
    try:
        assert not probe.changed()
        assert not probe.changed()
        open_store().heartbeat(leader=False)  # another process commits
        assert probe.changed()
        assert not probe.changed()
        store.heartbeat(leader=True)  # this Store's own commits show too
        assert probe.changed()
        # The probe leaves no read transaction open: a checkpoint empties the WAL.
        with store._engine.connect() as conn:
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0
    finally:
        probe.close()


def test_a_probe_that_cannot_read_says_changed(tmp_path: Path) -> None:
    # A directory is no database: the workers then look each time (polling, as before).
    probe = _CommitProbe(sa.make_url(f"sqlite:///{tmp_path}"))
    assert probe.changed() and probe.changed()
    probe.close()


@postgres_only
async def test_closing_stops_the_listening_thread_at_once(store: Store) -> None:
    signal = WorkSignal(store, fallback_seconds=30)
    signal.start()
    assert await asyncio.to_thread(signal.listening.wait, 10)
    started = time.monotonic()
    signal.close()
    assert time.monotonic() - started < 2.0  # not a timer's worth: select() is woken
    assert not signal.listening.is_set()


@postgres_only
async def test_a_listening_connection_the_server_ends_is_made_again(
    store: Store, open_store: OpenStore
) -> None:
    other = open_store()
    signal = WorkSignal(store, fallback_seconds=30)
    signal.start()
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    stop, task = await run_worker(store, signal, done)
    try:
        assert await asyncio.to_thread(signal.listening.wait, 10)
        with other._engine.connect() as conn:  # what a failover or an admin does
            ended = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query = 'LISTEN pdsync_work' AND datname = current_database()"
                )
            ).all()
            conn.commit()
        assert ended == [(True,)]
        await until(lambda: not signal.listening.is_set())  # it saw the connection end
        await until(signal.listening.is_set)  # and listens again, after a 1 s back-off
        await asyncio.sleep(0.3)  # the worker has looked once more and waits
        queued_at = time.monotonic()
        assert await asyncio.to_thread(other.enqueue_work, "deadlines", "again") is not None
        got, finished_at = await asyncio.wait_for(done.get(), 10)
        assert got == "again" and finished_at - queued_at < 5.0  # polling alone: 30 s
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
