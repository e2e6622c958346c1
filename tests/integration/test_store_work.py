"""Work items: one per kind and key at a time, claimed once, taken over after a lease."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.store import Store
from daemon.store.work import InstanceLocked, SingleInstanceLock
from tests.fixtures.store import OpenStore

LEASE = timedelta(seconds=30)


def test_a_duplicate_trigger_does_nothing_while_one_is_queued_or_running(store: Store) -> None:
    first = store.enqueue_work("sync", "kunde-01")
    assert first is not None
    assert store.enqueue_work("sync", "kunde-01") is None
    assert store.enqueue_work("sync", "kunde-02") is not None
    item = store.claim_work(lease=LEASE)
    assert item is not None and item.key == "kunde-01" and item.state == "running"
    assert item.id == first and item.trigger is None
    assert store.enqueue_work("sync", "kunde-01") is None  # still running
    active = store.active_work("sync", "kunde-01")
    assert active is not None and active.id == first
    assert store.finish_work(item.id, state="failed", error="TimeoutError")
    done = store.work_item(first)
    assert done is not None and (done.state, done.error) == ("failed", "TimeoutError")
    assert store.active_work("sync", "kunde-01") is None
    again = store.enqueue_work("sync", "kunde-01", trigger="api:olga:1a2b")  # a new one queues
    assert again is not None
    queued = store.work_item(again)
    assert queued is not None and (queued.state, queued.trigger) == ("queued", "api:olga:1a2b")
    assert store.work_item(10_000) is None


def test_an_item_is_claimed_by_one_instance_and_taken_over_when_its_lease_runs_out(
    store: Store, open_store: OpenStore
) -> None:
    other = open_store()
    store.enqueue_work("sync", "kunde-01")
    mine = store.claim_work(lease=timedelta(milliseconds=1))
    assert mine is not None
    assert other.claim_work(lease=LEASE) is not None  # the lease ran out: taken over
    assert store.renew_work(mine.id, lease=LEASE) is False  # and it is no longer ours
    assert store.finish_work(mine.id) is False
    assert other.claim_work(lease=LEASE) is None


def test_concurrent_claims_never_hand_out_the_same_item(
    store: Store, open_store: OpenStore
) -> None:
    for i in range(40):
        store.enqueue_work("sync", f"kunde-{i:02d}")
    stores = [open_store() for _ in range(4)]
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(s: Store) -> None:
        while (item := s.claim_work(lease=LEASE)) is not None:
            with lock:
                claimed.append(item.id)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40


def test_heartbeats_say_who_leads(store: Store) -> None:
    store.heartbeat(leader=True)
    store.heartbeat(leader=True)
    [me] = store.instances(seen_within=timedelta(minutes=1))
    assert me.id == store.instance_id and me.is_leader
    store.forget_instance()
    assert not store.instances()[0].is_leader


def test_sqlite_refuses_a_second_daemon_on_the_same_file(tmp_path: Path) -> None:
    database = str(tmp_path / "pdsync.db")
    first = SingleInstanceLock(database)
    first.acquire()
    try:
        with pytest.raises(InstanceLocked, match="several instances need PostgreSQL"):
            SingleInstanceLock(database).acquire()
    finally:
        first.release()
    again = SingleInstanceLock(database)
    again.acquire()
    again.release()


def test_an_idle_claim_does_not_wait_for_another_writer(tmp_path: Path) -> None:
    """Idle workers ask every second: with nothing queued, a claim must not queue up for
    SQLite's write lock behind another process's long write (a CLI purge, a migration)."""
    path = tmp_path / "store.db"
    store = Store.open(f"sqlite:///{path}", master_key=bytes(32))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock
        assert store.claim_work(lease=LEASE) is None  # answered, not stuck or failed
        writer.execute("ROLLBACK")
        store.enqueue_work("sync", "kunde-01")
        assert store.claim_work(lease=LEASE) is not None
    finally:
        writer.close()
        store.close()


def test_whether_work_is_claimable_is_told_by_kind_without_claiming_it(store: Store) -> None:
    assert not store.work_claimable()
    store.enqueue_work("deadlines", "all")
    assert store.work_claimable() and store.work_claimable(kinds=("deadlines", "checkpoint"))
    assert not store.work_claimable(kinds=("sync", "retention", "erasures"))
    store.enqueue_work("sync", "kunde-01")
    assert store.work_claimable(kinds=("sync", "retention", "erasures"))
    item = store.claim_work(lease=timedelta(milliseconds=1), kinds=("sync",))
    assert item is not None and item.kind == "sync"
    # Claimed, its lease ran out: claimable again (a dead worker's item).
    assert store.work_claimable(kinds=("sync",))
    assert store.claim_work(lease=LEASE, kinds=("sync",)) is not None
    assert not store.work_claimable(kinds=("sync",))
    assert store.work_claimable(kinds=("deadlines",))
