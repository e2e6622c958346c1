"""One sync cycle for one customer: read, reconcile, check safety, apply, record.

Every effect is written to the store as it happens, so a crash at any point leaves a
state from which the next run continues without duplicating anything: links are
deterministic, creates carry idempotency keys, and baselines move only after a change
is confirmed.
"""

from __future__ import annotations

import asyncio
import getpass
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from connectors.base import Connector, ConnectorError
from daemon import incidents, logs
from daemon.config import CustomerConfig, Settings
from daemon.domain import Customer, OpKind, OpResult, OpStatus, ReadResult
from daemon.erasure import Recorder
from daemon.reconcile import Plan, PlannedOp, Reconciler, SystemView
from daemon.store import ErasureState, KeyDestroyed, RunStatus, Store

log = structlog.get_logger("pdsync.sync")


@dataclass(kw_only=True, slots=True)
class SyncReport:
    run_id: str
    customer_id: str
    status: str
    plan: Plan | None = None
    applied: Counter[str] = field(default_factory=Counter)  # "zisson.update.applied" -> n
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"applied": dict(self.applied)}
        if self.plan is not None:
            summary["planned"] = self.plan.counts()
            summary["situations"] = self.plan.situations
            summary["deleted_contacts"] = self.plan.deleted_contacts
            summary["total_contacts"] = self.plan.total_contacts
        if self.error:
            summary["error"] = self.error
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
                self.store.finish_run(run_id, report.status, report.summary())
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
        erasing = [
            e
            for e in self.store.list_erasures(customer_id=customer.id, open_only=True)
            if e.scope == "customer" and e.state in (ErasureState.EXECUTING, ErasureState.VERIFYING)
        ]
        if erasing:
            # The customer is being erased: a sync now could only get in the way.
            report.status = RunStatus.COMPLETED
            self._event(report, "skipped_customer_erasure", detail={"request_id": erasing[0].id})
            return
        try:
            key = self.store.customer_key(customer.id)
        except KeyDestroyed:
            report.error = (
                f"customer {customer.id} was erased (its key is destroyed): "
                "remove it from the configuration"
            )
            self._event(report, "customer_erased", level="error", detail={"error": report.error})
            return
        reads = await self._read_all(customer)
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
            return
        threshold = self.settings.sync.policy().deletion_threshold
        deletions = plan.deleted_contacts
        if threshold.exceeded_by(
            deletions, plan.total_contacts
        ) and not self.store.consume_approval(customer.id, deletions, report.run_id):
            report.status = RunStatus.AWAITING_APPROVAL
            log.error(incidents.MASS_DELETION_HELD, deletions=deletions, total=plan.total_contacts)
            self._event(
                report,
                incidents.MASS_DELETION_HELD,
                level="error",
                detail={
                    "deletions": deletions,
                    "total": plan.total_contacts,
                    "max_count": threshold.max_count,
                    "max_share": threshold.max_share,
                },
            )
            return
        report.status = RunStatus.COMPLETED
        await self._apply(customer, plan, report)  # may set INTERRUPTED on stop

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
        self._close_verified_tasks(customer, plan, report)
        if plan.decided and store.finish_decisions(plan.decided, run_id=report.run_id):
            self._event(report, "decisions_carried_out", detail={"disputes": list(plan.decided)})

    async def _apply_system(
        self, customer: Customer, system: str, planned_ops: Sequence[PlannedOp], report: SyncReport
    ) -> None:
        store = self.store
        for planned in planned_ops:
            op = planned.op
            store.journal_begin(
                op.op_id,
                run_id=report.run_id,
                customer_id=customer.id,
                link_id=op.link_id,
                system=system,
                kind=str(op.kind),
            )
        results = await self.connectors[system].apply(customer, [p.op for p in planned_ops])
        for planned, result in zip(planned_ops, results, strict=True):
            self._record_result(customer, planned, result, report)

    def _record_result(
        self, customer: Customer, planned: PlannedOp, result: OpResult, report: SyncReport
    ) -> None:
        store = self.store
        op = planned.op
        report.applied[f"{op.system}.{op.kind}.{result.status}"] += 1
        if result.status is OpStatus.APPLIED:
            if op.kind is OpKind.DELETE:
                store.remove_member(customer.id, op.link_id, op.system)
            else:
                external_id = result.external_id or op.external_id
                assert external_id is not None, "an applied create must name the new record"
                store.set_member(
                    customer.id,
                    op.link_id,
                    op.system,
                    external_id,
                    result.version,
                    planned.fingerprints,
                )
            store.journal_finish(op.op_id, "done", result.external_id or op.external_id)
            if self.ledger is not None:
                self.ledger.record(
                    f"sync.{op.kind}",
                    customer_id=customer.id,
                    run_id=report.run_id,
                    system=op.system,
                    link_id=op.link_id,
                    external_id=result.external_id or op.external_id,
                    reason=planned.reason,
                    fields=list(planned.changed_fields),
                    fingerprints={
                        k: planned.fingerprints[k]
                        for k in planned.changed_fields
                        if k in planned.fingerprints
                    },
                )
            self._event(
                report,
                f"{op.kind}d",
                system=op.system,
                detail={
                    "link": op.link_id,
                    "external_id": result.external_id or op.external_id,
                    "fields": list(planned.changed_fields),
                    "reason": planned.reason,
                    "fingerprints": {
                        k: planned.fingerprints[k]
                        for k in planned.changed_fields
                        if k in planned.fingerprints
                    },
                },
            )
        elif result.status is OpStatus.MANUAL:
            store.open_task(
                customer.id,
                op.system,
                op.link_id,
                str(op.kind),
                op.op_id,
                result.instruction or f"{op.kind} in {op.system}",
            )
            store.journal_finish(op.op_id, "done")
            self._event(
                report,
                "manual_task",
                system=op.system,
                detail={
                    "link": op.link_id,
                    "op": str(op.kind),
                    "fields": list(planned.changed_fields),
                },
            )
        else:
            store.journal_finish(op.op_id, "failed")
            level = (
                "warning" if result.status in (OpStatus.CONFLICT, OpStatus.NOT_FOUND) else "error"
            )
            self._event(
                report,
                f"{op.kind}_{result.status}",
                level=level,
                system=op.system,
                detail={"link": op.link_id, "external_id": op.external_id, "error": result.error},
            )

    def _close_verified_tasks(self, customer: Customer, plan: Plan, report: SyncReport) -> None:
        """A manual task is done when a read-back shows nothing left to change."""
        still_needed = {(p.op.link_id, p.op.system) for p in plan.ops}
        for task in self.store.list_tasks(customer_id=customer.id, open_only=True):
            if (task.link_id, task.system) not in still_needed:
                self.store.close_task(task.id, "verified by read-back")
                self._event(
                    report,
                    "manual_task_verified",
                    system=task.system,
                    detail={"link": task.link_id, "task": task.id},
                )


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
