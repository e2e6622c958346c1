"""The daemon: scheduled sync per customer until SIGTERM, then a clean stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import structlog

from daemon.config import CustomerConfig, Settings
from daemon.scheduler import Schedule
from daemon.store import Store
from daemon.sync import SyncService
from daemon.wiring import open_connectors

log = structlog.get_logger("pdsync.daemon")
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
        sync = SyncService(settings, store, connectors)
        schedule = Schedule()

        def job_for(customer: CustomerConfig) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                task = asyncio.current_task()
                assert task is not None
                running.add(task)
                try:
                    await sync.sync(customer, trigger="schedule")
                finally:
                    running.discard(task)

            return job

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
