"""The ledger's rows: entries appended under a lock with gapless seq, and checkpoints.

Only storage: hashing the leaf happens here because seq and ts are assigned inside
the append's transaction, but building trees, signing and checking live in
daemon/ledger. Nothing here updates or deletes a ledger row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from daemon.ledger import canonical
from daemon.ledger.entry import Checkpoint, LedgerEntry, entries_from
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.schema import ledger_checkpoints, ledger_entries

# pg_advisory_xact_lock key that serialises appends across instances ("pdsync" + "L").
# SQLite needs none: a write transaction holds the database's write lock from BEGIN.
_LEDGER_LOCK_KEY = 0x706473796E63004C


def _entry(row: sa.Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        seq=row.seq,
        ts=row.ts,
        kind=row.kind,
        customer_id=row.customer_id,
        payload_json=row.payload,
        leaf_hash=row.leaf_hash,
    )


def _checkpoint(row: sa.Row[Any]) -> Checkpoint:
    return Checkpoint(
        size=row.size, root=row.root, ts=row.ts, key_id=row.key_id, signature=row.signature
    )


class LedgerMixin(StoreBase):
    def append_ledger(
        self, kind: str, customer_id: str | None, payload: Mapping[str, Any]
    ) -> LedgerEntry:
        """Append an entry at the next seq (0, 1, 2, ... with no gaps) and return it.

        Appends from any number of threads, processes and instances are serialised, so
        seq grows by one and ts never goes back. `payload` is stored as canonical JSON
        (TypeError for values without one, such as floats). The caller vouches that
        nothing in it is personal data: use daemon.ledger.Ledger.record, which checks.
        """
        return self.append_ledger_many([(kind, customer_id, payload)])[0]

    def append_ledger_many(
        self, entries: Sequence[tuple[str, str | None, Mapping[str, Any]]]
    ) -> list[LedgerEntry]:
        """Append `entries` (kind, customer id, payload) at consecutive seqs, in one
        transaction: all of them or none. As `append_ledger` otherwise."""
        rows = [(kind, customer, canonical.dumps(payload)) for kind, customer, payload in entries]
        if not all(payload.startswith("{") for _, _, payload in rows):
            raise TypeError("a ledger payload must be a JSON object")
        if not rows:
            return []
        with self._write() as conn:
            if self._dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LEDGER_LOCK_KEY)))
            last = conn.execute(
                sa.select(ledger_entries.c.seq, ledger_entries.c.ts)
                .order_by(ledger_entries.c.seq.desc())
                .limit(1)
            ).first()
            first = 0 if last is None else int(last.seq) + 1
            # Never earlier than the entry before, whatever another instance's clock says.
            ts = utcnow() if last is None else max(utcnow(), last.ts)
            appended = entries_from(first, ts, rows)
            conn.execute(
                sa.insert(ledger_entries),
                [
                    {
                        "seq": e.seq,
                        "ts": e.ts,
                        "kind": e.kind,
                        "customer_id": e.customer_id,
                        "payload": e.payload_json,
                        "leaf_hash": e.leaf_hash,
                    }
                    for e in appended
                ],
            )
        return appended

    def ledger_entries(self, start: int = 0, stop: int | None = None) -> list[LedgerEntry]:
        """The stored entries with start <= seq < stop, in seq order, exactly as stored."""
        query = (
            sa.select(ledger_entries)
            .where(ledger_entries.c.seq >= start)
            .order_by(ledger_entries.c.seq)
        )
        if stop is not None:
            query = query.where(ledger_entries.c.seq < stop)
        with self._read() as conn:
            return [_entry(row) for row in conn.execute(query)]

    def ledger_size(self) -> int:
        """The seq the next entry gets: the highest stored seq + 1 (0 when empty)."""
        with self._read() as conn:
            top = conn.scalar(sa.select(sa.func.max(ledger_entries.c.seq)))
        return 0 if top is None else int(top) + 1

    def save_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store a checkpoint; returns the stored one for its size.

        One checkpoint per size: when another instance stored one for the same size
        first, that one is kept and returned (it has the same root when all is well).
        """
        with self._write() as conn:
            conn.execute(
                self._upsert(ledger_checkpoints)
                .values(
                    size=checkpoint.size,
                    root=checkpoint.root,
                    ts=checkpoint.ts,
                    key_id=checkpoint.key_id,
                    signature=checkpoint.signature,
                )
                .on_conflict_do_nothing(index_elements=[ledger_checkpoints.c.size])
            )
            row = conn.execute(
                sa.select(ledger_checkpoints).where(ledger_checkpoints.c.size == checkpoint.size)
            ).one()
        return _checkpoint(row)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint of the largest size, if any."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(ledger_checkpoints).order_by(ledger_checkpoints.c.size.desc()).limit(1)
            ).first()
        return None if row is None else _checkpoint(row)

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, smallest size first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(ledger_checkpoints).order_by(ledger_checkpoints.c.size)
            ).all()
        return [_checkpoint(row) for row in rows]
