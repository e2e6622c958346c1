"""The daemon's event log as `pdsync log` shows it: stored run events, plus a line when a
run starts and when it ends, merged in time order, filtered by customer, run, time and
level. Details go through the log redaction on the way out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon import logs
from daemon.store import EventLevel, EventRow, RunRow, Store

_RUN_LEVEL = {"failed": "error", "interrupted": "warning", "awaiting_approval": "warning"}


@dataclass(frozen=True, kw_only=True, slots=True)
class LogLine:
    """One line of `pdsync log`: a stored run event, or a run starting or ending."""

    ts: datetime
    level: EventLevel
    customer: str | None
    run_id: str
    system: str | None
    event: str
    detail: dict[str, Any]

    @classmethod
    def of_event(cls, row: EventRow) -> LogLine:
        return cls(
            ts=row.ts,
            level=row.level,
            customer=row.customer_id,
            run_id=row.run_id,
            system=row.system,
            event=row.event,
            detail=logs.scrub(dict(row.detail)),
        )

    @classmethod
    def run_started(cls, row: RunRow) -> LogLine:
        return cls(
            ts=row.started_at,
            level=EventLevel.INFO,
            customer=row.customer_id,
            run_id=row.id,
            system=None,
            event=f"run.started {row.kind}",
            detail={"trigger": row.trigger},
        )

    @classmethod
    def run_finished(cls, row: RunRow) -> LogLine:
        assert row.finished_at is not None
        seconds = round((row.finished_at - row.started_at).total_seconds(), 1)
        detail: dict[str, Any] = {"seconds": seconds}
        if row.summary.get("error"):
            detail["error"] = row.summary["error"]
        if row.changes:
            detail["changes"] = row.changes
        return cls(
            ts=row.finished_at,
            level=EventLevel(_RUN_LEVEL.get(str(row.status), "info")),
            customer=row.customer_id,
            run_id=row.id,
            system=None,
            event=f"run.{row.status} {row.kind}",
            detail=logs.scrub(detail),
        )

    def text(self) -> str:
        detail = " ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in self.detail.items()
        )
        return (
            f"{self.ts.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {self.level.value.upper():<7}  "
            f"{self.customer or '-':<12}  {self.run_id[:8]}  {self.system or '-':<9}  "
            f"{self.event}  {detail}"
        ).rstrip()

    def json(self) -> str:
        return json.dumps(
            {
                "ts": self.ts.astimezone(UTC).isoformat(),
                "level": self.level.value,
                "customer": self.customer,
                "run_id": self.run_id,
                "system": self.system,
                "event": self.event,
                "detail": self.detail,
            },
            ensure_ascii=False,
            sort_keys=True,
        )


@dataclass(kw_only=True)
class LogQuery:
    """What `pdsync log` shows; `read` returns what is new since the last call."""

    store: Store
    customer: str | None
    since: datetime | None
    level: EventLevel
    run_id: str | None
    limit: int
    last_event: int = 0
    started: frozenset[str] = frozenset()
    finished: frozenset[str] = frozenset()

    def read(self) -> list[LogLine]:
        events = [
            e
            for e in self.store.run_events(
                run_id=self.run_id,
                customer_id=self.customer,
                since=self.since,
                min_level=self.level,
                limit=self.limit,
            )
            if e.id > self.last_event
        ]
        if self.run_id is not None:
            one = self.store.get_run(self.run_id)
            runs = [one] if one is not None else []
        else:
            runs = self.store.list_runs(
                customer_id=self.customer, since=self.since, limit=self.limit
            )
        lines = [LogLine.of_event(e) for e in events]
        for run in runs:
            if run.id not in self.started:
                lines.append(LogLine.run_started(run))
            if run.finished_at is not None and run.id not in self.finished:
                lines.append(LogLine.run_finished(run))
        self.last_event = max([self.last_event, *(e.id for e in events)])
        self.started |= {r.id for r in runs}
        self.finished |= {r.id for r in runs if r.finished_at is not None}
        wanted = set(self.level.and_above())
        return sorted((line for line in lines if line.level in wanted), key=lambda line: line.ts)
