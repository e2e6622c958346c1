"""Retention: data past its rule is deleted on a schedule, and each run is recorded (O3).

Rules are per customer, system and kind of data: Outlook per mail folder
(`customers[].outlook.retention_days`, days since received), Firestore per subcollection
of the card (`customers[].firestore.retention_days`, days since last changed). Any
connector that declares the RETENTION capability takes part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from connectors.base import Capability, Connector, ConnectorError
from daemon import incidents, logs
from daemon.config import CustomerConfig
from daemon.erasure import Recorder
from daemon.store import RunStatus, Store

log = structlog.get_logger("pdsync.retention")


class RetentionService:
    def __init__(
        self, store: Store, connectors: Mapping[str, Connector], *, ledger: Recorder | None = None
    ) -> None:
        self.store = store
        self.connectors = {
            s: c for s, c in connectors.items() if Capability.RETENTION in c.capabilities
        }
        self.ledger = ledger

    async def run(
        self, customer_config: CustomerConfig, *, trigger: str, now: datetime | None = None
    ) -> dict[str, Any]:
        """Delete what is past the customer's rules in every system, as of `now` (the
        clock by default); returns the counts."""
        now = now or datetime.now(UTC)
        customer = customer_config.to_customer()
        run_id = self.store.start_run("retention", customer_id=customer.id, trigger=trigger)
        logs.bind(run_id=run_id, customer=customer.id)
        summary: dict[str, Any] = {}
        status = RunStatus.COMPLETED
        try:
            rules = customer_config.retention_rules()
            for system, connector in sorted(self.connectors.items()):
                if system not in rules:
                    continue  # no rule of this customer's for that system
                engine: Any = connector
                try:
                    expired = await engine.expired(customer, now)
                    results = await engine.erase(customer, expired) if expired else []
                except ConnectorError as exc:
                    status = RunStatus.FAILED
                    summary[system] = {"error": str(exc)}
                    self.store.add_event(
                        run_id,
                        "retention_failed",
                        level="error",
                        system=system,
                        detail={"error": str(exc)},
                    )
                    incident = incidents.for_error(exc)
                    if incident is not None:
                        self.store.add_event(run_id, incident, level="error", system=system)
                        log.error(incident, system=system)
                    continue
                outcome = Counter(str(s) for _, s in results)
                summary[system] = {"expired": len(expired), "results": dict(outcome)}
                self.store.add_event(
                    run_id, "retention_applied", system=system, detail=summary[system]
                )
                if self.ledger is not None:
                    self.ledger.record(
                        "retention.run",
                        customer_id=customer.id,
                        run_id=run_id,
                        system=system,
                        expired=len(expired),
                        results=dict(outcome),
                    )
        finally:
            self.store.finish_run(run_id, status, summary)
            log.info("retention_finished", status=str(status), systems=sorted(summary))
            logs.unbind("run_id", "customer")
        return summary
