"""Decisions people make: disputes (which value wins) and approvals (of mass deletions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import NotFound
from daemon.store.rows import ApprovalRow, DisputeRow, DisputeStatus
from daemon.store.schema import OPEN_ONLY, approvals, disputes

DELETIONS = "deletions"  # a run may delete up to max_count contacts
CREATIONS = "creations"  # a run may create up to max_count contacts
SHRINK = "shrink"  # a run may go on although a system read far fewer records than it held
APPROVAL_KINDS = (DELETIONS, CREATIONS, SHRINK)


def _dispute_row(row: sa.Row[Any]) -> DisputeRow:
    return DisputeRow(
        id=row.id,
        customer_id=row.customer_id,
        link_id=row.link_id,
        field=row.field,
        fingerprints=row.fingerprints,
        status=DisputeStatus(row.status),
        opened_at=row.opened_at,
        resolved_at=row.resolved_at,
        resolution=row.resolution,
    )


def _approval_row(row: sa.Row[Any]) -> ApprovalRow:
    return ApprovalRow(
        id=row.id,
        customer_id=row.customer_id,
        kind=row.kind,
        max_count=row.max_count,
        approved_by=row.approved_by,
        reason=row.reason,
        created_at=row.created_at,
        consumed_at=row.consumed_at,
        consumed_by_run=row.consumed_by_run,
    )


class DecisionsMixin(StoreBase):
    # -- disputes ---------------------------------------------------------------------

    def open_dispute(
        self, customer_id: str, link_id: str, field: str, fingerprints: Mapping[str, str]
    ) -> int:
        """Put a conflicting field before a person; returns the dispute id.

        Idempotent: while a dispute for the same link and field is open, it is updated
        with the new fingerprints (per system) and keeps its id.
        """
        now = utcnow()
        stmt = self._upsert(disputes).values(
            customer_id=customer_id,
            link_id=link_id,
            field=field,
            fingerprints=dict(fingerprints),
            status=DisputeStatus.OPEN.value,
            opened_at=now,
            updated_at=now,
        )
        with self._write() as conn:
            dispute_id = conn.scalar(
                stmt.on_conflict_do_update(
                    index_elements=[disputes.c.customer_id, disputes.c.link_id, disputes.c.field],
                    # A literal predicate: both databases must match it to the partial index.
                    index_where=OPEN_ONLY,
                    set_={
                        "fingerprints": stmt.excluded.fingerprints,
                        "updated_at": stmt.excluded.updated_at,
                    },
                ).returning(disputes.c.id)
            )
        assert dispute_id is not None
        return int(dispute_id)

    def resolve_dispute(self, dispute_id: int, *, winner: str, by: str) -> bool:
        """Record the decision: `winner` is the system whose value stands, `by` who decided.

        Returns False when the dispute was already resolved (the first decision stands);
        raises NotFound for an unknown dispute.
        """
        with self._write() as conn:
            resolved = conn.execute(
                sa.update(disputes)
                .where(disputes.c.id == dispute_id, disputes.c.status == DisputeStatus.OPEN.value)
                .values(
                    status=DisputeStatus.RESOLVED.value,
                    resolved_at=utcnow(),
                    resolution={"winner": winner, "by": by},
                )
            ).rowcount
            if resolved:
                return True
            if conn.scalar(sa.select(disputes.c.id).where(disputes.c.id == dispute_id)) is None:
                raise NotFound(f"no dispute {dispute_id}")
        return False

    def finish_decisions(self, dispute_ids: Iterable[int], *, run_id: str) -> int:
        """Note that the decisions on these disputes were carried out (or became moot) in
        run `run_id`, so the reconciler stops acting on them. Returns how many."""
        ids = sorted(set(dispute_ids))
        if not ids:
            return 0
        finished = 0
        with self._write() as conn:
            rows = conn.execute(
                sa.select(disputes.c.id, disputes.c.resolution).where(
                    disputes.c.id.in_(ids), disputes.c.status == DisputeStatus.RESOLVED.value
                )
            ).all()
            for row in rows:
                resolution = dict(row.resolution or {})
                if not resolution.get("winner") or resolution.get("carried_out"):
                    continue  # no decision to carry out, or carried out already
                resolution["carried_out"] = {"run": run_id, "at": utcnow().isoformat()}
                conn.execute(
                    sa.update(disputes).where(disputes.c.id == row.id).values(resolution=resolution)
                )
                finished += 1
        return finished

    def list_disputes(
        self, *, customer_id: str | None = None, open_only: bool = True
    ) -> list[DisputeRow]:
        """Disputes, oldest first."""
        query = sa.select(disputes).order_by(disputes.c.id)
        if customer_id is not None:
            query = query.where(disputes.c.customer_id == customer_id)
        if open_only:
            query = query.where(disputes.c.status == DisputeStatus.OPEN.value)
        with self._read() as conn:
            return [_dispute_row(row) for row in conn.execute(query)]

    def close_disputes_for_link(
        self, customer_id: str, link_id: str, field: str | None = None, *, by: str = "pdsync"
    ) -> int:
        """Resolve the link's open disputes (one field's, or all) without a winner.

        For when the question went away: the systems agree again, or the link is gone.
        Returns how many were closed.
        """
        condition = sa.and_(
            disputes.c.customer_id == customer_id,
            disputes.c.link_id == link_id,
            disputes.c.status == DisputeStatus.OPEN.value,
        )
        if field is not None:
            condition = sa.and_(condition, disputes.c.field == field)
        with self._write() as conn:
            return conn.execute(
                sa.update(disputes)
                .where(condition)
                .values(
                    status=DisputeStatus.RESOLVED.value,
                    resolved_at=utcnow(),
                    resolution={"winner": None, "by": by},
                )
            ).rowcount

    # -- approvals --------------------------------------------------------------------

    def approve_deletions(
        self, customer_id: str, max_count: int, *, by: str, reason: str, kind: str = DELETIONS
    ) -> int:
        """Allow one run to delete (or, by `kind`, create) up to `max_count` of the
        customer's records, or to go on past a shrunk read (`SHRINK`).

        Returns the approval id. `reason` is shown to auditors: no personal data.
        """
        if max_count < 0:
            raise ValueError("max_count must not be negative")
        if kind not in APPROVAL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(APPROVAL_KINDS)}")
        with self._write() as conn:
            approval_id = conn.scalar(
                sa.insert(approvals)
                .values(
                    customer_id=customer_id,
                    kind=kind,
                    max_count=max_count,
                    approved_by=by,
                    reason=reason,
                    created_at=utcnow(),
                )
                .returning(approvals.c.id)
            )
        assert approval_id is not None
        return int(approval_id)

    def consume_approval(
        self, customer_id: str, count: int, run_id: str, *, kind: str = DELETIONS
    ) -> bool:
        """Use up the oldest unused approval of `kind` that covers `count` (deletions,
        creations; for SHRINK, the records missing from the read).

        Atomic: concurrent runs never consume the same approval, and each approval is
        consumed at most once. Returns False when none covers `count`.
        """
        # SKIP LOCKED: a concurrent consumer that has locked the oldest approval makes
        # us take the next one instead of waiting and then finding it consumed. SQLite
        # ignores the clause; its writers are serialised by BEGIN IMMEDIATE.
        candidate = (
            sa.select(approvals.c.id)
            .where(
                approvals.c.customer_id == customer_id,
                approvals.c.kind == kind,
                approvals.c.consumed_at.is_(None),
                approvals.c.max_count >= count,
            )
            .order_by(approvals.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self._write() as conn:
            consumed = conn.execute(
                sa.update(approvals)
                # consumed_at again: the row is re-checked after any lock wait.
                .where(approvals.c.id == candidate, approvals.c.consumed_at.is_(None))
                .values(consumed_at=utcnow(), consumed_by_run=run_id)
            ).rowcount
        return consumed == 1

    def list_approvals(
        self, *, customer_id: str | None = None, open_only: bool = True
    ) -> list[ApprovalRow]:
        """Deletion approvals, oldest first; `open_only`: not yet consumed."""
        query = sa.select(approvals).order_by(approvals.c.id)
        if customer_id is not None:
            query = query.where(approvals.c.customer_id == customer_id)
        if open_only:
            query = query.where(approvals.c.consumed_at.is_(None))
        with self._read() as conn:
            return [_approval_row(row) for row in conn.execute(query)]
