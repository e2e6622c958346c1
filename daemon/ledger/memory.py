"""MemoryLedgerStore: the ledger's part of the store, in memory, for tests and dry runs.

Behaves like daemon.store.Store's ledger methods (gapless seq, one checkpoint per
size, rows exactly as given) and keeps `rows` open to tampering, as a test double.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.ledger import canonical
from daemon.ledger.entry import Checkpoint, LedgerEntry, entries_from


class MemoryLedgerStore:
    """A LedgerStore in a list and a dict; thread-safe."""

    def __init__(self) -> None:
        self.rows: list[LedgerEntry] = []
        self.saved: dict[int, Checkpoint] = {}
        self._lock = threading.Lock()

    def append_ledger(
        self, kind: str, customer_id: str | None, payload: Mapping[str, Any]
    ) -> LedgerEntry:
        return self.append_ledger_many([(kind, customer_id, payload)])[0]

    def append_ledger_many(
        self, entries: Sequence[tuple[str, str | None, Mapping[str, Any]]]
    ) -> list[LedgerEntry]:
        rows = [(kind, customer, canonical.dumps(payload)) for kind, customer, payload in entries]
        with self._lock:
            last = self.rows[-1] if self.rows else None
            first = 0 if last is None else last.seq + 1
            ts = datetime.now(UTC) if last is None else max(datetime.now(UTC), last.ts)
            appended = entries_from(first, ts, rows)
            self.rows += appended
        return appended

    def ledger_entries(self, start: int = 0, stop: int | None = None) -> list[LedgerEntry]:
        with self._lock:
            rows = self.rows if _in_order(self.rows) else sorted(self.rows, key=lambda r: r.seq)
            return [r for r in rows if r.seq >= start and (stop is None or r.seq < stop)]

    def ledger_size(self) -> int:
        with self._lock:
            return max((row.seq for row in self.rows), default=-1) + 1

    def save_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        with self._lock:
            return self.saved.setdefault(checkpoint.size, checkpoint)

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self.saved[max(self.saved)] if self.saved else None

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            return [self.saved[size] for size in sorted(self.saved)]


def _in_order(rows: list[LedgerEntry]) -> bool:
    return all(a.seq < b.seq for a, b in itertools.pairwise(rows))
