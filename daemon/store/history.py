"""Retention of pdsync's own records: runs and their events, the op journal, work items,
quarantine and instances (issue 15).

Each kind is deleted in chunks, one short transaction per chunk, so pruning a year's
backlog never holds SQLite's write lock (or PostgreSQL row locks) for long and a sync
running beside it keeps going. Only finished records go: a running run, a pending
journal entry, a queued or running work item and this instance are never touched. The
ledger is not pruned here nor anywhere: it keeps the proof of what the pruned history
did (and a `history.pruned` entry with the counts; see daemon/service.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from daemon.store._base import StoreBase
from daemon.store.rows import JournalStatus, RunStatus
from daemon.store.schema import instances, op_journal, quarantine, run_events, runs, work_items
from daemon.store.work import ACTIVE


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryCutoffs:
    """Records older than these moments are deleted (see daemon.config.HistoryConfig)."""

    runs: datetime
    journal: datetime
    work: datetime
    quarantine: datetime
    instances: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryPruned:
    """How many rows prune_history deleted, per kind."""

    runs: int
    run_events: int
    journal: int
    work_items: int
    quarantine: int
    instances: int

    def as_dict(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "run_events": self.run_events,
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
        runs_deleted, events_deleted = self._prune_runs(cutoffs.runs, chunk)
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
            journal=journal,
            work_items=work,
            quarantine=held,
            instances=gone,
        )

    def _prune_runs(self, before: datetime, chunk: int) -> tuple[int, int]:
        """Finished runs started before `before`, with their events; a run's events go
        in the same transaction as the run (they are read as one)."""
        finished = sa.and_(runs.c.started_at < before, runs.c.status != RunStatus.RUNNING.value)
        total_runs = total_events = 0
        while True:
            with self._write() as conn:
                ids = list(
                    conn.scalars(
                        sa.select(runs.c.id)
                        .where(finished)
                        .order_by(runs.c.started_at)
                        .limit(chunk)
                    )
                )
                if not ids:
                    break
                total_events += conn.execute(
                    sa.delete(run_events).where(run_events.c.run_id.in_(ids))
                ).rowcount
                total_runs += conn.execute(sa.delete(runs).where(runs.c.id.in_(ids))).rowcount
            if len(ids) < chunk:
                break
        return total_runs, total_events

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
