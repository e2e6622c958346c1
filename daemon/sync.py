"""One sync cycle for one customer: read, reconcile, check safety, apply, record.

Every effect is written to the store as it happens, so a crash at any point leaves a
state from which the next run continues without duplicating anything: links are
deterministic, creates carry idempotency keys, and baselines move only after a change
is confirmed.
"""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import structlog

from connectors.base import Connector, ConnectorError
from daemon import incidents, logs
from daemon.config import CustomerConfig, Settings
from daemon.domain import Customer, OpKind, OpResult, OpStatus, ReadResult
from daemon.erasure import Recorder
from daemon.reconcile import ASKED, Plan, PlannedOp, Reconciler, SystemView
from daemon.state import CustomerState
from daemon.store import ErasureState, KeyDestroyed, RunStatus, Store
from daemon.store.decisions import CREATIONS, SHRINK
from daemon.store.rows import AppliedChunk, EventRecord, JournalIntent, JournalStatus
from daemon.threads import in_thread

log = structlog.get_logger("pdsync.sync")
T = TypeVar("T")

# Operations handed to a system at once; their journal entries and outcomes are each
# written in one transaction (a first sync of thousands of contacts spent most of its
# time in one transaction per entry, member and event).
APPLY_CHUNK = 500


@dataclass(kw_only=True, slots=True)
class SyncReport:
    run_id: str
    customer_id: str
    status: str
    plan: Plan | None = None
    applied: Counter[str] = field(default_factory=Counter)  # "zisson.update.applied" -> n
    error: str | None = None
    deleted_links: Counter[str] = field(default_factory=Counter)  # link -> deletes applied
    held: dict[str, Any] | None = None  # why the run waits for an approval
    events: int = 0  # written to the run's log

    @property
    def quiet(self) -> bool:
        """Completed with nothing to plan, apply or review and nothing logged: a run
        that says only that all was well (kept briefly, then counted; see
        `history.quiet_runs_days`)."""
        return (
            self.status == RunStatus.COMPLETED
            and self.plan is not None
            and self.plan.is_empty
            and not self.plan.notes
            and not any(self.applied.values())
            and not self.error
            and not self.held
            and not self.events
        )

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"applied": dict(self.applied)}
        if self.plan is not None:
            summary["planned"] = self.plan.counts()
            summary["situations"] = self.plan.situations
            summary["deleted_contacts"] = self.plan.deleted_contacts
            summary["total_contacts"] = self.plan.total_contacts
        if self.error:
            summary["error"] = self.error
        if self.held:
            summary["held"] = self.held
        return summary


