"""The daemon: one leader schedules, every instance works, SIGTERM drains.

The leader (a PostgreSQL advisory lock; on SQLite the only instance) turns schedules
into work items: a sync or retention run per customer, moving erasures on, ledger
checkpoints, deadline checks, pruning the API's audit log and sessions and pdsync's
own history. Every instance claims work items with a lease and carries them out, so a
dead instance's work is taken over when its lease runs out, and a duplicate trigger
does nothing (one item of a kind per customer at a time). Idle workers wait to be told
of new work (WorkSignal: in-process, and NOTIFY on PostgreSQL) rather than poll. The
admin API's "sync now" queues work items too (QueuedSync).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from daemon.affinity import schedule_offset, share_mailboxes
from daemon.api.server import start_api
from daemon.collector import WorkInHand, collect_cycles, collector_thresholds
from daemon.config import (
    ConfigError,
    CustomerConfig,
    Settings,
    exposed_secret_files,
    unreachable_secrets,
)
from daemon.erasure import ErasureService
from daemon.ledger import Ledger
from daemon.proof import certifier_for, open_ledger
from daemon.scheduler import Schedule
from daemon.store import Store
from daemon.store.history import HistoryCutoffs
from daemon.store.rows import WorkItem
from daemon.store.work import (
    ACTIVE,
    InstanceLocked,
    Leadership,
    SingleInstanceLock,
    WorkSignal,
)
from daemon.sync import SyncService
from daemon.wiring import configured_systems, open_connectors, retention_capable
from daemon.worker import WorkerProcess, WorkerReports
from daemon.workloop import (
    CANCEL_GRACE_SECONDS,
    CONNECTOR_KINDS,
    DRAIN_SECONDS,
    IDLE_POLL_SECONDS,
    IDLE_PROBE_SQLITE_SECONDS,
    connector_handlers,
    drain,
    work_items,
)

log = structlog.get_logger("pdsync.daemon")

# An idle instance heartbeats every this many leader polls (a busy one, or one whose
# leadership changed, at once). It stays within the window in which the CLI counts a
# daemon alive (3 x leader_poll_seconds + 5 s, daemon/cli.py); work items are kept by
# their own lease renewals, not by heartbeats.
IDLE_HEARTBEAT_POLLS = 3
# How often "sync now" looks whether its work item is done.
QUEUE_POLL_SECONDS = 0.25

# The worker process stops within the daemon's own stop budget (DRAIN_SECONDS +
# CANCEL_GRACE_SECONDS), with this much to spare for the daemon's last records.
WORKER_STOP_MARGIN_SECONDS = 5
# The work items the daemon's own process carries out when a worker process does the
# connectors' (CONNECTOR_KINDS): store work only.
OWN_KINDS = ("deadlines", "checkpoint", "api-records")


class NotClaimed(Exception):
    """No instance claimed a queued sync in time (is a daemon running on the store?)."""


class QueuedSync:
    """The admin API's "sync now" on a daemon: a work item like the schedule's.

    Whichever instance claims it runs it, so it never overlaps a sync of the same
    customer on another instance, and the run carries the caller's trigger. When a sync
    of the customer is queued or running already, it may have read the systems before
    the request: it is waited for, and then this one is queued, so the caller always
    gets a run of its own that started after it asked.

    `claim_timeout` (for callers outside a daemon, such as the CLI): when an item stays
    queued that long, ours is withdrawn and NotClaimed raised, rather than waiting for
    a daemon that may have died.
    """

    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float = QUEUE_POLL_SECONDS,
        claim_timeout: float | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.claim_timeout = claim_timeout

    async def sync(self, customer_config: CustomerConfig, *, trigger: str) -> WorkItem | None:
        """Queue a sync of the customer and wait until it is done; the finished item."""
        while True:
            item_id = await asyncio.to_thread(
                self.store.enqueue_work, "sync", customer_config.id, trigger=trigger
            )
            if item_id is not None:
                return await self._finished(item_id, ours=True)
            active = await asyncio.to_thread(self.store.active_work, "sync", customer_config.id)
            if active is not None:
                await self._finished(active.id, ours=False)

    async def _finished(self, item_id: int, *, ours: bool) -> WorkItem | None:
        queued_since = time.monotonic()
        while True:
            item = await asyncio.to_thread(self.store.work_item, item_id)
            if item is None or item.state not in ACTIVE:
                return item
            if item.state != "queued":
                queued_since = time.monotonic()
            elif (
                self.claim_timeout is not None
                and time.monotonic() - queued_since > self.claim_timeout
            ):
                withdrawn = ours and await asyncio.to_thread(
                    self.store.withdraw_work, item_id, reason="not claimed in time"
                )
                if withdrawn or not ours:
                    raise NotClaimed(
                        f"no daemon claimed the sync of {item.key} within {self.claim_timeout:g} s"
                    )
            await asyncio.sleep(self.poll_seconds)


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


# The API's audit records past `[api] audit_retention_days`, expired sessions, and
# pdsync's own history past `[history]`: daily.
API_RECORDS_SECONDS = 24 * 3600


async def expire_api_records(store: Store, settings: Settings, ledger: Ledger | None) -> None:
    """Delete API audit records past retention and expired dashboard sessions."""
    keep = timedelta(days=settings.api.audit_retention_days)
    expired = await asyncio.to_thread(
        store.expire_api_records, audit_before=datetime.now(UTC) - keep
    )
    if ledger is not None and (expired.audit or expired.sessions):
        await asyncio.to_thread(
            ledger.record,
            "api.records_expired",
            audit=expired.audit,
            sessions=expired.sessions,
            retention_days=settings.api.audit_retention_days,
        )
    log.info("api_records_expired", audit=expired.audit, sessions=expired.sessions)
    await prune_history(store, settings, ledger)


async def prune_history(store: Store, settings: Settings, ledger: Ledger | None) -> None:
    """Delete pdsync's own records past `[history]` (runs, events, journal, work items,
    quarantine, instances), in chunks; the ledger keeps the proof and gets the counts.
    Runs in the daily `api-records` job, after the API's own records."""
    keep = settings.history
    now = datetime.now(UTC)
    pruned = await asyncio.to_thread(
        store.prune_history,
        HistoryCutoffs(
            runs=now - timedelta(days=keep.runs_days),
            quiet_runs=now - timedelta(days=min(keep.quiet_runs_days, keep.runs_days)),
            journal=now - timedelta(days=keep.journal_days),
            work=now - timedelta(days=keep.work_days),
            quarantine=now - timedelta(days=keep.quarantine_days),
            instances=now - timedelta(days=keep.instances_days),
        ),
        chunk=keep.chunk_rows,
    )
    counts = pruned.as_dict()
    if ledger is not None and any(counts.values()):
        days = {
            "runs": keep.runs_days,
            "quiet_runs": keep.quiet_runs_days,
            "journal": keep.journal_days,
            "work_items": keep.work_days,
            "quarantine": keep.quarantine_days,
            "instances": keep.instances_days,
        }
        await asyncio.to_thread(
            lambda: ledger.record(
                "history.pruned",
                runs=pruned.runs,
                run_events=pruned.run_events,
                quiet_runs=pruned.quiet_runs,
                journal=pruned.journal,
                work_items=pruned.work_items,
                quarantine=pruned.quarantine,
                instances=pruned.instances,
                retention_days=days,
            )
        )
    log.info("history_pruned", **counts)


