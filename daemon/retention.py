"""Retention: data past its rule is deleted on a schedule, and each run is recorded (O3).

Rules are per customer, system and kind of data: Outlook per mail folder
(`customers[].outlook.retention_days`, days since received; a rule covers the folders
below its folder, and only the customer's mail there), Firestore per subcollection of
the card (`customers[].firestore.retention_days`, days since last changed; what is below
an expired document goes with it). Any connector that declares the RETENTION capability
takes part: `expired(customer, now, neighbours=...)` gives a RetentionScan (the refs past
the rules, the rules that could not be applied, how many items it kept as another
customer's too), `erase(customer, refs)` a status per ref. `neighbours` are the other
configured customers: one service mailbox holds every customer's mail, and a message
between two customers goes only when both customers' rules let it go (O1: a deletion
under one customer's rule never takes what another customer's rules keep).

What a run did is recorded as it lands: refs are erased in chunks of `chunk_size`, and
each chunk's deletions go on the ledger (`retention.deleted`) and the run's events before
the next is sent, so a run cut short by an error (or a crash) has recorded every deletion
but those of the chunk in flight. The run ends with `retention.run` per system (counts,
how many rules failed, the error kind if any). A rule that cannot be applied fails alone,
loudly (a `retention_rule_failed` event at error naming the rule's key); the other rules
and systems run. Any error makes the run `failed`, with its kind. All of it is recorded
from the service's own thread, not on the event loop every customer's sync and the API
share.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from connectors.base import Capability, Connector, ConnectorError
from daemon import incidents, logs
from daemon.config import CustomerConfig
from daemon.domain import Customer, ItemRef, OpStatus, RetentionScan
from daemon.erasure import Recorder
from daemon.store import RunStatus, Store
from daemon.threads import in_thread

log = structlog.get_logger("pdsync.retention")

T = TypeVar("T")


class RetentionService:
    # Refs erased (and recorded) at a time: what a crash can leave unrecorded at most.
    chunk_size = 500

    def __init__(
        self,
        store: Store,
        connectors: Mapping[str, Connector],
        *,
        ledger: Recorder | None = None,
        customers: Sequence[CustomerConfig] = (),
    ) -> None:
        """`customers`: every configured customer (the neighbours of each run)."""
        self.store = store
        self.customers = tuple(customers)
        self.connectors = {
            s: c for s, c in connectors.items() if Capability.RETENTION in c.capabilities
        }
        self.ledger = ledger
        self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention")

    async def _off_loop(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_thread(self._threads, call, *args, **kwargs)

    async def run(
        self, customer_config: CustomerConfig, *, trigger: str, now: datetime | None = None
    ) -> dict[str, Any]:
        """Delete what is past the customer's rules in every system, as of `now` (the
        clock by default); returns the summary per system: `expired` (items found past
        a rule), `results` (status -> count: "applied" deleted, "conflict" changed since
        it was found and so kept, "failed"), and where it applies `kept_shared` (past
        the rule but another customer's too, kept by its rules), `rules_failed` (the
        rules' keys) and `error` / `error_kind`."""
        now = now or datetime.now(UTC)
        customer = customer_config.to_customer()
        run_id = await self._off_loop(
            self.store.start_run, "retention", customer_id=customer.id, trigger=trigger
        )
        logs.bind(run_id=run_id, customer=customer.id)
        summary: dict[str, Any] = {}
        status = RunStatus.FAILED  # until every system is through
        neighbours = [c.to_customer() for c in self.customers if c.id != customer.id]
        try:
            rules = customer_config.retention_rules()
            ok = True
            for system, connector in sorted(self.connectors.items()):
                if system not in rules:
                    continue  # no rule of this customer's for that system
                part = _SystemRun(self, run_id, customer, system, connector)
                summary[system] = part.summary
                ok = await part.run(now, neighbours) and ok
            status = RunStatus.COMPLETED if ok else RunStatus.FAILED
        except asyncio.CancelledError:
            status = RunStatus.INTERRUPTED
            raise
        except Exception as exc:
            summary["error_kind"] = type(exc).__name__
            log.exception("retention_crashed")
            await self._off_loop(
                self.store.add_event,
                run_id,
                "retention_failed",
                level="error",
                detail={"error_kind": type(exc).__name__},
            )
        finally:
            await self._off_loop(self.store.finish_run, run_id, status, summary)
            log.info("retention_finished", status=str(status), systems=sorted(summary))
            logs.unbind("run_id", "customer")
        return summary

    def _record(self, kind: str, customer: Customer, **payload: Any) -> None:
        if self.ledger is not None:
            self.ledger.record(kind, customer_id=customer.id, **payload)


class _SystemRun:
    """One system's part of a retention run: scan, erase chunk by chunk, record."""

    def __init__(
        self,
        service: RetentionService,
        run_id: str,
        customer: Customer,
        system: str,
        connector: Connector,
    ) -> None:
        self.service = service
        self.store = service.store
        self.run_id = run_id
        self.customer = customer
        self.system = system
        self.engine: Any = connector  # the RETENTION part of the contract (module docstring)
        self.outcome: Counter[str] = Counter()
        self.summary: dict[str, Any] = {"expired": 0, "results": {}}

    async def run(self, now: datetime, neighbours: Sequence[Customer]) -> bool:
        """Whether the system's part went through without any error."""
        ok = True
        off_loop = self.service._off_loop
        try:
            scan = _as_scan(await self.engine.expired(self.customer, now, neighbours=neighbours))
            self.summary["expired"] = len(scan.refs)
            if scan.kept_shared:
                self.summary["kept_shared"] = scan.kept_shared
            if scan.failed:
                ok = False
                await off_loop(self._rules_failed, scan.failed)
            for start in range(0, len(scan.refs), self.service.chunk_size):
                await self._erase(scan.refs[start : start + self.service.chunk_size])
        except asyncio.CancelledError:
            await off_loop(self._finish, error_kind="CancelledError")
            raise
        except ConnectorError as exc:
            ok = False
            self.summary["error"] = str(exc)
            self.summary["error_kind"] = type(exc).__name__
            incident = incidents.for_error(exc)
            await off_loop(self._failed, exc, incident)
            if incident is not None:
                log.error(incident, system=self.system)
        except Exception as exc:
            # A bug, not the system: its message may quote data, so only its kind is kept.
            ok = False
            kind = type(exc).__name__
            self.summary["error"] = f"internal error: {kind}"
            self.summary["error_kind"] = kind
            log.exception("retention_crashed", system=self.system)
            await off_loop(
                self._event, "retention_failed", level="error", detail={"error_kind": kind}
            )
        if self.outcome["failed"]:
            ok = False
        await off_loop(self._finish)
        return ok

    def _failed(self, exc: ConnectorError, incident: str | None) -> None:
        self._event(
            "retention_failed",
            level="error",
            detail={"error": str(exc), "kind": type(exc).__name__},
        )
        if incident is not None:
            self._event(incident, level="error")

    async def _erase(self, refs: Sequence[ItemRef]) -> None:
        """Erase one chunk and record at once what landed."""
        results = await self.engine.erase(self.customer, list(refs))
        await self.service._off_loop(self._landed, refs, results)

    def _landed(self, refs: Sequence[ItemRef], results: Sequence[tuple[Any, Any]]) -> None:
        landed = Counter(str(status) for _, status in results)
        # A status per ref is the contract: a ref without one was not deleted.
        missing = len(refs) - len(results)
        if missing > 0:
            landed[str(OpStatus.FAILED)] += missing
        self.outcome.update(landed)
        self.summary["results"] = dict(sorted(self.outcome.items()))
        detail = {"items": len(refs), "results": dict(sorted(landed.items()))}
        self._event("retention_deleted", detail=detail)
        self.service._record(
            "retention.deleted",
            self.customer,
            run_id=self.run_id,
            system=self.system,
            **detail,
        )

    def _rules_failed(self, failed: Mapping[str, Exception]) -> None:
        self.summary["rules_failed"] = sorted(failed)
        for rule, error in sorted(failed.items()):
            # The rule's key as configured (a folder, a subcollection) and the error's
            # kind and text (connector errors name no personal data).
            detail = {"rule": rule, "kind": type(error).__name__, "error": str(error)}
            self._event("retention_rule_failed", level="error", detail=detail)
            log.error("retention_rule_failed", system=self.system, rule=rule)
            incident = incidents.for_error(error)
            if incident is not None:
                self._event(incident, level="error")

    def _finish(self, **extra: Any) -> None:
        self.summary.update(extra)
        self._event("retention_applied", detail=self.summary)
        payload: dict[str, Any] = {
            "expired": self.summary["expired"],
            "results": dict(self.summary["results"]),
        }
        # How many rules failed, not their keys: a folder's name is the customer's to
        # choose, and the ledger takes no text that could be personal data.
        if "kept_shared" in self.summary:
            payload["kept_shared"] = self.summary["kept_shared"]
        if "rules_failed" in self.summary:
            payload["rules_failed"] = len(self.summary["rules_failed"])
        if "error_kind" in self.summary:
            payload["error_kind"] = self.summary["error_kind"]
        self.service._record(
            "retention.run", self.customer, run_id=self.run_id, system=self.system, **payload
        )

    def _event(self, event: str, *, level: str = "info", detail: Any = None) -> None:
        self.store.add_event(self.run_id, event, level=level, system=self.system, detail=detail)


def _as_scan(found: RetentionScan | Sequence[ItemRef]) -> RetentionScan:
    """A connector's `expired` answer; a plain list of refs is a scan without failures."""
    if isinstance(found, RetentionScan):
        return found
    return RetentionScan(refs=tuple(found))
