"""The daemon: scheduled sync per customer until SIGTERM, then a clean stop."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import structlog

from daemon.config import CustomerConfig, Settings
from daemon.erasure import ErasureService
from daemon.proof import certifier_for, open_ledger
from daemon.retention import RetentionService
from daemon.scheduler import Schedule
from daemon.store import Store
from daemon.sync import SyncService
from daemon.wiring import erasers_for, open_connectors

log = structlog.get_logger("pdsync.daemon")


async def _check_deadlines(store: Store) -> None:
    """Alert on erasures near (last fifth of their time) or past their deadline."""
    now = datetime.now(UTC)
    for row in store.list_erasures(open_only=True):
        if row.deadline <= now:
            log.error(
                "erasure_deadline_passed",
                request_id=row.id,
                customer=row.customer_id,
                state=str(row.state),
                overdue_hours=round((now - row.deadline).total_seconds() / 3600, 1),
            )
        elif row.deadline - now < (row.deadline - row.requested_at) / 5:
            log.warning(
                "erasure_deadline_near",
                request_id=row.id,
                customer=row.customer_id,
                state=str(row.state),
                hours_left=round((row.deadline - now).total_seconds() / 3600, 1),
            )


DRAIN_SECONDS = 120


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set or SIGTERM/SIGINT arrives; the step in flight finishes."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running: set[asyncio.Task[object]] = set()
    async with AsyncExitStack() as stack:
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        stack.callback(store.close)
        interrupted = store.mark_interrupted_runs()
        if interrupted:
            log.warning("runs_interrupted_by_previous_stop", count=interrupted)
        connectors = await open_connectors(settings, stack)
        ledger = open_ledger(settings, store)
        if ledger is not None:
            digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
            ledger.record("config.loaded", config_sha256=digest, customers=len(settings.customers))
        else:
            log.warning("ledger_unsigned", hint="set ledger.signing_key to record proof")
        sync = SyncService(settings, store, connectors, ledger=ledger)
        erasures = ErasureService(
            settings,
            store,
            erasers_for(connectors),
            recorder=ledger,
            certify=certifier_for(settings, ledger),
        )
        schedule = Schedule()

        def tracked(job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                task = asyncio.current_task()
                assert task is not None
                running.add(task)
                try:
                    await job()
                except Exception:
                    log.exception("job_failed")
                finally:
                    running.discard(task)

            return run

        schedule.every(
            "erasures",
            settings.erasure.worker_interval_seconds,
            tracked(erasures.advance_all),
            first_in=1,
        )
        schedule.every(
            "erasure-deadlines", 300, tracked(lambda: _check_deadlines(store)), first_in=5
        )
        if ledger is not None:
            schedule.every(
                "ledger-checkpoint",
                settings.ledger.checkpoint_interval_seconds,
                tracked(lambda: asyncio.to_thread(ledger.checkpoint)),
            )

        def job_for(customer: CustomerConfig) -> Callable[[], Awaitable[None]]:
            return tracked(lambda: sync.sync(customer, trigger="schedule"))

        def retention_for(customer: CustomerConfig) -> Callable[[], Awaitable[None]]:
            return tracked(lambda: retention.run(customer, trigger="schedule"))

        retention = RetentionService(store, connectors, ledger=ledger)
        for customer in settings.customers:
            if any(s in customer.bindings() for s in retention.connectors):
                schedule.every(
                    f"retention:{customer.id}",
                    settings.retention.interval_seconds,
                    retention_for(customer),
                )

        interval = settings.sync.interval_seconds
        for index, customer in enumerate(settings.customers):
            # The first cycles start at once, a second apart; later ones keep the interval.
            schedule.every(
                f"sync:{customer.id}", interval, job_for(customer), first_in=index % interval
            )
        schedule.start()
        log.info(
            "daemon_started",
            customers=len(settings.customers),
            interval_seconds=settings.sync.interval_seconds,
            systems=sorted(connectors),
        )
        await stop.wait()
        log.info("daemon_stopping", in_flight=len(running))
        schedule.shutdown()
        sync.stop()
        if running:
            _, pending = await asyncio.wait(running, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("daemon_stopped")
    return 0
