"""`pdsync run` carries out the connectors' work in a worker process (daemon/worker.py).

Against the sandbox, with real processes: the daemon's own process never maps the
connectors' libraries (grpc's extension, Firestore's protobuf) while its worker does the
syncs; the worker ends when idle and is started again by new work; a worker killed in a
sync has its run marked interrupted at once and its work item carried out by the next
worker; and a worker dies with its daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon import config
from daemon.store import Store
from daemon.store.rows import RunStatus
from sandbox.up import Sandbox, running
from tests.e2e.cluster import children

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

IDLE_SECONDS = 2
LEASE_SECONDS = 3


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@contextmanager
def daemon_on(box: Sandbox, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with box.config_path.open("a", encoding="utf-8") as file:
        file.write(
            f"\n[daemon]\nlease_seconds = {LEASE_SECONDS}\nworker_idle_seconds = {IDLE_SECONDS}\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(box.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            yield daemon
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    if not Path("/proc/self/task").exists():
        pytest.fail("these tests read /proc (Linux)")
    with running(tmp_path / "sandbox", seed=11, customers=2, contacts=8) as sandbox:
        yield sandbox


def test_the_worker_does_the_syncs_ends_when_idle_and_comes_back_for_new_work(
    box: Sandbox, tmp_path: Path
) -> None:
    settings = config.load(box.config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        with daemon_on(box, tmp_path / "daemon.log") as daemon:
            customers = [c.id for c in settings.customers]

            def first_syncs_done() -> bool:
                done = {
                    r.customer_id
                    for r in store.list_runs(limit=100)
                    if r.kind == "sync" and r.status is RunStatus.COMPLETED
                }
                return set(customers) <= done

            wait_for("a worker", lambda: children(daemon.pid))
            [worker] = children(daemon.pid)
            wait_for("the first syncs", first_syncs_done)
            # The worker holds the connectors' libraries; the daemon never loaded them.
            assert "cygrpc" in maps(worker)
            assert "cygrpc" not in maps(daemon.pid) and "_upb" not in maps(daemon.pid)
            ours = {i.id for i in store.instances() if i.pid == daemon.pid}
            runs = [r for r in store.list_runs(limit=100) if r.kind == "sync"]
            assert ours and not {r.instance_id for r in runs} & ours

            # Nothing to do for IDLE_SECONDS: the worker ends, and the daemon goes on.
            wait_for("the worker to end", lambda: not children(daemon.pid), timeout=30)
            assert daemon.poll() is None

            # New work (the CLI's and API's "sync now" queue it the same way).
            item = store.enqueue_work("sync", customers[0], trigger="test")
            assert item is not None
            wait_for("a new worker", lambda: children(daemon.pid), timeout=30)
            finished = wait_for(
                "the queued sync",
                lambda: (w := store.work_item(item)) is not None and w.state == "done" and w,
            )
            assert finished
            assert maps(daemon.pid).count("cygrpc") == 0
        assert daemon.returncode == 0
    finally:
        store.close()
    log = (tmp_path / "daemon.log").read_text(encoding="utf-8")
    assert log.count('"worker_started"') >= 2 and '"worker_idle"' in log
    # The worker's lines say whose they are: a sync's, and the worker's own.
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    by_event = {x["event"]: x for x in lines}
    assert isinstance(by_event["sync_finished"].get("worker"), int)
    assert isinstance(by_event["worker_idle"].get("worker"), int)
    assert "worker" not in by_event["worker_started"]  # the daemon's own line
    assert '"worker_failed"' not in log


def test_a_killed_worker_s_run_is_interrupted_and_its_work_done_by_the_next_one(
    box: Sandbox, tmp_path: Path
) -> None:
    settings = config.load(box.config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        box.zisson.set_faults(latency_ms=400)  # a sync that takes a while
        with daemon_on(box, tmp_path / "daemon.log") as daemon:
            customer = settings.customers[0].id

            def running_sync() -> object:
                return [
                    r
                    for r in store.list_runs(limit=100, customer_id=customer)
                    if r.kind == "sync" and r.status is RunStatus.RUNNING
                ]

            [run] = wait_for("a sync under way", running_sync)  # type: ignore[misc]
            # Killed once it holds its jwts: a process killed between Zisson's answer to
            # a refresh-token exchange and the store's write of the rotated token loses
            # the token (as a daemon killed there would), which is not what this is about.
            rotating = sum(
                1 for c in settings.customers if c.zisson is not None and c.zisson.api == "json"
            )
            wait_for("the jwts", lambda: box.zisson.counters["refreshes"] >= rotating)
            time.sleep(0.5)
            [worker] = children(daemon.pid)
            os.kill(worker, signal.SIGKILL)
            interrupted = wait_for(
                "the run marked interrupted",
                lambda: getattr(store.get_run(run.id), "status", None) is RunStatus.INTERRUPTED,
                timeout=20,
            )
            assert interrupted and daemon.poll() is None
            box.zisson.set_faults()

            def completed_after() -> bool:
                return any(
                    r.kind == "sync" and r.status is RunStatus.COMPLETED
                    for r in store.list_runs(limit=100, customer_id=customer)
                )

            # The next worker takes the item once its lease ran out, and finishes it.
            wait_for("a new worker", lambda: children(daemon.pid) not in ([], [worker]))
            wait_for("the sync carried out again", completed_after, timeout=60)

            # The daemon killed: its worker dies with it (PR_SET_PDEATHSIG).
            store.enqueue_work("sync", settings.customers[1].id, trigger="test")
            box.zisson.set_faults(latency_ms=400)
            wait_for("a worker", lambda: children(daemon.pid))
            [worker] = children(daemon.pid)
            daemon.kill()
            daemon.wait(timeout=10)
            wait_for("the worker to die with the daemon", lambda: not alive(worker), timeout=10)
    finally:
        store.close()
        box.zisson.set_faults()
    log = (tmp_path / "daemon.log").read_text(encoding="utf-8")
    assert '"worker_failed"' in log and '"runs_interrupted_by_worker_exit"' in log
