"""Work for people: quarantined records and manual tasks, both holding an encrypted blob.

The blobs (a payload as a system returned it, an instruction naming a person) are
encrypted with the customer's key, so destroying that key makes them unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from daemon import crypto
from daemon.store._db import utcnow
from daemon.store.errors import NotFound
from daemon.store.keys import KeysMixin
from daemon.store.rows import QuarantineRow, TaskRow, TaskStatus
from daemon.store.schema import OPEN_ONLY, manual_tasks, quarantine

# Bind parameters per IN (...) list: far below SQLite's and PostgreSQL's limits.
_IN_CHUNK = 500


def _quarantine_context(customer_id: str, system: str, record_key: str) -> str:
    return f"pdsync/quarantine/{customer_id}/{system}/{record_key}"


def _task_context(customer_id: str, system: str, link_id: str, op_kind: str) -> str:
    return f"pdsync/manual-task/{customer_id}/{system}/{link_id}/{op_kind}"


def _quarantine_row(row: sa.Row[Any]) -> QuarantineRow:
    return QuarantineRow(
        id=row.id,
        customer_id=row.customer_id,
        system=row.system,
        external_id=row.external_id,
        reason=row.reason,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        count=row._mapping["count"],  # Row.count is tuple.count
        released_at=row.released_at,
    )


def _task_row(row: sa.Row[Any]) -> TaskRow:
    return TaskRow(
        id=row.id,
        customer_id=row.customer_id,
        system=row.system,
        link_id=row.link_id,
        op_kind=row.op_kind,
        op_fingerprint=row.op_fingerprint,
        status=TaskStatus(row.status),
        created_at=row.created_at,
        closed_at=row.closed_at,
        note=row.note,
    )


class CaseworkMixin(KeysMixin):
    # -- quarantine -------------------------------------------------------------------

    def quarantine(
        self, customer_id: str, system: str, external_id: str | None, reason: str, payload: str
    ) -> int:
        """Keep a record that could not be read, encrypted; returns the quarantine id.

        The same record (customer, system, external_id) seen again updates its entry:
        count + 1, last_seen, the newest reason and payload, and reopens it if it was
        released. A record without an id is recognised by a keyed fingerprint of its
        payload. `reason` names fields and problems, never values.
        """
        now = utcnow()
        with self._write() as conn:
            key = self._ensure_key(conn, customer_id)
            if external_id is not None:
                record_key = f"id:{external_id}"
            else:
                digest = hmac.new(key, b"quarantine\x00" + payload.encode(), hashlib.sha256)
                record_key = f"fp:{digest.hexdigest()[:32]}"
            blob = crypto.encrypt(
                key, payload, context=_quarantine_context(customer_id, system, record_key)
            )
            stmt = self._upsert(quarantine).values(
                customer_id=customer_id,
                system=system,
                external_id=external_id,
                record_key=record_key,
                reason=reason,
                payload=blob,
                first_seen=now,
                last_seen=now,
                count=1,
            )
            quarantine_id = conn.scalar(
                stmt.on_conflict_do_update(
                    index_elements=[
                        quarantine.c.customer_id,
                        quarantine.c.system,
                        quarantine.c.record_key,
                    ],
                    set_={
                        "reason": stmt.excluded.reason,
                        "payload": stmt.excluded.payload,
                        "last_seen": stmt.excluded.last_seen,
                        "count": quarantine.c.count + 1,
                        "released_at": None,
                    },
                ).returning(quarantine.c.id)
            )
        assert quarantine_id is not None
        return int(quarantine_id)

    def release_quarantine(
        self, customer_id: str, system: str, external_ids_seen_clean: Iterable[str]
    ) -> int:
        """Release the open entries of records that have now been read without problems.

        Returns how many were released; the entries (and encrypted payloads) stay until
        the customer is purged.
        """
        ids = sorted(set(external_ids_seen_clean))
        released = 0
        now = utcnow()
        with self._write() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                released += conn.execute(
                    sa.update(quarantine)
                    .where(
                        quarantine.c.customer_id == customer_id,
                        quarantine.c.system == system,
                        quarantine.c.released_at.is_(None),
                        quarantine.c.external_id.in_(ids[start : start + _IN_CHUNK]),
                    )
                    .values(released_at=now)
                ).rowcount
        return released

    def list_quarantine(
        self, *, customer_id: str | None = None, open_only: bool = True
    ) -> list[QuarantineRow]:
        """Quarantine entries, oldest first (payloads not included: see quarantine_payload)."""
        query = sa.select(quarantine).order_by(quarantine.c.id)
        if customer_id is not None:
            query = query.where(quarantine.c.customer_id == customer_id)
        if open_only:
            query = query.where(quarantine.c.released_at.is_(None))
        with self._read() as conn:
            return [_quarantine_row(row) for row in conn.execute(query)]

    def quarantine_payload(self, quarantine_id: int) -> str:
        """The decrypted payload, for an operator to look at.

        Raises NotFound, or KeyDestroyed once the customer was crypto-shredded.
        """
        with self._read() as conn:
            row = conn.execute(
                sa.select(
                    quarantine.c.customer_id,
                    quarantine.c.system,
                    quarantine.c.record_key,
                    quarantine.c.payload,
                ).where(quarantine.c.id == quarantine_id)
            ).first()
            if row is None:
                raise NotFound(f"no quarantine entry {quarantine_id}")
            key = self._existing_key(conn, row.customer_id)
        context = _quarantine_context(row.customer_id, row.system, row.record_key)
        return crypto.decrypt(key, row.payload, context=context).decode()

    # -- manual tasks -----------------------------------------------------------------

    def open_task(
        self,
        customer_id: str,
        system: str,
        link_id: str,
        op_kind: str,
        op_fingerprint: str,
        instruction: str,
    ) -> int:
        """Ask an operator to make a change by hand; returns the task id.

        Idempotent per open (customer, system, link, op_kind): the same op_fingerprint
        returns the open task untouched; a different one (the desired change moved on)
        replaces its fingerprint and instruction. The instruction is stored encrypted.
        """
        now = utcnow()
        with self._write() as conn:
            key = self._ensure_key(conn, customer_id)
            blob = crypto.encrypt(
                key, instruction, context=_task_context(customer_id, system, link_id, op_kind)
            )
            stmt = self._upsert(manual_tasks).values(
                customer_id=customer_id,
                system=system,
                link_id=link_id,
                op_kind=op_kind,
                op_fingerprint=op_fingerprint,
                instruction=blob,
                status=TaskStatus.OPEN.value,
                created_at=now,
                updated_at=now,
            )
            # In ON CONFLICT ... SET, manual_tasks.<col> is the row as it was.
            unchanged = manual_tasks.c.op_fingerprint == stmt.excluded.op_fingerprint
            task_id = conn.scalar(
                stmt.on_conflict_do_update(
                    index_elements=[
                        manual_tasks.c.customer_id,
                        manual_tasks.c.system,
                        manual_tasks.c.link_id,
                        manual_tasks.c.op_kind,
                    ],
                    # A literal predicate: both databases must match it to the partial index.
                    index_where=OPEN_ONLY,
                    set_={
                        "instruction": sa.case(
                            (unchanged, manual_tasks.c.instruction),
                            else_=stmt.excluded.instruction,
                        ),
                        "updated_at": sa.case(
                            (unchanged, manual_tasks.c.updated_at),
                            else_=stmt.excluded.updated_at,
                        ),
                        "op_fingerprint": stmt.excluded.op_fingerprint,
                    },
                ).returning(manual_tasks.c.id)
            )
        assert task_id is not None
        return int(task_id)

    def close_task(self, task_id: int, note: str | None = None) -> bool:
        """Mark the task done (after a read-back showed the change in place).

        Returns False when it was already closed (the first close stands); raises
        NotFound for an unknown task. `note` is for ops and must hold no personal data.
        """
        with self._write() as conn:
            closed = conn.execute(
                sa.update(manual_tasks)
                .where(manual_tasks.c.id == task_id, manual_tasks.c.status == TaskStatus.OPEN.value)
                .values(status=TaskStatus.DONE.value, closed_at=utcnow(), note=note)
            ).rowcount
            if closed:
                return True
            if (
                conn.scalar(sa.select(manual_tasks.c.id).where(manual_tasks.c.id == task_id))
                is None
            ):
                raise NotFound(f"no manual task {task_id}")
        return False

    def list_tasks(
        self, *, customer_id: str | None = None, open_only: bool = True
    ) -> list[TaskRow]:
        """Manual tasks, oldest first (instructions not included: see task_instruction)."""
        query = sa.select(manual_tasks).order_by(manual_tasks.c.id)
        if customer_id is not None:
            query = query.where(manual_tasks.c.customer_id == customer_id)
        if open_only:
            query = query.where(manual_tasks.c.status == TaskStatus.OPEN.value)
        with self._read() as conn:
            return [_task_row(row) for row in conn.execute(query)]

    def task_instruction(self, task_id: int) -> str:
        """The decrypted instruction, for the operator. Raises NotFound or KeyDestroyed."""
        with self._read() as conn:
            row = conn.execute(sa.select(manual_tasks).where(manual_tasks.c.id == task_id)).first()
            if row is None:
                raise NotFound(f"no manual task {task_id}")
            key = self._existing_key(conn, row.customer_id)
        context = _task_context(row.customer_id, row.system, row.link_id, row.op_kind)
        return crypto.decrypt(key, row.instruction, context=context).decode()
