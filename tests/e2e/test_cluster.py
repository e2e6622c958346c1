"""Three daemons on one PostgreSQL against the sandbox: one leads, all work, kills hurt
nothing — another leads within 15 s, no customer is synced twice at once, and no work
item is lost."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import config
from daemon.store import Store
from daemon.worker import WORKER_INSTANCE_MARK
from sandbox.up import running
from tests.e2e.cluster import (
    ON_POSTGRES,
    Daemons,
    assert_no_sync_overlapped,
    children,
    cluster_config,
    wait_for,
)

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def daemon_of(claimed_by: str | None) -> str:
    """The daemon's instance id, from its own or its worker process's (daemon/worker.py)."""
    return (claimed_by or "").split(WORKER_INSTANCE_MARK)[0]


@ON_POSTGRES
def test_three_daemons_share_the_work_and_survive_kills(store_url: str, tmp_path: Path) -> None:
    with running(tmp_path / "sandbox", seed=4, customers=3, contacts=8) as box:
        path = cluster_config(box, store_url, tmp_path / "cluster.toml", interval=5)
        settings = config.load(path)
        box.zisson.set_faults(latency_ms=150)  # syncs long enough to be killed mid-way
        cluster = Daemons(path, tmp_path, [{}, {}, {}])
        daemons = cluster.processes
        by_pid = {p.pid: p for p in daemons}
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        killed_instances: set[str] = set()
        try:
            alive = timedelta(seconds=4)
            leader = wait_for(
                lambda: next((i for i in store.instances(seen_within=alive) if i.is_leader), None),
                60,
                "a leader",
            )
            wait_for(
                lambda: (
                    len(
                        [
                            r
                            for r in store.list_runs(limit=100)
                            if r.kind == "sync" and r.status == "completed"
                        ]
                    )
                    >= 3
                ),
                60,
                "three completed syncs",
            )

            by_pid[leader.pid].send_signal(signal.SIGKILL)
            killed_instances.add(leader.id)
            killed_at = time.monotonic()
            successor = wait_for(
                lambda: next(
                    (
                        i
                        for i in store.instances(seen_within=timedelta(seconds=2))
                        if i.is_leader and i.id != leader.id
                    ),
                    None,
                ),
                20,
                "a new leader",
            )
            assert time.monotonic() - killed_at <= 15
            assert successor.pid in by_pid

            # Kill an instance in the middle of a work item: it must be taken over. The
            # instance is frozen first and the item looked at again, so that it cannot
            # finish the item between the look and the kill (then it is let go on, and
            # another running item is chosen).
            deadline = time.monotonic() + 60
            while True:
                running_item = wait_for(
                    lambda: next(
                        (
                            w
                            for w in store.work_items(limit=50)
                            if w.state == "running"
                            and daemon_of(w.claimed_by) not in killed_instances
                            and w.kind == "sync"
                        ),
                        None,
                    ),
                    30,
                    "a running sync",
                )
                # The daemon whose worker process claimed it (daemon/worker.py).
                daemon_id = daemon_of(running_item.claimed_by)
                victim = next(i for i in store.instances() if i.id == daemon_id)
                frozen = [victim.pid, *children(victim.pid)]
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                now = next(w for w in store.work_items(limit=200) if w.id == running_item.id)
                if now.state == "running" and now.claimed_by == running_item.claimed_by:
                    by_pid[victim.pid].send_signal(signal.SIGKILL)  # its worker dies with it
                    break
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
                assert time.monotonic() < deadline, "no sync was still running once frozen"
            killed_instances.add(victim.id)
            taken_over = wait_for(
                lambda: next(
                    (
                        w
                        for w in store.work_items(limit=200)
                        if w.id == running_item.id and w.state == "done"
                    ),
                    None,
                ),
                40,
                "the killed instance's work item to be finished by another",
            )
            assert daemon_of(taken_over.claimed_by) not in killed_instances
            assert taken_over.attempts >= 2

            # The survivor keeps every customer in step.
            time.sleep(6)
        except BaseException:
            store.close()
            raise
        finally:
            codes = cluster.stop()
        survivors = [p for p in daemons if p.pid not in {leader.pid, victim.pid}]
        assert [codes[p.pid] for p in survivors] == [0]

        # No customer was ever synced twice at once.
        assert assert_no_sync_overlapped(store) == {c.id for c in settings.customers}
        # No work item was lost: nothing is left running, and whatever the killed
        # instances held was finished by another.
        items = store.work_items(limit=10_000)
        assert not [w for w in items if w.state == "running"]
        store.close()
