"""The operation journal: each change to an outside system, begun and finished.

An operation id is deterministic for the same intended change (domain.Operation.make_id),
so after a crash the journal tells what was begun but never confirmed; the executor
then asks the system (or retries with the same idempotency key) instead of applying a
change twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.domain import Operation
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import NotFound
from daemon.store.rows import JournalIntent, JournalRow, JournalStatus
from daemon.store.schema import op_journal


def _journal_row(row: sa.Row[Any]) -> JournalRow:
    return JournalRow(
        op_id=row.op_id,
        run_id=row.run_id,
        customer_id=row.customer_id,
        link_id=row.link_id,
        system=row.system,
        kind=row.kind,
        status=JournalStatus(row.status),
        external_id=row.external_id,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


class JournalMixin(StoreBase):
    def journal_begin(
        self, op_id: str, *, run_id: str, customer_id: str, link_id: str, system: str, kind: str
    ) -> JournalRow:
        """Record that the operation is about to be applied; returns its journal entry.

        Idempotent. A new operation is entered as pending. One already done stays done
        (check the returned status: do not apply it again). One pending or failed is
        (again) pending, now under `run_id`.
        """
        stmt = self._upsert(op_journal).values(
            op_id=op_id,
            run_id=run_id,
            customer_id=customer_id,
            link_id=link_id,
            system=system,
            kind=kind,
            status=JournalStatus.PENDING.value,
            created_at=utcnow(),
        )
        done = op_journal.c.status == JournalStatus.DONE.value
        with self._write() as conn:
            row = conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[op_journal.c.op_id],
                    set_={
                        "run_id": sa.case((done, op_journal.c.run_id), else_=stmt.excluded.run_id),
                        "status": sa.case((done, op_journal.c.status), else_=stmt.excluded.status),
                        "finished_at": sa.case((done, op_journal.c.finished_at), else_=None),
                    },
                ).returning(*op_journal.c)
            ).one()
        return _journal_row(row)

    def journal_attempt(
        self, intent: str, *, run_id: str, customer_id: str, link_id: str, system: str, kind: str
    ) -> str:
        """Begin an attempt at the intended change `intent` (a plan's op id) and return
        its key: the idempotency key the system is given, and the journal's op id.

        An attempt begun and never finished (a crash, a stop) is retried under its own
        key, so a system that did apply it answers with what it did and nothing is
        applied twice. Any other attempt gets a new key: the same content written again
        later (a title changed back, a contact restored, a delete retried after a
        conflict) is a new write, never a replay of the old answer.
        """
        with self._write() as conn:
            for attempt in range(10_000):
                key = intent if attempt == 0 else Operation.make_id(intent, str(attempt))
                status = conn.scalar(
                    sa.select(op_journal.c.status).where(op_journal.c.op_id == key)
                )
                if status is None or status == JournalStatus.PENDING.value:
                    break
            else:  # pragma: no cover - ten thousand finished attempts at one change
                raise RuntimeError("too many attempts at one change")
            conn.execute(
                self._upsert(op_journal)
                .values(
                    op_id=key,
                    run_id=run_id,
                    customer_id=customer_id,
                    link_id=link_id,
                    system=system,
                    kind=kind,
                    status=JournalStatus.PENDING.value,
                    created_at=utcnow(),
                )
                .on_conflict_do_update(index_elements=[op_journal.c.op_id], set_={"run_id": run_id})
            )
        return key

    def journal_attempts(
        self, intents: Sequence[JournalIntent], *, run_id: str, customer_id: str
    ) -> list[str]:
        """`journal_attempt` for each of `intents`, in one transaction; their keys in order.

        A sync journals a chunk of operations this way before handing them to a system.
        """
        if not intents:
            return []
        now = utcnow()
        with self._write() as conn:
            status: dict[str, str] = {}
            names = sorted({i.intent for i in intents})
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                for row in conn.execute(
                    sa.select(op_journal.c.op_id, op_journal.c.status).where(
                        op_journal.c.op_id.in_(chunk)
                    )
                ):
                    status[row.op_id] = row.status
            keys = []
            for intent in intents:
                if status.get(intent.intent) in (None, JournalStatus.PENDING.value):
                    keys.append(intent.intent)
                    continue
                for attempt in range(1, 10_000):  # finished before: a new key, as above
                    key = Operation.make_id(intent.intent, str(attempt))
                    found = conn.scalar(
                        sa.select(op_journal.c.status).where(op_journal.c.op_id == key)
                    )
                    if found is None or found == JournalStatus.PENDING.value:
                        break
                else:  # pragma: no cover - ten thousand finished attempts at one change
                    raise RuntimeError("too many attempts at one change")
                keys.append(key)
            stmt = self._upsert(op_journal)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[op_journal.c.op_id], set_={"run_id": stmt.excluded.run_id}
                ),
                [
                    {
                        "op_id": key,
                        "run_id": run_id,
                        "customer_id": customer_id,
                        "link_id": intent.link_id,
                        "system": intent.system,
                        "kind": intent.kind,
                        "status": JournalStatus.PENDING.value,
                        "created_at": now,
                    }
                    for key, intent in zip(keys, intents, strict=True)
                ],
            )
        return keys

    def journal_finish(
        self, op_id: str, status: JournalStatus | str, external_id: str | None = None
    ) -> None:
        """Record the outcome (done or failed) and, for a create, the new record's id.

        An external id recorded earlier is kept when none is given. Raises NotFound
        when the operation was never begun.
        """
        final = JournalStatus(status)
        if final is JournalStatus.PENDING:
            raise ValueError("journal_finish needs 'done' or 'failed'")
        with self._write() as conn:
            updated = conn.execute(
                sa.update(op_journal)
                .where(op_journal.c.op_id == op_id)
                .values(
                    status=final.value,
                    finished_at=utcnow(),
                    external_id=sa.func.coalesce(
                        sa.literal(external_id, op_journal.c.external_id.type),
                        op_journal.c.external_id,
                    ),
                )
            ).rowcount
        if not updated:
            raise NotFound(f"no journal entry for operation {op_id}")

    def journal_get(self, op_id: str) -> JournalRow | None:
        with self._read() as conn:
            row = conn.execute(sa.select(op_journal).where(op_journal.c.op_id == op_id)).first()
        return None if row is None else _journal_row(row)

    def pending_ops(self, customer_id: str) -> list[JournalRow]:
        """Operations begun but never finished (a crash in between), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(op_journal)
                .where(
                    op_journal.c.customer_id == customer_id,
                    op_journal.c.status == JournalStatus.PENDING.value,
                )
                .order_by(op_journal.c.created_at, op_journal.c.op_id)
            ).all()
        return [_journal_row(row) for row in rows]


def finish_entries(
    conn: Connection, entries: Sequence[tuple[str, JournalStatus, str | None]]
) -> None:
    """`journal_finish` for many (op_id, status, external_id) on the caller's transaction
    (a sync records a chunk's outcomes together); entries never begun are ignored."""
    if not entries:
        return
    conn.execute(
        sa.update(op_journal)
        .where(op_journal.c.op_id == sa.bindparam("b_op_id"))
        .values(
            status=sa.bindparam("b_status"),
            finished_at=sa.bindparam("b_at"),
            external_id=sa.func.coalesce(
                sa.bindparam("b_external_id", type_=op_journal.c.external_id.type),
                op_journal.c.external_id,
            ),
        ),
        [
            {
                "b_op_id": op_id,
                "b_status": JournalStatus(status).value,
                "b_at": utcnow(),
                "b_external_id": external_id,
            }
            for op_id, status, external_id in entries
        ],
    )
