"""Retention of pdsync's own records: runs and their events, the op journal, work items,
quarantine and instances (issue 15).

Quiet runs (a sync that found nothing to do and had nothing to say: at a sync a minute,
nearly all of them) go sooner, and are counted per customer and day in `run_tallies` as
they go, in the same transaction: the processing report still counts them.

Each kind is deleted in chunks, one short transaction per chunk, so pruning a year's
backlog never holds SQLite's write lock (or PostgreSQL row locks) for long and a sync
running beside it keeps going. Only finished records go: a running run, a pending
journal entry, a queued or running work item and this instance are never touched. The
ledger is not pruned here nor anywhere: it keeps the proof of what the pruned history
did (and a `history.pruned` entry with the counts; see daemon/service.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from daemon.store._base import StoreBase
from daemon.store.rows import JournalStatus, RunStatus
from daemon.store.schema import (
    instances,
    op_journal,
    quarantine,
    run_events,
    run_tallies,
    runs,
    work_items,
)
from daemon.store.work import ACTIVE


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryCutoffs:
    """Records older than these moments are deleted (see daemon.config.HistoryConfig)."""

    runs: datetime
    quiet_runs: datetime | None = None  # None: as `runs`
    journal: datetime
    work: datetime
    quarantine: datetime
    instances: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryPruned:
    """How many rows prune_history deleted, per kind."""

    runs: int
    run_events: int
    quiet_runs: int  # of `runs`: counted in `run_tallies` before they went
    journal: int
    work_items: int
    quarantine: int
    instances: int

    def as_dict(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "run_events": self.run_events,
            "quiet_runs": self.quiet_runs,
            "journal": self.journal,
            "work_items": self.work_items,
            "quarantine": self.quarantine,
            "instances": self.instances,
        }


class HistoryMixin(StoreBase):
    def prune_history(self, cutoffs: HistoryCutoffs, *, chunk: int = 500) -> HistoryPruned:
        """Delete finished records older than `cutoffs`, `chunk` rows per transaction.

        Idempotent; safe beside running syncs and other instances (each chunk picks
        its rows again). Returns the counts deleted.
        """
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        quiet, quiet_events = (0, 0)
        if cutoffs.quiet_runs is not None and cutoffs.quiet_runs > cutoffs.runs:
            quiet, quiet_events = self._prune_runs(cutoffs.quiet_runs, chunk, quiet=True)
        runs_deleted, events_deleted = self._prune_runs(cutoffs.runs, chunk)
        runs_deleted += quiet
        events_deleted += quiet_events
        # Tallies go with the runs they stand for.
        self._prune_chunks(
            run_tallies.c.day, run_tallies.c.day < cutoffs.runs.astimezone(UTC).date(), chunk
        )
        journal = self._prune_chunks(
            op_journal.c.op_id,
            sa.and_(
                op_journal.c.status.in_([JournalStatus.DONE.value, JournalStatus.FAILED.value]),
                sa.func.coalesce(op_journal.c.finished_at, op_journal.c.created_at)
                < cutoffs.journal,
            ),
            chunk,
        )
        work = self._prune_chunks(
            work_items.c.id,
            sa.and_(
                work_items.c.state.not_in(ACTIVE),
                sa.func.coalesce(work_items.c.finished_at, work_items.c.enqueued_at) < cutoffs.work,
            ),
            chunk,
        )
        held = self._prune_chunks(
            quarantine.c.id,
            sa.or_(
                quarantine.c.released_at < cutoffs.quarantine,
                sa.and_(
                    quarantine.c.released_at.is_(None),
                    quarantine.c.last_seen < cutoffs.quarantine,
                ),
            ),
            chunk,
        )
        gone = self._prune_chunks(
            instances.c.id,
            sa.and_(instances.c.last_seen < cutoffs.instances, instances.c.id != self.instance_id),
            chunk,
        )
        return HistoryPruned(
            runs=runs_deleted,
            run_events=events_deleted,
            quiet_runs=quiet,
            journal=journal,
            work_items=work,
            quarantine=held,
            instances=gone,
        )

    def _prune_runs(self, before: datetime, chunk: int, *, quiet: bool = False) -> tuple[int, int]:
        """Finished runs started before `before` (`quiet`: quiet ones only, counted in
        `run_tallies` in the same transaction), with their events; a run's events go in
        the same transaction as the run (they are read as one)."""
        if quiet:
            finished = sa.and_(runs.c.quiet.is_(True), runs.c.started_at < before)
        else:
            finished = sa.and_(runs.c.started_at < before, runs.c.status != RunStatus.RUNNING.value)
        total_runs = total_events = 0
        while True:
            with self._write() as conn:
                picked = conn.execute(
                    sa.select(
                        runs.c.id,
                        runs.c.customer_id,
                        runs.c.kind,
                        runs.c.status,
                        runs.c.started_at,
                        runs.c.finished_at,
                    )
                    .where(finished)
                    .order_by(runs.c.started_at)
                    .limit(chunk)
                ).all()
                if not picked:
                    break
                ids = [row.id for row in picked]
                if quiet:
                    self._tally(conn, picked)
                total_events += conn.execute(
                    sa.delete(run_events).where(run_events.c.run_id.in_(ids))
                ).rowcount
                total_runs += conn.execute(sa.delete(runs).where(runs.c.id.in_(ids))).rowcount
            if len(picked) < chunk:
                break
        return total_runs, total_events

    def _tally(self, conn: sa.Connection, picked: Sequence[Any]) -> None:
        """Add runs about to be deleted to their customers' daily tallies."""
        tallies: dict[tuple[str, date, str, str], tuple[int, datetime | None]] = {}
        for row in picked:
            key = (
                row.customer_id or "",
                row.started_at.astimezone(UTC).date(),
                row.kind,
                row.status,
            )
            n, last = tallies.get(key, (0, None))
            ends = [t for t in (last, row.finished_at) if t is not None]
            tallies[key] = (n + 1, max(ends, default=None))
        stmt = self._upsert(run_tallies).values(
            [
                {
                    "customer_id": customer_id,
                    "day": day,
                    "kind": kind,
                    "status": status,
                    "runs": n,
                    "last_finished": last,
                }
                for (customer_id, day, kind, status), (n, last) in tallies.items()
            ]
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[
                    run_tallies.c.customer_id,
                    run_tallies.c.day,
                    run_tallies.c.kind,
                    run_tallies.c.status,
                ],
                set_={
                    "runs": run_tallies.c.runs + stmt.excluded.runs,
                    "last_finished": sa.case(
                        (
                            sa.or_(
                                run_tallies.c.last_finished.is_(None),
                                stmt.excluded.last_finished > run_tallies.c.last_finished,
                            ),
                            stmt.excluded.last_finished,
                        ),
                        else_=run_tallies.c.last_finished,
                    ),
                },
            )
        )

    def _prune_chunks(
        self, key: sa.Column[object], condition: sa.ColumnElement[bool], chunk: int
    ) -> int:
        total = 0
        pick = sa.select(key).where(condition).order_by(key).limit(chunk)
        table = key.table
        while True:
            with self._write() as conn:
                ids = list(conn.scalars(pick))
                if not ids:
                    break
                total += conn.execute(sa.delete(table).where(key.in_(ids))).rowcount
            if len(ids) < chunk:
                break
        return total
