"""The worker process: the daemon's syncs, retention runs and erasures, out of its process.

`pdsync run` (with `daemon.worker_process`, the default) keeps the store, the leader's
schedules, the admin API and the store-only work items (deadlines, ledger checkpoints,
the API's records) in its own process, which never imports a connector. The work that
talks to the systems (CONNECTOR_KINDS) is claimed by a worker process it starts,
`python -m daemon _worker` (main below), when such work is queued, and that ends once none came for
`daemon.worker_idle_seconds`. So the connectors' libraries (google-cloud-firestore with
grpc and protobuf, msal with requests: ~45 MB) and whatever a large first sync left on
the heap (CPython rarely gives it back) are returned to the system while the daemon
idles: an idle daemon of 20 customers holds ~95 MB, not ~140 MB.

The worker claims work items like any instance (leases, one per customer and kind), so a
worker that dies loses nothing: its items are taken again when their leases run out,
and its runs are marked interrupted at once. It dies with the daemon (PR_SET_PDEATHSIG
on Linux), as the same work did in one process; SIGTERM drains it as it does the daemon.

What the admin API shows of the connectors comes over a pipe (`--report-fd`): a JSON
line when the worker has opened its connectors and after each work item, with each
system's request, retry and 429 counters and what it keeps after a delete (residuals).
WorkerReports turns those into the connector-like objects daemon/api/metrics.py and the
processing report read.

This module's daemon side imports nothing of the connectors; the worker side does so
only in `work`, and never the admin API (daemon/workloop.py, not daemon/service.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from daemon.domain import Residual
from daemon.entry import WORKER_COMMAND
from daemon.store import Store
from daemon.store.work import WorkSignal
from daemon.workloop import CONNECTOR_KINDS

log = structlog.get_logger("pdsync.worker")

# The connectors' counters the admin API's /metrics shows (daemon/api/metrics.py).
COUNTERS = ("requests", "retries", "throttled")
# A worker that failed is started again after this many seconds (per failure in a row,
# the last one repeating): a worker that cannot start does not spin.
RESTART_BACKOFF_SECONDS = (1.0, 5.0, 30.0, 60.0)
# How long the processing report waits for a worker's first report (its residuals).
FIRST_REPORT_SECONDS = 20.0
REPORT_LINE_LIMIT = 1 << 20
# Between the daemon's store instance id and the worker's pid, in the worker's.
WORKER_INSTANCE_MARK = "/worker-"


# -- the daemon's side ---------------------------------------------------------------------


class ReportedConnector:
    """A system's connector as its workers reported it: counters summed over every
    worker since the daemon started, residuals as last reported."""

    def __init__(self, system: str, first_report: threading.Event) -> None:
        self.system = system
        self._first_report = first_report
        self._ended: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._live: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._residuals: list[Residual] | None = None

    @property
    def requests(self) -> int:
        return self._ended["requests"] + self._live["requests"]

    @property
    def retries(self) -> int:
        return self._ended["retries"] + self._live["retries"]

    @property
    def throttled(self) -> int:
        return self._ended["throttled"] + self._live["throttled"]

    def residuals(self) -> list[Residual]:
        """What the system keeps after a delete; waits up to FIRST_REPORT_SECONDS for a
        worker's first report (a worker is started with the daemon), unless a worker
        ended without one (then nothing is known: empty). Called from the API's thread
        pool, never on the event loop."""
        if self._residuals is None:
            self._first_report.wait(FIRST_REPORT_SECONDS)
        return list(self._residuals or [])

    def _update(self, counters: Mapping[str, Any], residuals: list[Any] | None) -> None:
        for name in COUNTERS:
            value = counters.get(name)
            if isinstance(value, int):
                self._live[name] = value
        if residuals is not None:
            self._residuals = [Residual(**r) for r in residuals]

    def _worker_ended(self) -> None:
        for name in COUNTERS:
            self._ended[name] += self._live[name]
            self._live[name] = 0


class WorkerReports:
    """What the daemon knows of its workers' connectors (see the module docstring)."""

    def __init__(self, systems: list[str]) -> None:
        self._first = threading.Event()
        self.connectors: dict[str, ReportedConnector] = {
            s: ReportedConnector(s, self._first) for s in systems
        }
        self.instance: str | None = None  # the store instance id of the running worker

    def take(self, line: bytes) -> None:
        """One report line; a line that is not one is logged (by length) and skipped."""
        try:
            report = json.loads(line)
            systems = report["systems"]
            instance = report["instance"]
        except (ValueError, KeyError, TypeError):
            log.warning("worker_report_unreadable", length=len(line))
            return
        self.instance = instance if isinstance(instance, str) else None
        for system, state in systems.items():
            connector = self.connectors.get(system)
            if connector is not None and isinstance(state, dict):
                connector._update(state.get("counters") or {}, state.get("residuals"))
        self._first.set()

    def worker_ended(self) -> None:
        for connector in self.connectors.values():
            connector._worker_ended()
        self.instance = None
        self._first.set()  # nobody waits for a report that is not coming


