"""What the tests of several daemons on one PostgreSQL share: their config, waiting, and
the check that no customer was ever synced twice at once."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from daemon.store import Store
from sandbox.up import Sandbox

T = TypeVar("T")

# Every test here runs on PostgreSQL only (SQLite refuses a second daemon).
ON_POSTGRES = pytest.mark.parametrize(
    "store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def cluster_config(box: Sandbox, store_url: str, path: Path, *, interval: int = 30) -> Path:
    """The sandbox's config on `store_url`, with short leases and sync every `interval` s."""
    text = box.config_path.read_text(encoding="utf-8")
    text = re.sub(r'^url = ".*"$', f'url = "{store_url}"', text, count=1, flags=re.M)
    text = text.replace("interval_seconds = 30", f"interval_seconds = {interval}")
    text += "\n[daemon]\nlease_seconds = 6\nleader_poll_seconds = 1\n"
    path.write_text(text, encoding="utf-8")
    return path


def children(pid: int) -> list[int]:
    """A daemon's live child processes (its worker, daemon/worker.py)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_no_sync_overlapped(store: Store) -> set[str]:
    """No two sync runs of one customer ever ran at once; the customers that had runs."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run in store.list_runs(limit=10_000):
        if run.kind == "sync" and run.finished_at is not None and run.customer_id:
            spans[run.customer_id].append((run.started_at.timestamp(), run.finished_at.timestamp()))
    for customer, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start + 0.001, f"{customer}: two syncs overlapped"
    return set(spans)


class Daemons:
    """`pdsync run` processes on one config, each logging to its own file under `logs`."""

    def __init__(self, config: Path, logs: Path, env: list[dict[str, str]]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
        self.logs = [open(logs / f"daemon-{i}.log", "w") for i in range(len(env))]  # noqa: SIM115
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base, **extra},
            )
            for log, extra in zip(self.logs, env, strict=True)
        ]

    def stop(self) -> dict[int, int]:
        """SIGTERM to those still running; every exit code by pid."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {p.pid: p.wait(timeout=90) for p in self.processes}
        for log in self.logs:
            log.close()
        return codes
