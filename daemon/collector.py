"""The cyclic garbage collector as the daemon and `pdsync sync` run it: thresholds that
keep full collections of a large heap (and the event loop with them) from stalling a
sync, and the daemon's own full collections when no work is in hand."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator

# The cyclic garbage collector's thresholds while the daemon serves. With CPython's
# (700 new container objects a young collection, then 10, 10), a quiet sync of a
# 5,000-contact customer made about four full collections of the whole heap, each 0.1 to
# 0.27 s with the GIL held in whichever thread allocated: the event loop, and so every
# other sync, mailbox turn and API request, waited as long. With 10,000 a young
# collection, a sync's short-lived objects are freed by reference count before a
# collection sees them, few are promoted, and a full collection comes only when
# CPython's own rule asks for one (the objects promoted since the last one outnumber a
# quarter of the old ones): none in ten such syncs, and the longest loop stall 0.09 s.
# Measured with `python -m bench.e2e_sync_bench`, which runs its syncs under them.
GC_THRESHOLDS = (10_000, 10, 10)
# What full collections are left to CPython's rule come seldom: a sync leaves cycles
# behind (some 12,000 objects for 5,000 contacts), which only a full collection frees.
# The daemon makes one itself when no work is in hand (a heap without a sync's data)
# and YOUNG_PER_QUIET_COLLECTION young collections have come since the last (a million
# new objects: a quiet 5,000-contact sync makes some 60); while work is in hand, every
# BUSY_COLLECTION_SECONDS; else every FULL_COLLECTION_SECONDS, if there was work or
# anything was allocated at all. An idle daemon makes one in ten minutes at most.
#
# Not by young collections alone: a daemon kept busy by many small syncs (20 customers
# every 10 s) made none for minutes while its old generation grew by some 600 cyclic
# garbage objects a second (67,000 freed by one full collection after 100 s); its RSS
# rose 2 MB every 15 s until the ten-minute collection. Once a minute while busy bounds
# that at a minute's worth, for one full collection (0.1-0.3 s) a minute.
QUIET_COLLECTION_SECONDS = 30.0
YOUNG_PER_QUIET_COLLECTION = 100
BUSY_COLLECTION_SECONDS = 60.0
FULL_COLLECTION_SECONDS = 600.0


@contextlib.contextmanager
def collector_thresholds() -> Iterator[None]:
    """Run with GC_THRESHOLDS, then restore the process's own (tests serve in-process;
    the CLI runs a sync under them too)."""
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


class CycleCollector:
    """When the daemon makes a full collection itself (see QUIET_COLLECTION_SECONDS):
    `due` is asked every QUIET_COLLECTION_SECONDS with whether work is in hand."""

    def __init__(self, now: float) -> None:
        self.last = now  # the last full collection, CPython's or the daemon's
        self._young, self._full = self._collections()  # as counted then
        self._worked = False  # work was in hand at a look since then

    @staticmethod
    def _collections() -> tuple[int, int]:
        """(young, full) collections so far."""
        stats = gc.get_stats()
        return stats[0]["collections"], stats[-1]["collections"]

    def due(self, now: float, *, busy: bool) -> bool:
        young, full = self._collections()
        if full != self._full:  # CPython made one meanwhile
            self.last, self._young, self._full, self._worked = now, young, full, False
        self._worked = self._worked or busy
        since = young - self._young  # young collections: 10,000 new objects each
        if busy:
            return now - self.last >= BUSY_COLLECTION_SECONDS
        if since >= YOUNG_PER_QUIET_COLLECTION:
            return True
        return (since > 0 or self._worked) and now - self.last >= FULL_COLLECTION_SECONDS

    def collect(self, now: float) -> int:
        found = gc.collect()
        self.last = now
        self._young, self._full = self._collections()
        self._worked = False
        return found


class WorkInHand(set[int]):
    """The work items in hand, and whether any was taken since `busy_since_asked` was
    last asked: many small syncs (a fraction of a second each) are mostly between items
    when looked at every 30 s, and the daemon was then taken for quiet."""

    def __init__(self) -> None:
        super().__init__()
        self._taken = 0
        self._taken_when_asked = 0

    def add(self, item: int) -> None:
        self._taken += 1
        super().add(item)

    @property
    def taken(self) -> int:
        """How many items were taken in all."""
        return self._taken

    def busy_since_asked(self) -> bool:
        taken, self._taken_when_asked = self._taken_when_asked != self._taken, self._taken
        return bool(self) or taken


async def collect_cycles(stop: asyncio.Event, busy: Callable[[], bool]) -> None:
    collector = CycleCollector(time.monotonic())
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), QUIET_COLLECTION_SECONDS)
        if not stop.is_set() and collector.due(time.monotonic(), busy=busy()):
            collector.collect(time.monotonic())
