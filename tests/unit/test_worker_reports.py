"""What the daemon shows of its worker process's connectors (daemon/worker.py): the
report lines a worker writes, read into the counters /metrics shows and the residuals
the processing report lists."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict

import pytest

from connectors.base import Capability
from connectors.firestore.connector import FirestoreConnector
from connectors.outlook.connector import OutlookConnector
from connectors.zisson.connector import ZissonConnector
from daemon.domain import Residual
from daemon.wiring import RETENTION_SYSTEMS
from daemon.worker import WorkerReports

BACKUPS = Residual(system="zisson", what="backups", retention="not published", note="ask")


def line(instance: str, requests: int, *, residuals: list[Residual] | None = None) -> bytes:
    state = {
        "counters": {"requests": requests, "retries": 1, "throttled": 0},
        "residuals": None if residuals is None else [asdict(r) for r in residuals],
    }
    return json.dumps({"instance": instance, "systems": {"zisson": state}}).encode() + b"\n"


def test_counters_add_up_over_the_workers_the_daemon_started() -> None:
    reports = WorkerReports(["zisson", "outlook"])
    zisson = reports.connectors["zisson"]
    reports.take(line("w1", 5, residuals=[BACKUPS]))
    reports.take(line("w1", 12))  # a later report of the same worker: its total so far
    assert (zisson.requests, zisson.retries, zisson.throttled) == (12, 1, 0)
    assert reports.instance == "w1"
    reports.worker_ended()
    assert reports.instance is None and zisson.requests == 12
    reports.take(line("w2", 3))
    assert (zisson.requests, zisson.retries) == (15, 2)
    assert zisson.residuals() == [BACKUPS]  # as last reported
    assert reports.connectors["outlook"].requests == 0  # nothing reported for it


def test_a_line_that_is_no_report_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    reports = WorkerReports(["zisson"])
    reports.take(b"Traceback (most recent call last):\n")
    reports.take(b'{"systems": {}}\n')
    reports.take(line("w1", 2))
    assert reports.connectors["zisson"].requests == 2


def test_residuals_wait_for_the_first_report_of_a_starting_worker() -> None:
    reports = WorkerReports(["zisson"])
    timer = threading.Timer(0.2, reports.take, args=(line("w1", 0, residuals=[BACKUPS]),))
    timer.start()
    try:
        assert reports.connectors["zisson"].residuals() == [BACKUPS]
    finally:
        timer.join()


def test_the_retention_systems_known_without_a_backend_are_the_connectors_own() -> None:
    capable = {
        c.system
        for c in (FirestoreConnector, OutlookConnector, ZissonConnector)
        if Capability.RETENTION in c.capabilities
    }
    assert capable == RETENTION_SYSTEMS


def test_residuals_do_not_wait_once_a_worker_ended_without_a_report() -> None:
    reports = WorkerReports(["zisson"])
    reports.worker_ended()  # it could not open its connectors, say
    started = time.monotonic()
    assert reports.connectors["zisson"].residuals() == []
    assert time.monotonic() - started < 1