class SyncService:
    """Runs sync cycles. One instance per daemon; `stop` asks running cycles to finish
    the step in flight and stop before the next one."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        connectors: Mapping[str, Connector],
        *,
        ledger: Recorder | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.connectors = connectors
        self.ledger = ledger
        self.stopping = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # A sync's store calls and plan run here, a thread per worker, not in the loop's
        # default pool: there the daemon's heartbeats and lease renewals must never wait
        # behind a large customer's plan.
        self._threads = ThreadPoolExecutor(
            max_workers=settings.daemon.workers, thread_name_prefix="sync"
        )

    async def _off_loop(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)` in a sync thread, in this task's context (its log
        fields)."""
        # A thread cannot be stopped: a cancelled run ends (and lets the customer's next
        # run in) only once this one is out of the store, never while it still writes.
        return await in_thread(self._threads, call, *args, **kwargs)

    def stop(self) -> None:
        self.stopping.set()

    async def sync_all(self, *, trigger: str, plan_only: bool = False) -> list[SyncReport]:
        reports = []
        for customer in self.settings.customers:
            if self.stopping.is_set():
                break
            reports.append(await self.sync(customer, trigger=trigger, plan_only=plan_only))
        return reports

    async def sync(
        self, customer_config: CustomerConfig, *, trigger: str, plan_only: bool = False
    ) -> SyncReport:
        customer = customer_config.to_customer()
        async with self._locks[customer.id]:
            run_id = self.store.start_run(
                "plan" if plan_only else "sync", customer_id=customer.id, trigger=trigger
            )
            logs.bind(run_id=run_id, customer=customer.id)
            report = SyncReport(run_id=run_id, customer_id=customer.id, status=RunStatus.FAILED)
            try:
                await self._cycle(customer, report, plan_only=plan_only)
            except ConnectorError as exc:
                report.status = RunStatus.FAILED
                report.error = str(exc)
                self._event(
                    report,
                    "sync_failed",
                    level="error",
                    system=exc.system,
                    detail={"error": str(exc), "kind": type(exc).__name__},
                )
                incident = incidents.for_error(exc)
                if incident is not None:
                    self._event(report, incident, level="error", system=exc.system)
                    log.error(incident, system=exc.system)
            except asyncio.CancelledError:
                report.status = RunStatus.INTERRUPTED
                raise
            except Exception as exc:
                report.status = RunStatus.FAILED
                report.error = f"internal error: {type(exc).__name__}"
                log.exception("sync_crashed")
                self._event(report, "sync_failed", level="error", detail={"error": report.error})
            finally:
                # A plan asked for is looked at: never quiet.
                quiet = report.quiet and not plan_only
                self.store.finish_run(run_id, report.status, report.summary(), quiet=quiet)
                log.info("sync_finished", status=report.status, **_flat(report.summary()))
                logs.unbind("run_id", "customer")
            return report

    def _event(
        self,
        report: SyncReport,
        event: str,
        *,
        level: str = "info",
        system: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        report.events += 1
        self.store.add_event(
            report.run_id,
            event,
            level=level,
            customer_id=report.customer_id,
            system=system,
            detail=logs.scrub(dict(detail or {})),
        )

    async def _read_all(self, customer: Customer) -> dict[str, ReadResult]:
        systems = [s for s in self.connectors if s in customer.bindings]
        results = await asyncio.gather(*(self.connectors[s].read(customer) for s in systems))
        return dict(zip(systems, results, strict=True))

    async def _cycle(self, customer: Customer, report: SyncReport, *, plan_only: bool) -> None:
        key = await self._off_loop(self._key_unless_erased, customer, report)
        if key is None:
            return
        reads = await self._read_all(customer)
        # What comes between reading and writing (the store's reads and writes, the plan)
        # runs off the event loop: a large customer's plan takes seconds and each store
        # call a round trip, and meanwhile every other sync, the mailbox's turns and the
        # API would wait on the loop.
        plan = await self._off_loop(self._plan, customer, key, reads, report, plan_only)
        if plan is None:
            return
        report.status = RunStatus.COMPLETED
        await self._apply(customer, plan, report)  # may set INTERRUPTED on stop

    def _key_unless_erased(self, customer: Customer, report: SyncReport) -> bytes | None:
        """The customer's key, or None when it is being erased (the run ends here)."""
        erasing = [
            e
            for e in self.store.list_erasures(customer_id=customer.id, open_only=True)
            if e.scope == "customer" and e.state in (ErasureState.EXECUTING, ErasureState.VERIFYING)
        ]
        if erasing:
            # The customer is being erased: a sync now could only get in the way.
            report.status = RunStatus.COMPLETED
            self._event(report, "skipped_customer_erasure", detail={"request_id": erasing[0].id})
            return None
        try:
            return self.store.customer_key(customer.id)
        except KeyDestroyed:
            report.error = (
                f"customer {customer.id} was erased (its key is destroyed): "
                "remove it from the configuration"
            )
            self._event(report, "customer_erased", level="error", detail={"error": report.error})
            return None

    def _plan(
        self,
        customer: Customer,
        key: bytes,
        reads: Mapping[str, ReadResult],
        report: SyncReport,
        plan_only: bool,
    ) -> Plan | None:
        """The plan for what was read (in `report.plan`); returned when it is to be
        applied, None when the run ends here (a plan-only run, a safety stop)."""
        views = {}
        for system, result in reads.items():
            quarantined = self._quarantine(customer, system, result, report)
            connector = self.connectors[system].for_customer(customer)
            views[system] = SystemView(
                system=system,
                fields=frozenset(connector.fields),
                records=result.records,
                project=connector.project,
                quarantined=quarantined,
            )
            unparseable = sum(1 for r in result.records for p in r.phones if p.e164 is None)
            if unparseable:
                self._event(
                    report,
                    "unparseable_phone",
                    level="warning",
                    system=system,
                    detail={"count": unparseable},
                )
        state = self.store.load_state(customer.id)
        reconciler = Reconciler(
            customer_id=customer.id, key=key, policy=self.settings.sync.policy()
        )
        plan = reconciler.plan(views, state)
        report.plan = plan
        if plan_only:
            report.status = RunStatus.COMPLETED  # a run of kind "plan": nothing applied
            return None
        if not self._safe(customer, views, state, plan, report):
            report.status = RunStatus.AWAITING_APPROVAL
            return None
        return plan

    def _safe(
        self,
        customer: Customer,
        views: Mapping[str, SystemView],
        state: CustomerState,
        plan: Plan,
        report: SyncReport,
    ) -> bool:
        """The safety stops, in order: a shrunk read, mass deletion, mass creation. Each
        holds the whole run (nothing changes anywhere) unless an approval of its kind
        covers it; each held run is an incident."""
        policy = self.settings.sync.policy()
        held, missing = _held_and_missing(views, state, policy.authority)
        for system, view in sorted(views.items()):
            read = len(view.records) + len(view.quarantined)
            lost = missing[system]
            if policy.shrink_guard.shrunk(
                held=held[system], missing=lost, read=read
            ) and not self.store.consume_approval(customer.id, lost, report.run_id, kind=SHRINK):
                self._hold(
                    report,
                    incidents.SOURCE_SHRUNK,
                    system=system,
                    held=held[system],
                    read=read,
                    missing=lost,
                    max_share=policy.shrink_guard.max_share,
                )
                return False
        deletions = plan.deleted_contacts
        if policy.deletion_threshold.exceeded_by(
            deletions, plan.total_contacts
        ) and not self.store.consume_approval(customer.id, deletions, report.run_id):
            self._hold(
                report,
                incidents.MASS_DELETION_HELD,
                deletions=deletions,
                total=plan.total_contacts,
                max_count=policy.deletion_threshold.max_count,
                max_share=policy.deletion_threshold.max_share,
            )
            return False
        # Creation that only repeats what a system held (its records re-created after
        # an empty read) or copies records found outside the authority everywhere: new
        # contacts of the authority flowing out (a first sync, an import) are not held.
        creations = len(
            {p.op.link_id for p in plan.ops if p.op.kind is OpKind.CREATE and p.reason != "new"}
        )
        if policy.creation_threshold.exceeded_by(
            creations, plan.total_contacts
        ) and not self.store.consume_approval(
            customer.id, creations, report.run_id, kind=CREATIONS
        ):
            self._hold(
                report,
                incidents.MASS_CREATION_HELD,
                creations=creations,
                total=plan.total_contacts,
                max_count=policy.creation_threshold.max_count,
                max_share=policy.creation_threshold.max_share,
            )
            return False
        return True

    def _hold(
        self, report: SyncReport, incident: str, *, system: str | None = None, **detail: Any
    ) -> None:
        log.error(incident, system=system, **detail)
        self._event(report, incident, level="error", system=system, detail=detail)
        report.held = {"incident": incident, "system": system, **detail}

    def _quarantine(
        self, customer: Customer, system: str, result: ReadResult, report: SyncReport
    ) -> frozenset[str]:
        ids = set()
        for rejected in result.rejected:
            self.store.quarantine(
                customer.id, system, rejected.external_id, rejected.reason, rejected.raw
            )
            if rejected.external_id is not None:
                ids.add(rejected.external_id)
            self._event(
                report,
                "quarantined",
                level="warning",
                system=system,
                detail={"external_id": rejected.external_id, "reason": rejected.reason},
            )
        self.store.release_quarantine(customer.id, system, [r.external_id for r in result.records])
        return frozenset(ids)

    async def _apply(self, customer: Customer, plan: Plan, report: SyncReport) -> None:
        await self._off_loop(self._store_plan, customer, plan, report)
        by_system: dict[str, list[PlannedOp]] = defaultdict(list)
        for planned in plan.ops:
            by_system[planned.op.system].append(planned)
        # Deletions last: a crash never leaves a contact deleted before its updates landed.
        for system in sorted(by_system):
            if self.stopping.is_set():
                report.status = RunStatus.INTERRUPTED
                return
            planned_ops = sorted(by_system[system], key=lambda p: p.op.kind is OpKind.DELETE)
            await self._apply_system(customer, system, planned_ops, report)
        await self._off_loop(self._wind_up, customer, plan, report)

    def _store_plan(self, customer: Customer, plan: Plan, report: SyncReport) -> None:
        """What the plan settles without asking any system: baselines, removed members,
        notes, disputes opened and closed."""
        store = self.store
        store.set_members(
            customer.id,
            [(m.link_id, m.system, m.external_id, m.version, m.fingerprints) for m in plan.members],
        )
        for link_id, system in plan.removals:
            store.remove_member(customer.id, link_id, system)
        for note, detail in plan.notes:
            incident = note.startswith(incidents.PREFIX)
            self._event(report, note, level="error" if incident else "info", detail=detail)
            if incident:
                log.error(note, **detail)
        for dispute in plan.disputes:
            store.open_dispute(customer.id, dispute.link_id, dispute.field, dispute.fingerprints)
        for link_id, name in plan.settled_disputes:
            store.close_disputes_for_link(customer.id, link_id, name)
        if plan.disputes:
            self._event(
                report,
                "disputes_open",
                level="warning",
                detail={
                    "fields": sorted({d.field for d in plan.disputes}),
                    "count": len(plan.disputes),
                },
            )

    def _wind_up(self, customer: Customer, plan: Plan, report: SyncReport) -> None:
        """Once every system was asked: links of deleted contacts let go, verified tasks
        closed, decisions carried out."""
        self._let_go_of_deleted(customer, plan, report)
        self._close_verified_tasks(customer, plan, report)
        if plan.decided and self.store.finish_decisions(plan.decided, run_id=report.run_id):
            self._event(report, "decisions_carried_out", detail={"disputes": list(plan.decided)})

    async def _apply_system(
        self, customer: Customer, system: str, planned_ops: Sequence[PlannedOp], report: SyncReport
    ) -> None:
        """Apply the operations chunk by chunk: a chunk's journal entries are written (one
        transaction) before the system is asked, its outcomes (one transaction) after."""
        for start in range(0, len(planned_ops), APPLY_CHUNK):
            if start and self.stopping.is_set():
                report.status = RunStatus.INTERRUPTED
                return
            chunk = planned_ops[start : start + APPLY_CHUNK]
            # The plan names the intended change; the journal gives this attempt at it
            # its own key (a crashed attempt keeps its key, anything else gets a new one).
            keys = await self._off_loop(
                self.store.journal_attempts,
                [
                    JournalIntent(
                        intent=p.op.op_id, link_id=p.op.link_id, system=system, kind=str(p.op.kind)
                    )
                    for p in chunk
                ],
                run_id=report.run_id,
                customer_id=customer.id,
            )
            attempts = [replace(p.op, op_id=key) for p, key in zip(chunk, keys, strict=True)]
            results = await self.connectors[system].apply(customer, attempts)
            await self._off_loop(self._record_chunk, customer, report, chunk, keys, results)

    def _record_chunk(
        self,
        customer: Customer,
        report: SyncReport,
        chunk: Sequence[PlannedOp],
        keys: Sequence[str],
        results: Sequence[OpResult],
    ) -> None:
        """What a chunk's attempts came to: its outcomes (one transaction), then the
        ledger entries of its applied changes. In a sync thread, as each result's event
        is built and scrubbed and a manual task is a store write: a 500-op chunk on the
        event loop held up the API and the other worker for as long."""
        outcomes = AppliedChunk()
        proofs: list[tuple[PlannedOp, OpResult]] = []
        for planned, key, result in zip(chunk, keys, results, strict=True):
            if self._record_result(customer, planned, result, report, key=key, into=outcomes):
                proofs.append((planned, result))
        self.store.record_applied(customer.id, report.run_id, outcomes)
        if self.ledger is not None and proofs:
            self.ledger.record_many(
                [_proof(report.run_id, planned, result) for planned, result in proofs],
                customer_id=customer.id,
            )

    def _record_result(
        self,
        customer: Customer,
        planned: PlannedOp,
        result: OpResult,
        report: SyncReport,
        *,
        key: str,
        into: AppliedChunk,
    ) -> bool:
        """Note in `into` what an attempt (journal `key`) at the planned change came to;
        whether it was applied (and so goes into the ledger once `into` is stored).

        A manual task is opened at once (idempotent per link and change): should the
        chunk's record be lost in a crash, the retried attempt finds it open.
        """
        op = planned.op
        report.applied[f"{op.system}.{op.kind}.{result.status}"] += 1
        if result.status is OpStatus.APPLIED:
            if op.kind is OpKind.DELETE:
                into.removals.append((op.link_id, op.system))
                report.deleted_links[op.link_id] += 1
            else:
                external_id = result.external_id or op.external_id
                assert external_id is not None, "an applied create must name the new record"
                into.members.append(
                    (op.link_id, op.system, external_id, result.version, planned.fingerprints)
                )
            into.finished.append((key, JournalStatus.DONE, result.external_id or op.external_id))
            into.events.append(
                _event(
                    f"{op.kind}d",
                    system=op.system,
                    detail={
                        "link": op.link_id,
                        "external_id": result.external_id or op.external_id,
                        "fields": list(planned.changed_fields),
                        "reason": planned.reason,
                        "fingerprints": _changed_fingerprints(planned),
                    },
                )
            )
            return True
        if result.status is OpStatus.MANUAL:
            if op.kind is OpKind.UPDATE and op.external_id is not None:
                # What the operator is asked to enter, so that the value turning up later
                # reads as the task done, not as a change made in that system.
                into.members.append(
                    (
                        op.link_id,
                        op.system,
                        op.external_id,
                        op.expected_version,
                        {
                            name + ASKED: planned.fingerprints[name]
                            for name in planned.changed_fields
                            if name in planned.fingerprints
                        },
                    )
                )
            self.store.open_task(
                customer.id,
                op.system,
                op.link_id,
                str(op.kind),
                op.op_id,
                result.instruction or f"{op.kind} in {op.system}",
            )
            into.finished.append((key, JournalStatus.DONE, None))
            into.events.append(
                _event(
                    "manual_task",
                    system=op.system,
                    detail={
                        "link": op.link_id,
                        "op": str(op.kind),
                        "fields": list(planned.changed_fields),
                    },
                )
            )
            return False
        if result.status is not OpStatus.FAILED:
            into.finished.append((key, JournalStatus.FAILED, None))
        # FAILED: whether the change landed is not known (a timeout, a 5xx): the
        # journal keeps the attempt open, so the next run retries it under the same
        # key and a system that did apply it answers with what it did.
        level = "warning" if result.status in (OpStatus.CONFLICT, OpStatus.NOT_FOUND) else "error"
        into.events.append(
            _event(
                f"{op.kind}_{result.status}",
                level=level,
                system=op.system,
                detail={"link": op.link_id, "external_id": op.external_id, "error": result.error},
            )
        )
        return False

    def _let_go_of_deleted(self, customer: Customer, plan: Plan, report: SyncReport) -> None:
        """A contact deleted from the authority keeps the authority's side of its link
        until every other system confirmed its delete; then the link goes."""
        pending: dict[str, int] = Counter()
        for planned in plan.ops:
            if planned.reason == "deleted_in_authority":
                pending[planned.op.link_id] += 1
        for link_id, count in pending.items():
            if report.deleted_links[link_id] == count:
                self.store.remove_member(customer.id, link_id, self.settings.sync.authority)

    def _close_verified_tasks(self, customer: Customer, plan: Plan, report: SyncReport) -> None:
        """A sync's manual task is done when a read-back shows nothing left to change.

        Only the sync's own: a task of another workflow (an erasure's, whose link is
        `erasure:ID`) is closed by that workflow's own read-back, never by a sync that
        simply did not plan its change.
        """
        still_needed = {(p.op.link_id, p.op.system) for p in plan.ops}
        for task in self.store.list_tasks(customer_id=customer.id, open_only=True):
            if not _is_link_id(task.link_id) or (task.link_id, task.system) in still_needed:
                continue
            self.store.close_task(task.id, "verified by read-back")
            self._event(
                report,
                "manual_task_verified",
                system=task.system,
                detail={"link": task.link_id, "task": task.id},
            )


def _event(
    event: str, *, level: str = "info", system: str | None = None, detail: Mapping[str, Any]
) -> EventRecord:
    return EventRecord(event=event, level=level, system=system, detail=logs.scrub(dict(detail)))


def _proof(run_id: str, planned: PlannedOp, result: OpResult) -> tuple[str, dict[str, Any]]:
    """An applied change's ledger entry: its kind and payload."""
    op = planned.op
    return f"sync.{op.kind}", {
        "run_id": run_id,
        "system": op.system,
        "link_id": op.link_id,
        "external_id": result.external_id or op.external_id,
        "reason": planned.reason,
        "fields": list(planned.changed_fields),
        "fingerprints": _changed_fingerprints(planned),
    }


def _changed_fingerprints(planned: PlannedOp) -> dict[str, str]:
    return {k: planned.fingerprints[k] for k in planned.changed_fields if k in planned.fingerprints}


def _held_and_missing(
    views: Mapping[str, SystemView], state: CustomerState, authority: str
) -> tuple[Counter[str], Counter[str]]:
    """Per system, the records of the authority's contacts it held at the last sync, and
    those it no longer shows where nothing explains their absence: a record whose
    contact the authority deleted (a deletion pdsync asked for, or that an operator
    carried out) is not missing. Records found only outside the authority (foreign
    records, a question for a person anyway) are not counted."""
    present = {s: {r.external_id for r in v.records} | set(v.quarantined) for s, v in views.items()}
    held: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for link in state.links.values():
        source = link.members.get(authority)
        if source is None:
            continue
        deleted_at_source = authority in present and source.external_id not in present[authority]
        for system, member in link.members.items():
            held[system] += 1
            if system not in present or member.external_id in present[system]:
                continue
            if system != authority and deleted_at_source:
                continue
            missing[system] += 1
    return held, missing


def _is_link_id(value: str) -> bool:
    """Whether a task's link is a sync link (a UUID), not another workflow's key."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _flat(summary: Mapping[str, Any]) -> dict[str, Any]:
    applied = summary.get("applied", {})
    return {
        "applied": sum(applied.values()),
        "planned_ops": sum(v for k, v in summary.get("planned", {}).items() if "." in k),
        "disputes": summary.get("planned", {}).get("disputes", 0),
    }


def operator() -> str:
    """Who is at the keyboard, for approvals and audit records."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