class WorkerProcess:
    """Starts the worker when connector work is queued, and again after it ended or
    failed while such work is still there; stops it with the daemon."""

    def __init__(
        self,
        config_path: Path,
        store: Store,
        work_signal: WorkSignal,
        reports: WorkerReports,
        *,
        stop_seconds: float,
    ) -> None:
        self.config_path = config_path
        self.store = store
        self.work_signal = work_signal
        self.reports = reports
        self.stop_seconds = stop_seconds
        self.started = 0  # workers started, for tests and the log
        self.pid: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        start = True  # once at start: the first work, and the residuals for reports
        while not stop.is_set():
            if not start:
                await self.work_signal.wait(stop)
                start = not stop.is_set() and await self._work_queued()
                continue
            try:
                code = await self._run_one(stop)
            except Exception:  # could not start one (no fork, no executable): try again
                log.exception("worker_start_failed")
                code = -1
            if stop.is_set():
                return
            if code == 0:
                failures = 0
            else:
                failures += 1
                delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS)) - 1]
                log.error("worker_failed", exit_code=code, restart_in_seconds=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            start = not stop.is_set() and await self._work_queued()

    async def _work_queued(self) -> bool:
        try:
            return await asyncio.to_thread(self.store.work_claimable, kinds=CONNECTOR_KINDS)
        except Exception:
            log.exception("worker_work_check_failed")
            return True  # the worker looks for itself

    async def _run_one(self, stop: asyncio.Event) -> int:
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "daemon",
                WORKER_COMMAND,
                "--config",
                str(self.config_path),
                "--report-fd",
                str(write_fd),
                "--parent",
                str(os.getpid()),
                "--instance-of",
                self.store.instance_id,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.started += 1
        self.pid = process.pid
        log.info("worker_started", pid=process.pid)
        reader = asyncio.create_task(self._read_reports(read_fd))
        try:
            exited = asyncio.ensure_future(process.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait((exited, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not exited.done():
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), self.stop_seconds)
                except TimeoutError:
                    log.error("worker_stop_timeout", pid=process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            code = await exited
        finally:
            if process.returncode is None:  # cancelled: the daemon is going
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(process.wait()), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 5)
            instance = self.reports.instance
            self.reports.worker_ended()
            self.pid = None
        if code != 0 and instance is not None:
            # Its runs are over: say so now, not when the daemon next starts.
            marked = await asyncio.to_thread(self.store.mark_interrupted_runs, of_instance=instance)
            if marked:
                log.warning("runs_interrupted_by_worker_exit", count=len(marked))
        log.info("worker_ended", pid=process.pid, exit_code=code)
        return code

    async def _read_reports(self, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=REPORT_LINE_LIMIT)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self.reports.take(line)
        except ValueError:  # a line beyond the limit: the rest is not trusted
            log.error("worker_report_too_long", limit=REPORT_LINE_LIMIT)
        finally:
            transport.close()


# -- the worker's side ---------------------------------------------------------------------


class _Reporter:
    """Writes the worker's report lines to the daemon (see the module docstring)."""

    def __init__(self, fd: int, instance: str, connectors: Mapping[str, object]) -> None:
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._instance = instance
        self._connectors = connectors

    def send(self) -> None:
        systems: dict[str, Any] = {}
        for system, connector in self._connectors.items():
            counters = {n: getattr(connector, n, None) for n in COUNTERS}
            listed = getattr(connector, "residuals", None)
            systems[system] = {
                "counters": {n: v for n, v in counters.items() if isinstance(v, int)},
                "residuals": [asdict(r) for r in listed()] if callable(listed) else None,
            }
        line = json.dumps({"instance": self._instance, "systems": systems})
        try:
            self._file.write(line + "\n")
        except (BrokenPipeError, OSError):
            log.warning("worker_report_lost")  # the daemon is gone; PDEATHSIG follows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def _die_with_parent(parent: int) -> None:
    """Be killed when the daemon dies, as its own work would be (Linux); exit at once
    when it is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(1)


async def _end_when_idle(stop: asyncio.Event, in_hand: Any, idle_seconds: float) -> None:
    """Set `stop` once no work item was in hand or taken for `idle_seconds`."""
    quiet_since, taken = time.monotonic(), in_hand.taken
    look = min(5.0, idle_seconds / 2)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), look)
        now = time.monotonic()
        if in_hand or in_hand.taken != taken:
            quiet_since, taken = now, in_hand.taken
        elif now - quiet_since >= idle_seconds:
            log.info("worker_idle", idle_seconds=idle_seconds)
            stop.set()


def worker_instance(daemon_instance: str) -> str:
    """The worker's store instance id, in its runs and work items: the daemon's, and the
    worker's pid (`pdsync` and ops tell whose worker claimed an item)."""
    return f"{daemon_instance}{WORKER_INSTANCE_MARK}{os.getpid()}"


async def work(settings: Any, report_fd: int, *, daemon_instance: str) -> int:
    """Open the connectors and carry out CONNECTOR_KINDS work items until idle or told
    to stop (SIGTERM, SIGINT); 0 then."""
    from daemon.affinity import share_mailboxes
    from daemon.collector import WorkInHand, collect_cycles
    from daemon.proof import open_ledger
    from daemon.wiring import open_connectors
    from daemon.workloop import (
        IDLE_POLL_SECONDS,
        IDLE_PROBE_SQLITE_SECONDS,
        connector_handlers,
        drain,
        work_items,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Every line the worker logs says so (its tasks and threads copy this context).
    structlog.contextvars.bind_contextvars(worker=os.getpid())
    async with contextlib.AsyncExitStack() as stack:
        store = Store.open(
            settings.store.url,
            master_key=settings.store.master_key_bytes(),
            instance_id=worker_instance(daemon_instance),
        )
        stack.callback(store.close)
        connectors = await open_connectors(settings, stack, store=store)
        if store.dialect == "postgresql":
            share_mailboxes(connectors, store, stack)
        ledger = open_ledger(settings, store)
        handlers, sync = connector_handlers(settings, store, connectors, ledger)
        reporter = _Reporter(report_fd, store.instance_id, connectors)
        stack.callback(reporter.close)
        reporter.send()

        async def reported(handler: Any, item: Any) -> object:
            try:
                return await handler(item)
            finally:
                reporter.send()

        reporting = {k: (lambda item, h=h: reported(h, item)) for k, h in handlers.items()}
        lease = settings.daemon.lease_seconds
        work_signal = WorkSignal(
            store,
            fallback_seconds=min(IDLE_POLL_SECONDS, lease / 2),
            probe_seconds=IDLE_PROBE_SQLITE_SECONDS,
        )
        work_signal.start()
        stack.callback(work_signal.close)
        in_hand = WorkInHand()
        customers = {c.id: c for c in settings.customers}
        tasks = [
            *work_items(
                settings, store, reporting, stop, customers, work_signal, in_hand, CONNECTOR_KINDS
            ),
            asyncio.create_task(collect_cycles(stop, busy=in_hand.busy_since_asked)),
            asyncio.create_task(_end_when_idle(stop, in_hand, settings.daemon.worker_idle_seconds)),
        ]
        log.info("worker_ready", instance=store.instance_id, systems=sorted(connectors))
        await stop.wait()
        sync.stop()
        await drain(tasks)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> int:
    from daemon import logs
    from daemon.collector import collector_thresholds
    from daemon.config import ConfigError
    from daemon.entry import config_error, read_settings

    parser = argparse.ArgumentParser(prog=f"python -m daemon {WORKER_COMMAND}")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--instance-of", required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    try:
        settings = read_settings(args.config)
    except ConfigError as exc:
        return config_error(exc)
    logs.configure(format=settings.log.format, level=settings.log.level, command=False)
    with collector_thresholds():
        return asyncio.run(work(settings, args.report_fd, daemon_instance=args.instance_of))
