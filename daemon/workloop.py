"""Carrying out work items: the loops that claim them, one at a time each, with a lease
they renew, and what each kind of item does when it talks to the systems.

Every instance runs these loops (daemon/service.py), and so does its worker process
(daemon/worker.py), which imports this module and not the daemon's admin API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

import structlog

from connectors.base import Connector
from daemon.collector import WorkInHand
from daemon.config import Settings
from daemon.erasure import ErasureService
from daemon.ledger import Ledger
from daemon.proof import certifier_for
from daemon.retention import RetentionService
from daemon.store import Store
from daemon.store.rows import WorkItem
from daemon.store.work import WorkSignal
from daemon.sync import SyncService
from daemon.wiring import erasers_for

log = structlog.get_logger("pdsync.daemon")

# Work items carried out by a worker process, when the daemon has one; the rest are
# store work, carried out in the daemon's own process.
CONNECTOR_KINDS = ("sync", "retention", "erasures")

DRAIN_SECONDS = 120
# Work still going after the drain is cancelled, and given this long to record its end
# (a run "interrupted", its work item released) while the store is still open; a sync
# ends only once its thread is out of the store (a plan, a chunk's journal: seconds).
# The drain and this together stay under the 150 s the deploy files give a stop.
CANCEL_GRACE_SECONDS = 15
# Idle workers do not poll for work (WorkSignal): work queued in this process wakes
# them at once; work queued by another (the CLI, another instance) through NOTIFY on
# PostgreSQL, and on SQLite through a look at SQLite's commit counter every
# IDLE_PROBE_SQLITE_SECONDS on the event loop. They look for work themselves only every
# min(IDLE_POLL_SECONDS, lease / 2), for leases that ran out (nobody announces those).
IDLE_PROBE_SQLITE_SECONDS = 1.0
IDLE_POLL_SECONDS = 30.0


Handler = Callable[[WorkItem], Awaitable[object]]


def connector_handlers(
    settings: Settings, store: Store, connectors: Mapping[str, Connector], ledger: Ledger | None
) -> tuple[dict[str, Handler], SyncService]:
    """The handlers of the work items that talk to the systems (CONNECTOR_KINDS), and
    the sync service (to stop at SIGTERM)."""
    sync = SyncService(settings, store, connectors, ledger=ledger)
    erasures = ErasureService(
        settings,
        store,
        erasers_for(dict(connectors)),
        recorder=ledger,
        certify=certifier_for(settings, ledger),
    )
    retention = RetentionService(store, connectors, ledger=ledger, customers=settings.customers)
    customers = {c.id: c for c in settings.customers}
    handlers: dict[str, Handler] = {
        "sync": lambda item: sync.sync(customers[item.key], trigger=item.trigger or "schedule"),
        "retention": lambda item: retention.run(customers[item.key], trigger="schedule"),
        "erasures": lambda item: erasures.advance_all(),
    }
    assert set(handlers) == set(CONNECTOR_KINDS)
    return handlers, sync


def work_items(
    settings: Settings,
    store: Store,
    handlers: Mapping[str, Handler],
    stop: asyncio.Event,
    customers: Mapping[str, object],
    signal_: WorkSignal,
    in_hand: WorkInHand,
    kinds: tuple[str, ...] | None,
) -> list[asyncio.Task[None]]:
    """`daemon.workers` tasks claiming and carrying out work items (of `kinds`)."""
    lease = timedelta(seconds=settings.daemon.lease_seconds)
    return [
        asyncio.create_task(
            work(store, handlers, stop, customers, lease, signal_, in_hand=in_hand, kinds=kinds)
        )
        for _ in range(settings.daemon.workers)
    ]


async def drain(tasks: list[asyncio.Task[None]]) -> None:
    """Let `tasks` finish their work in hand (DRAIN_SECONDS), then cancel what is left
    and give it CANCEL_GRACE_SECONDS to record its end."""
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
        if stuck:
            log.warning("daemon_stop_tasks_left", count=len(stuck))


async def work(
    store: Store,
    handlers: Mapping[str, Handler],
    stop: asyncio.Event,
    customers: Mapping[str, object],
    lease: timedelta,
    signal_: WorkSignal,
    *,
    in_hand: set[int] | None = None,
    kinds: tuple[str, ...] | None = None,
) -> None:
    """Claim work items (of `kinds`) one at a time until stopped; the one in hand is
    finished. With nothing to claim, wait for `signal_` (work announced, or its fallback
    poll)."""
    in_hand = set() if in_hand is None else in_hand
    while not stop.is_set():
        try:
            item = await asyncio.to_thread(store.claim_work, lease=lease, kinds=kinds)
        except Exception:
            log.exception("claim_failed")
            item = None
        if item is None:
            await signal_.wait(stop)
            continue
        in_hand.add(item.id)
        try:
            await carry_out(store, item, handlers, customers, lease)
        finally:
            in_hand.discard(item.id)


async def carry_out(
    store: Store,
    item: WorkItem,
    handlers: Mapping[str, Handler],
    customers: Mapping[str, object],
    lease: timedelta,
) -> None:
    if item.kind in ("sync", "retention") and item.key not in customers:
        await asyncio.to_thread(
            store.finish_work, item.id, state="failed", error="customer no longer configured"
        )
        return

    async def keep_lease() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            if not await asyncio.to_thread(store.renew_work, item.id, lease=lease):
                log.error("work_taken_over", item=item.id, kind=item.kind)
                return

    renewer = asyncio.create_task(keep_lease())
    state, error = "done", None
    try:
        await handlers[item.kind](item)
    except Exception as exc:
        state, error = "failed", type(exc).__name__
        log.exception("work_failed", item=item.id, kind=item.kind)
    finally:
        renewer.cancel()
        await asyncio.to_thread(store.finish_work, item.id, state=state, error=error)
