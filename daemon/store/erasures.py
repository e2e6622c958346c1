"""Erasure requests as a durable state machine, and their per-item progress.

The identifiers of a request (whom to erase) are stored encrypted with the customer's
key, and only until the request completes. Every item located for erasure is a row that
is marked done as soon as its system confirms, so a crash resumes where it stopped and
nothing is deleted twice or forgotten. Requests outlive a whole-customer purge: they
hold no personal data and are the proof.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from daemon import crypto
from daemon.store._db import utcnow
from daemon.store.errors import NotFound
from daemon.store.keys import KeysMixin
from daemon.store.rows import ErasureItemRow, ErasureRow, ErasureState, NewErasureItem
from daemon.store.schema import erasure_items, erasure_requests

_OPEN = (
    ErasureState.RECEIVED,
    ErasureState.PLANNED,
    ErasureState.AWAITING_APPROVAL,
    ErasureState.EXECUTING,
    ErasureState.VERIFYING,
)


def _context(request_id: str) -> str:
    return f"pdsync/erasure/{request_id}/identifiers"


def _row(row: sa.Row[Any]) -> ErasureRow:
    return ErasureRow(
        id=row.id,
        customer_id=row.customer_id,
        scope=row.scope,
        state=ErasureState(row.state),
        requested_by=row.requested_by,
        reason=row.reason,
        requested_at=row.requested_at,
        deadline=row.deadline,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        masked=row.masked or {},
        plan=row.plan or {},
        outcome=row.outcome or {},
        certificate=row.certificate,
        error=row.error,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        has_identifiers=row.identifiers is not None,
        strengths=tuple(row.strengths or ()),
        includes=tuple(row.includes or ()),
        card_documents=row.card_documents or 0,
    )


def _item(row: sa.Row[Any]) -> ErasureItemRow:
    return ErasureItemRow(
        system=row.system,
        kind=row.kind,
        item_id=row.item_id,
        scope=row.scope,
        phase=row.phase,
        status=row.status,
        done_at=row.done_at,
        evidence=None if row.evidence is None else tuple(row.evidence),
        included_by=row.included_by,
        included_at=row.included_at,
    )


class ErasuresMixin(KeysMixin):
    def create_erasure(
        self,
        customer_id: str,
        *,
        scope: str,
        identifiers: str,
        masked: Mapping[str, Any],
        requested_by: str,
        reason: str,
        deadline: timedelta,
        includes: Sequence[Mapping[str, Any]] = (),
    ) -> str:
        """A new request in state `received`; `identifiers` (JSON) is stored encrypted.
        `includes` ([{item, by, at}]) are items an admin erases even if ambiguous."""
        key = self.customer_key(customer_id)
        request_id = str(uuid.uuid4())
        now = utcnow()
        with self._write() as conn:
            conn.execute(
                sa.insert(erasure_requests).values(
                    id=request_id,
                    customer_id=customer_id,
                    scope=scope,
                    state=ErasureState.RECEIVED.value,
                    requested_by=requested_by,
                    reason=reason,
                    requested_at=now,
                    deadline=now + deadline,
                    identifiers=crypto.encrypt(key, identifiers, context=_context(request_id)),
                    masked=dict(masked),
                    includes=[dict(i) for i in includes] or None,
                    updated_at=now,
                )
            )
        return request_id

    def get_erasure(self, request_id: str) -> ErasureRow:
        with self._read() as conn:
            row = conn.execute(
                sa.select(erasure_requests).where(erasure_requests.c.id == request_id)
            ).first()
            if row is None:
                # A prefix is enough for people typing ids.
                rows = conn.execute(
                    sa.select(erasure_requests).where(erasure_requests.c.id.startswith(request_id))
                ).all()
                if len(rows) != 1:
                    raise NotFound(f"no single erasure request matches {request_id!r}")
                row = rows[0]
        return _row(row)

    def list_erasures(
        self, *, customer_id: str | None = None, open_only: bool = False, limit: int = 200
    ) -> list[ErasureRow]:
        query = sa.select(erasure_requests).order_by(erasure_requests.c.requested_at.desc())
        if customer_id is not None:
            query = query.where(erasure_requests.c.customer_id == customer_id)
        if open_only:
            query = query.where(erasure_requests.c.state.in_([s.value for s in _OPEN]))
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query.limit(limit))]

    def erasures_to_advance(self) -> bool:
        """Whether any open request can be moved on (open, not awaiting an approval);
        one read."""
        movable = [s.value for s in _OPEN if s is not ErasureState.AWAITING_APPROVAL]
        query = sa.select(erasure_requests.c.id).where(erasure_requests.c.state.in_(movable))
        with self._read() as conn:
            return conn.scalar(query.limit(1)) is not None

    def erasure_identifiers(self, request_id: str) -> str:
        """The request's identifiers (JSON), decrypted; only while the request is open."""
        row = self.get_erasure(request_id)
        with self._read() as conn:
            blob = conn.scalar(
                sa.select(erasure_requests.c.identifiers).where(erasure_requests.c.id == row.id)
            )
        if blob is None:
            raise NotFound(f"erasure {row.id}: its identifiers were destroyed on completion")
        key = self.customer_key(row.customer_id)
        return crypto.decrypt(key, blob, context=_context(row.id)).decode()

    def update_erasure(
        self,
        request_id: str,
        *,
        state: ErasureState | None = None,
        expect: Sequence[ErasureState] | None = None,
        **values: Any,
    ) -> bool:
        """Change state and/or columns (plan, outcome, approved_by, approved_at, error,
        certificate, completed_at, strengths, includes, card_documents). With `expect`,
        only from one of those states; returns whether the row changed (False: another
        instance moved it first)."""
        allowed = {
            "plan",
            "strengths",
            "includes",
            "card_documents",
            "outcome",
            "approved_by",
            "approved_at",
            "error",
            "certificate",
            "completed_at",
        }
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not an erasure column: {', '.join(sorted(unknown))}")
        changes = dict(values, updated_at=utcnow())
        if state is not None:
            changes["state"] = state.value
        query = sa.update(erasure_requests).where(erasure_requests.c.id == request_id)
        if expect is not None:
            query = query.where(erasure_requests.c.state.in_([s.value for s in expect]))
        with self._write() as conn:
            return conn.execute(query.values(**changes)).rowcount == 1

    def forget_erasure_identifiers(self, request_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(erasure_requests)
                .where(erasure_requests.c.id == request_id)
                .values(identifiers=None, updated_at=utcnow())
            )

    def add_erasure_items(
        self,
        request_id: str,
        items: Iterable[NewErasureItem | tuple[str, str, str, str]],
        *,
        phase: str,
    ) -> int:
        """Record located items, each pending (to be erased) or ambiguous (left alone
        unless an admin includes it), with its evidence; a tuple (system, kind, item_id,
        scope) is a pending item without evidence. Items already recorded stay as they
        are, status and evidence included. Returns how many were new."""
        rows = []
        for item in items:
            if not isinstance(item, NewErasureItem):
                system, kind, item_id, scope = item
                item = NewErasureItem(system=system, kind=kind, item_id=item_id, scope=scope)
            if item.status not in ("pending", "ambiguous"):
                raise ValueError(f"a located item is pending or ambiguous, not {item.status!r}")
            rows.append(
                {
                    "request_id": request_id,
                    "system": item.system,
                    "kind": item.kind,
                    "item_id": item.item_id,
                    "scope": item.scope,
                    "phase": phase,
                    "status": item.status,
                    "evidence": None if item.evidence is None else [dict(e) for e in item.evidence],
                }
            )
        if not rows:
            return 0
        with self._write() as conn:
            before = conn.scalar(
                sa.select(sa.func.count()).where(erasure_items.c.request_id == request_id)
            )
            conn.execute(
                self._upsert(erasure_items).on_conflict_do_nothing(
                    index_elements=["request_id", "system", "kind", "item_id"]
                ),
                rows,
            )
            after = conn.scalar(
                sa.select(sa.func.count()).where(erasure_items.c.request_id == request_id)
            )
        return int(after or 0) - int(before or 0)

    def include_erasure_items(
        self, request_id: str, items: Iterable[tuple[str, str, str]], *, by: str
    ) -> int:
        """Turn ambiguous (system, kind, item_id) items into pending ones an admin
        included; items in any other status stay as they are. Returns how many changed."""
        rows = [
            {"b_system": system, "b_kind": kind, "b_item": item_id}
            for system, kind, item_id in items
        ]
        if not rows:
            return 0
        statement = (
            sa.update(erasure_items)
            .where(
                erasure_items.c.request_id == request_id,
                erasure_items.c.system == sa.bindparam("b_system"),
                erasure_items.c.kind == sa.bindparam("b_kind"),
                erasure_items.c.item_id == sa.bindparam("b_item"),
                erasure_items.c.status == "ambiguous",
            )
            .values(status="pending", included_by=by, included_at=utcnow())
        )
        with self._write() as conn:
            # executemany reports no reliable rowcount on every driver: count instead.
            def included() -> int:
                return int(
                    conn.scalar(
                        sa.select(sa.func.count()).where(
                            erasure_items.c.request_id == request_id,
                            erasure_items.c.included_by.is_not(None),
                        )
                    )
                    or 0
                )

            before = included()
            conn.execute(statement, rows)
            return included() - before

    def erasure_items(
        self, request_id: str, *, status: str | None = None, system: str | None = None
    ) -> list[ErasureItemRow]:
        query = sa.select(erasure_items).where(erasure_items.c.request_id == request_id)
        if status is not None:
            query = query.where(erasure_items.c.status == status)
        if system is not None:
            query = query.where(erasure_items.c.system == system)
        with self._read() as conn:
            return [
                _item(r)
                for r in conn.execute(
                    query.order_by(erasure_items.c.system, erasure_items.c.item_id)
                )
            ]

    def mark_erasure_items(
        self, request_id: str, items: Iterable[tuple[str, str, str]], status: str
    ) -> None:
        """Mark (system, kind, item_id) items done / manual / failed, as the system said."""
        now: datetime = utcnow()
        rows = [
            {"b_system": system, "b_kind": kind, "b_item": item_id}
            for system, kind, item_id in items
        ]
        if not rows:
            return
        statement = (
            sa.update(erasure_items)
            .where(
                erasure_items.c.request_id == request_id,
                erasure_items.c.system == sa.bindparam("b_system"),
                erasure_items.c.kind == sa.bindparam("b_kind"),
                erasure_items.c.item_id == sa.bindparam("b_item"),
            )
            .values(status=status, done_at=now if status == "done" else None)
        )
        with self._write() as conn:
            conn.execute(statement, rows)
