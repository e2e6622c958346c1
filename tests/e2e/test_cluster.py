"""Three daemons on one PostgreSQL against the sandbox: one leads, all work, kills hurt
nothing — another leads within 15 s, no customer is synced twice at once, and no work
item is lost."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import config
from daemon.store import Store
from sandbox.up import running

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def wait_for(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    "store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_three_daemons_share_the_work_and_survive_kills(store_url: str, tmp_path: Path) -> None:
    with running(tmp_path / "sandbox", seed=4, customers=3, contacts=8) as box:
        text = box.config_path.read_text(encoding="utf-8")
        text = re.sub(r'^url = ".*"$', f'url = "{store_url}"', text, count=1, flags=re.M)
        text = text.replace("interval_seconds = 30", "interval_seconds = 5")
        text += "\n[daemon]\nlease_seconds = 6\nleader_poll_seconds = 1\n"
        path = tmp_path / "cluster.toml"
        path.write_text(text, encoding="utf-8")
        settings = config.load(path)
        box.zisson.set_faults(latency_ms=150)  # syncs long enough to be killed mid-way
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
        logs = [open(tmp_path / f"daemon-{i}.log", "w") for i in range(3)]  # noqa: SIM115
        daemons = [
            subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            for log in logs
        ]
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

            # Kill an instance in the middle of a work item: it must be taken over.
            running_item = wait_for(
                lambda: next(
                    (
                        w
                        for w in store.work_items(limit=50)
                        if w.state == "running"
                        and w.claimed_by not in killed_instances
                        and w.kind == "sync"
                    ),
                    None,
                ),
                30,
                "a running sync",
            )
            victim = next(i for i in store.instances() if i.id == running_item.claimed_by)
            by_pid[victim.pid].send_signal(signal.SIGKILL)
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
            assert taken_over.claimed_by not in killed_instances
            assert taken_over.attempts >= 2

            # The survivor keeps every customer in step.
            time.sleep(6)
        finally:
            for process in daemons:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            codes = {p.pid: p.wait(timeout=90) for p in daemons}
            for log in logs:
                log.close()
        survivors = [p for p in daemons if p.pid not in {leader.pid, victim.pid}]
        assert [codes[p.pid] for p in survivors] == [0]

        # No customer was ever synced twice at once.
        runs = [r for r in store.list_runs(limit=10_000) if r.kind == "sync"]
        spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for run in runs:
            if run.finished_at is not None and run.customer_id:
                spans[run.customer_id].append(
                    (run.started_at.timestamp(), run.finished_at.timestamp())
                )
        assert set(spans) == {c.id for c in settings.customers}
        for customer, intervals in spans.items():
            intervals.sort()
            for (_, end), (start, _) in itertools.pairwise(intervals):
                assert end <= start + 0.001, f"{customer}: two syncs overlapped"
        # No work item was lost: nothing is left running, and whatever the killed
        # instances held was finished by another.
        items = store.work_items(limit=10_000)
        assert not [w for w in items if w.state == "running"]
        store.close()
