"""Runs and their events: what the daemon did, filterable by `pdsync log`.

Neither holds personal data: callers put ids, counts, field names and error codes in
`summary` and `detail`, never values.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import NotFound
from daemon.store.rows import EventLevel, EventRow, RunRow, RunStatus
from daemon.store.schema import run_events, run_tallies, runs


def _run_row(row: sa.Row[Any]) -> RunRow:
    return RunRow(
        id=row.id,
        kind=row.kind,
        customer_id=row.customer_id,
        trigger=row.trigger,
        status=RunStatus(row.status),
        instance_id=row.instance_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        summary=row.summary,
        quiet=row.quiet,
    )


def _event_row(row: sa.Row[Any]) -> EventRow:
    return EventRow(
        id=row.id,
        run_id=row.run_id,
        ts=row.ts,
        level=EventLevel(row.level),
        customer_id=row.customer_id,
        system=row.system,
        event=row.event,
        detail=row.detail,
    )


_HEX = "0123456789abcdef"
_ID_CHARS = _HEX + "-"


def _next_hex(prefix: str) -> str | None:
    """The least string of hex digits above every id starting with `prefix`; None when
    there is none (a prefix of f's and dashes)."""
    for i in range(len(prefix) - 1, -1, -1):
        digit = prefix[i]
        if digit in _HEX and digit != "f":
            return prefix[:i] + _HEX[_HEX.index(digit) + 1]
    return None


@dataclass(frozen=True, slots=True)
class RunTally:
    """Runs of one kind and status (see RunsMixin.tally_runs)."""

    runs: int
    last_finished: datetime | None


class RunsMixin(StoreBase):
    def start_run(self, kind: str, *, customer_id: str | None, trigger: str) -> str:
        """Record a run as started (status running); returns its id (a UUID)."""
        run_id = str(uuid.uuid4())
        with self._write() as conn:
            conn.execute(
                sa.insert(runs).values(
                    id=run_id,
                    kind=kind,
                    customer_id=customer_id,
                    trigger=trigger,
                    status=RunStatus.RUNNING.value,
                    instance_id=self._instance_id,
                    started_at=utcnow(),
                    summary={},
                )
            )
        return run_id

    def finish_run(
        self,
        run_id: str,
        status: RunStatus | str,
        summary: Mapping[str, Any],
        *,
        quiet: bool = False,
    ) -> None:
        """Record how the run ended (any status but running) and its summary; `quiet`:
        it completed with nothing to do and nothing to say (kept only for
        `history.quiet_runs_days`, then counted per day).

        Also accepted for a run already marked interrupted: its process was alive after
        all, and what it reports is the truth. Raises NotFound for an unknown run.
        """
        final = RunStatus(status)
        if final is RunStatus.RUNNING:
            raise ValueError("finish_run needs a final status, not 'running'")
        if quiet and final is not RunStatus.COMPLETED:
            raise ValueError(f"a {final.value} run is not quiet")
        with self._write() as conn:
            updated = conn.execute(
                sa.update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=final.value, finished_at=utcnow(), summary=dict(summary), quiet=quiet
                )
            ).rowcount
        if not updated:
            raise NotFound(f"no run {run_id}")

    def add_event(
        self,
        run_id: str,
        event: str,
        *,
        level: EventLevel | str = EventLevel.INFO,
        customer_id: str | None = None,
        system: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append an event to the run; returns its id (ids grow in order of writing).

        `customer_id` defaults to the run's customer. Raises NotFound for an unknown run.
        """
        run_customer = sa.select(runs.c.customer_id).where(runs.c.id == run_id).scalar_subquery()
        try:
            with self._write() as conn:
                event_id = conn.scalar(
                    sa.insert(run_events)
                    .values(
                        run_id=run_id,
                        ts=utcnow(),
                        level=EventLevel(level).value,
                        customer_id=sa.func.coalesce(
                            sa.literal(customer_id, runs.c.customer_id.type), run_customer
                        ),
                        system=system,
                        event=event,
                        detail=dict(detail or {}),
                    )
                    .returning(run_events.c.id)
                )
        except sa.exc.IntegrityError as exc:  # the foreign key to runs
            raise NotFound(f"no run {run_id}") from exc
        assert event_id is not None
        return int(event_id)

    def get_run(self, run_id: str) -> RunRow | None:
        with self._read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else _run_row(row)

    def find_runs(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Ids of runs that start with `prefix` (a run id, whole or its first
        characters, as `pdsync runs` shows them), at most `limit`, in id order."""
        if not prefix:
            raise ValueError("a run id prefix must not be empty")
        if prefix.strip(_ID_CHARS):
            return []  # run ids are lowercase hex digits and dashes
        # A range on the primary key: LIKE is case-insensitive in SQLite and needs a
        # pattern index in PostgreSQL, either way a walk through every run. The bounds
        # are made of hex digits only, so that a collation that sorts dashes apart (or
        # not at all) keeps every id with the prefix inside them.
        conditions = [
            runs.c.id >= prefix,
            sa.func.substr(runs.c.id, 1, len(prefix)) == prefix,
        ]
        above = _next_hex(prefix)
        if above is not None:
            conditions.append(runs.c.id < above)
        query = sa.select(runs.c.id).where(*conditions).order_by(runs.c.id).limit(limit)
        with self._read() as conn:
            return list(conn.scalars(query))

    def list_runs(
        self,
        *,
        customer_id: str | None = None,
        since: datetime | None = None,
        kind: str | None = None,
        applied_only: bool = False,
        limit: int = 50,
    ) -> list[RunRow]:
        """Runs, newest first; filtered by customer, by start time (>= since), by kind,
        and with `applied_only` to those whose summary names changes applied (a sync's
        `applied` not empty: most syncs change nothing)."""
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id).limit(limit)
        if customer_id is not None:
            query = query.where(runs.c.customer_id == customer_id)
        if since is not None:
            query = query.where(runs.c.started_at >= since)
        if kind is not None:
            query = query.where(runs.c.kind == kind)
        if applied_only:
            query = query.where(runs.c.summary["applied"].as_string() != "{}")
        with self._read() as conn:
            return [_run_row(row) for row in conn.execute(query)]

    def tally_runs(self, *, customer_id: str, since: datetime) -> dict[tuple[str, str], RunTally]:
        """The customer's runs started at or after `since`, counted per (kind, status),
        with the last one's end: what a report says of a month of runs (at a sync a
        minute, tens of thousands), without reading them. Quiet runs already pruned
        count from their daily tallies, by whole days (UTC) from `since`'s day."""
        kept = (
            sa.select(runs.c.kind, runs.c.status, sa.func.count(), sa.func.max(runs.c.finished_at))
            .where(runs.c.customer_id == customer_id, runs.c.started_at >= since)
            .group_by(runs.c.kind, runs.c.status)
        )
        counted = (
            sa.select(
                run_tallies.c.kind,
                run_tallies.c.status,
                sa.func.sum(run_tallies.c.runs),
                sa.func.max(run_tallies.c.last_finished),
            )
            .where(
                run_tallies.c.customer_id == customer_id,
                run_tallies.c.day >= since.astimezone(UTC).date(),
            )
            .group_by(run_tallies.c.kind, run_tallies.c.status)
        )
        found: dict[tuple[str, str], RunTally] = {}
        with self._read(snapshot=True) as conn:
            for kind, status, n, last in [*conn.execute(kept), *conn.execute(counted)]:
                had = found.get((kind, status))
                if had is not None:
                    n += had.runs
                    last = max((t for t in (last, had.last_finished) if t), default=None)
                found[kind, status] = RunTally(runs=int(n), last_finished=last)
        return found

    def latest_runs(self, customer_ids: Sequence[str], *, kind: str) -> dict[str, RunRow]:
        """Each customer's newest run of `kind` (customers without one are left out), in
        a statement or two however many customers: the dashboard lists hundreds."""
        found: dict[str, RunRow] = {}
        wanted = list(dict.fromkeys(customer_ids))
        with self._read(snapshot=True) as conn:
            # A compound SELECT takes 500 parts at most in SQLite.
            for start in range(0, len(wanted), 250):
                # One step down the (customer_id, started_at) index per customer.
                newest = [
                    sa.select(runs.c.id)
                    .where(runs.c.customer_id == customer_id, runs.c.kind == kind)
                    .order_by(runs.c.started_at.desc(), runs.c.id)
                    .limit(1)
                    .subquery()
                    .select()
                    for customer_id in wanted[start : start + 250]
                ]
                ids = list(conn.scalars(sa.union_all(*newest)))
                if ids:
                    for row in conn.execute(sa.select(runs).where(runs.c.id.in_(ids))):
                        found[row.customer_id] = _run_row(row)
        return found

    def run_events(
        self,
        *,
        run_id: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        min_level: EventLevel | str | None = None,
        limit: int = 1000,
    ) -> list[EventRow]:
        """Events in the order they were written; when more match, the latest `limit`."""
        query = sa.select(run_events).order_by(run_events.c.id.desc()).limit(limit)
        if run_id is not None:
            query = query.where(run_events.c.run_id == run_id)
        if customer_id is not None:
            query = query.where(run_events.c.customer_id == customer_id)
        if since is not None:
            # The newest first, by id: a scan back from the end stops at `limit`, but
            # when fewer match (quiet days, a level filter) it would read every event
            # kept. No event at or after `since` has an id below the smallest among
            # those the ts index finds, so the scan stops there. `id + 0`: for a bare
            # min(id) both SQLite and PostgreSQL walk the primary key from the oldest
            # event until one is recent enough, the very scan this avoids.
            first = (
                sa.select(sa.func.min(run_events.c.id + 0))
                .where(run_events.c.ts >= since)
                .correlate(None)
                .scalar_subquery()
            )
            query = query.where(run_events.c.ts >= since, run_events.c.id >= first)
        if min_level is not None:
            query = query.where(
                run_events.c.level.in_([lv.value for lv in EventLevel(min_level).and_above()])
            )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_event_row(row) for row in reversed(rows)]

    def mark_interrupted_runs(
        self, *, idle_for: timedelta | None = None, of_instance: str | None = None
    ) -> list[str]:
        """Mark runs left 'running' by a dead process as 'interrupted'; returns their ids.

        Runs started through this Store object are never touched (they are ours and
        alive). Without `idle_for`, every other running run counts as dead: right at
        start-up of a single instance (SQLite). With several instances on one database,
        pass `idle_for` so that only runs with no event (or start) for that long count,
        and another live instance's runs are left alone. `of_instance`: only the runs of
        that store instance (a worker process known to have died).
        """
        now = utcnow()
        condition = sa.and_(
            runs.c.status == RunStatus.RUNNING.value, runs.c.instance_id != self._instance_id
        )
        if of_instance is not None:
            condition = sa.and_(condition, runs.c.instance_id == of_instance)
        if idle_for is not None:
            last_event = (
                sa.select(sa.func.max(run_events.c.ts))
                .where(run_events.c.run_id == runs.c.id)
                .scalar_subquery()
            )
            condition = sa.and_(
                condition, sa.func.coalesce(last_event, runs.c.started_at) < now - idle_for
            )
        with self._write() as conn:
            rows = conn.execute(
                sa.update(runs)
                .where(condition)
                .values(status=RunStatus.INTERRUPTED.value, finished_at=now)
                .returning(runs.c.id, runs.c.customer_id)
            ).all()
            if rows:
                conn.execute(
                    sa.insert(run_events),
                    [
                        {
                            "run_id": row.id,
                            "ts": now,
                            "level": EventLevel.WARNING.value,
                            "customer_id": row.customer_id,
                            "system": None,
                            "event": "run.interrupted",
                            "detail": {"marked_by_instance": self._instance_id},
                        }
                        for row in rows
                    ],
                )
        return sorted(row.id for row in rows)