def _schedule(settings: Settings, store: Store, retention_systems: set[str]) -> Schedule:
    """The leader's schedules: each tick only queues a work item."""
    schedule = Schedule()

    def enqueue(kind: str, key: str) -> Callable[[], Awaitable[None]]:
        async def tick() -> None:
            await asyncio.to_thread(store.enqueue_work, kind, key)

        return tick

    async def erasures_tick() -> None:
        # Only while a request can be moved on: an idle daemon does not start its worker
        # process (daemon/worker.py) every minute for nothing.
        if await asyncio.to_thread(store.erasures_to_advance):
            await asyncio.to_thread(store.enqueue_work, "erasures", "all")

    schedule.every("erasures", settings.erasure.worker_interval_seconds, erasures_tick, first_in=1)
    schedule.every("deadlines", 300, enqueue("deadlines", "all"), first_in=5)
    schedule.every("api-records", API_RECORDS_SECONDS, enqueue("api-records", "all"), first_in=60)
    if settings.ledger.signing_key is not None:
        schedule.every(
            "checkpoint",
            settings.ledger.checkpoint_interval_seconds,
            enqueue("checkpoint", "ledger"),
        )
    interval = settings.sync.interval_seconds
    for customer in settings.customers:
        # Spread over the interval at a stable point per customer (daemon/affinity.py).
        schedule.every(
            f"sync:{customer.id}",
            interval,
            enqueue("sync", customer.id),
            first_in=schedule_offset(customer.id, interval, len(settings.customers)),
        )
        if retention_systems & set(customer.retention_rules()):
            # Spread too: a retention run searches a mailbox for a while, and hundreds of
            # them at once would queue at a shared mailbox's budget.
            every = settings.retention.interval_seconds
            schedule.every(
                f"retention:{customer.id}",
                every,
                enqueue("retention", customer.id),
                first_in=schedule_offset(
                    customer.id, every, len(settings.customers), job="retention"
                ),
            )
    return schedule


async def serve(
    settings: Settings, *, stop: asyncio.Event | None = None, config_path: Path | None = None
) -> int:
    """Run until `stop` is set or SIGTERM/SIGINT arrives; work in flight finishes.

    With `config_path` (the file `settings` were read from) and `daemon.worker_process`,
    the connectors' work runs in a worker process started from that file
    (daemon/worker.py); else all of it runs here."""
    with collector_thresholds():
        worker_config = config_path if settings.daemon.worker_process else None
        return await _serve(settings, stop=stop, worker_config=worker_config)


async def _serve(
    settings: Settings, *, stop: asyncio.Event | None = None, worker_config: Path | None = None
) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    missing = unreachable_secrets(settings) + exposed_secret_files(settings)
    if missing:  # stop at start, naming every key, not at the first sync that needs it
        raise ConfigError("\n".join(missing))
    async with AsyncExitStack() as stack:
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        stack.callback(store.close)
        lease = timedelta(seconds=settings.daemon.lease_seconds)
        if store.dialect == "sqlite":
            lock = SingleInstanceLock(settings.store.url.removeprefix("sqlite:///"))
            try:
                lock.acquire()
            except InstanceLocked as exc:
                raise ConfigError(f"store.url: {exc}") from None
            stack.callback(lock.release)
            interrupted = store.mark_interrupted_runs()
        else:
            # Only runs nobody has touched for a while: the others may be another
            # instance's, alive and well.
            interrupted = store.mark_interrupted_runs(idle_for=lease * 2)
        if interrupted:
            log.warning("runs_interrupted_by_previous_stop", count=len(interrupted))
        ledger = open_ledger(settings, store)
        if ledger is not None:
            digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
            ledger.record("config.loaded", config_sha256=digest, customers=len(settings.customers))
        else:
            log.warning("ledger_unsigned", hint="set ledger.signing_key to record proof")
        customers = {c.id: c for c in settings.customers}
        sync: SyncService | None = None
        api_connectors: Mapping[str, object]
        if worker_config is None:
            connectors = await open_connectors(settings, stack, store=store)
            if store.dialect == "postgresql":  # several instances: they take turns at a mailbox
                share_mailboxes(connectors, store, stack)
            handlers, sync = connector_handlers(settings, store, connectors, ledger)
            api_connectors, kinds = connectors, None
        else:  # the connectors are the worker's; the API sees what it reports
            reports = WorkerReports(configured_systems(settings))
            handlers, api_connectors, kinds = {}, reports.connectors, OWN_KINDS
        # Requests, approvals and cancellations are store work; carrying erasures out is
        # the "erasures" work item's (connector_handlers).
        erasures = ErasureService(
            settings, store, {}, recorder=ledger, certify=certifier_for(settings, ledger)
        )
        await start_api(
            settings,
            store,
            stack,
            sync_service=QueuedSync(store),
            erasure_service=erasures,
            ledger=ledger,
            connectors=api_connectors,
        )

        async def checkpoint() -> None:
            if ledger is not None:
                await asyncio.to_thread(ledger.checkpoint)

        handlers |= {
            "deadlines": lambda item: _check_deadlines(store),
            "checkpoint": lambda item: checkpoint(),
            "api-records": lambda item: expire_api_records(store, settings, ledger),
        }
        assert set(handlers) == set(OWN_KINDS) | (set() if kinds else set(CONNECTOR_KINDS))
        leadership = Leadership(store._engine, store.dialect)
        stack.callback(leadership.release)
        signal_ = WorkSignal(
            store,
            fallback_seconds=min(IDLE_POLL_SECONDS, lease.total_seconds() / 2),
            probe_seconds=IDLE_PROBE_SQLITE_SECONDS,
        )
        signal_.start()
        stack.callback(signal_.close)
        in_hand = WorkInHand()
        retention_systems = retention_capable(settings)
        tasks = [
            asyncio.create_task(
                _lead(
                    store,
                    leadership,
                    lambda: _schedule(settings, store, retention_systems),
                    stop,
                    settings.daemon.leader_poll_seconds,
                    busy=lambda: bool(in_hand),
                )
            ),
            *work_items(settings, store, handlers, stop, customers, signal_, in_hand, kinds),
            asyncio.create_task(collect_cycles(stop, busy=in_hand.busy_since_asked)),
        ]
        if worker_config is not None:
            worker = WorkerProcess(
                worker_config,
                store,
                signal_,
                reports,
                stop_seconds=DRAIN_SECONDS + CANCEL_GRACE_SECONDS - WORKER_STOP_MARGIN_SECONDS,
            )
            # Not drained with the rest: it stops its worker within its own bound, which
            # leaves the worker its full drain and grace (a cancel would SIGKILL it).
            worker_task = asyncio.create_task(worker.run(stop))
        log.info(
            "daemon_started",
            instance=store.instance_id,
            customers=len(customers),
            interval_seconds=settings.sync.interval_seconds,
            systems=sorted(api_connectors),
            worker_process=worker_config is not None,
        )
        await stop.wait()
        log.info("daemon_stopping", instance=store.instance_id)
        if sync is not None:
            sync.stop()
        if worker_config is not None:
            await asyncio.gather(drain(tasks), worker_task)
        else:
            await drain(tasks)
        await asyncio.to_thread(store.forget_instance)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("daemon_stopped")
    return 0


async def _lead(
    store: Store,
    leadership: Leadership,
    make_schedule: Callable[[], Schedule],
    stop: asyncio.Event,
    poll_seconds: float,
    *,
    busy: Callable[[], bool] = lambda: False,
) -> None:
    """Become leader when the lock is free, run the schedules while leading; heartbeat
    every poll while busy or when leadership changes, every IDLE_HEARTBEAT_POLLS polls
    while idle."""
    schedule: Schedule | None = None
    beat_as: bool | None = None  # the leadership the last heartbeat reported
    beat_at = 0.0
    try:
        while not stop.is_set():
            try:
                if schedule is not None and not await _ask(leadership, leadership.still_leading):
                    log.error("leadership_lost", instance=store.instance_id)
                    schedule.shutdown()
                    schedule = None
                if schedule is None and await _ask(leadership, leadership.try_acquire):
                    log.info("became_leader", instance=store.instance_id)
                    schedule = make_schedule()
                    schedule.start()
                leading = schedule is not None
                every = poll_seconds * (1 if busy() else IDLE_HEARTBEAT_POLLS)
                now = time.monotonic()
                if leading != beat_as or now - beat_at >= every - poll_seconds / 2:
                    await asyncio.to_thread(store.heartbeat, leader=leading)
                    beat_as, beat_at = leading, now
            except Exception:
                log.exception("leadership_check_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_seconds)
    finally:
        if schedule is not None:
            schedule.shutdown()


async def _ask(leadership: Leadership, question: Callable[[], bool]) -> bool:
    """A leadership question: in a worker thread when it asks the database, else here
    (SQLite's single instance always leads: no thread hand-off every poll)."""
    if leadership.asks_database:
        return await asyncio.to_thread(question)
    return question()
