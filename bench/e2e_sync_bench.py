"""End to end: the first sync of one customer with 5,000 contacts through Google's
Firestore emulator and the Zisson and Graph simulators (the card, Zisson and the
customer's Outlook contact folder), then a sync with nothing to change.

Prints wall time, outside requests per system and store size, and the ratio of the
no-change sync's requests to the first sync's (a no-change sync should only read).

And what the daemon adds to the outside systems' own time: in the same run, the time
the simulators and the emulator take for the first sync's reads and writes, driven
directly through the connectors (each system's `read` and `apply` timed as the sync
calls them: the same requests, with the connectors' own batching and limits; systems
are read at once, so reads count once, as the slowest). The first sync's wall time
over that is the daemon's overhead ratio (target ≤ 1.5). For the no-change sync, how
much of its wall time went to reading the systems (at once: the slowest one counts).
The simulators run as threads of this process, so their work and the daemon's share one
interpreter: reads take longer here, where all three answer at once, than one at a time.

Per sync, also the longest the event loop went without running a task that asked to
wake every 10 ms (bench/loop.py): while it is held, every other customer's sync and the
API wait. The simulators' threads take their turns at the interpreter too. The syncs
run under the cyclic collector's thresholds the daemon serves with
(daemon/collector.py GC_THRESHOLDS), after the first sync `--quiet-syncs` no-change syncs
(a full collection does not come in every one); `--gc default` keeps CPython's own
thresholds, for comparison: the longest stall of the no-change syncs under each, and
their ratio, is the last line.

    python -m bench.e2e_sync_bench [--contacts 5000] [--quiet-syncs 3] [--gc daemon|default]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

from bench.loop import LoopStalls
from connectors.base import Connector
from daemon import config, logs
from daemon.collector import collector_thresholds
from daemon.domain import Customer, Operation, OpResult, ReadResult
from daemon.store import Store
from daemon.sync import SyncReport, SyncService
from daemon.wiring import open_connectors
from sandbox.up import running


class Timed:
    """A connector whose `read` and `apply` are timed (the rest passes through)."""

    def __init__(self, inner: Connector) -> None:
        self._inner = inner
        self.reading = 0.0
        self.applying = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read(self, customer: Customer) -> ReadResult:
        started = time.perf_counter()
        try:
            return await self._inner.read(customer)
        finally:
            self.reading += time.perf_counter() - started

    async def apply(self, customer: Customer, ops: Sequence[Operation]) -> list[OpResult]:
        started = time.perf_counter()
        try:
            return await self._inner.apply(customer, ops)
        finally:
            self.applying += time.perf_counter() - started


DEFAULT_GC_THRESHOLDS = (700, 10, 10)  # CPython's
# The longest loop stall of 3 no-change syncs under them (`--gc default`; 0.44 and 0.47 s
# in two runs on 2026-12-05, before GC_THRESHOLDS: the lower).
BASELINE_QUIET_STALL = 0.44

Row = tuple[str, SyncReport, dict[str, int], float, float, dict[str, float], float]


async def sync_twice(config_path: Path, quiet_syncs: int) -> list[Row]:
    settings = config.load(config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    rows = []
    try:
        async with AsyncExitStack() as stack:
            opened = await open_connectors(settings, stack, store=store)
            timed = {s: Timed(c) for s, c in opened.items()}
            connectors = cast(dict[str, Connector], timed)
            service = SyncService(settings, store, connectors)
            for label in ("first sync", *["no-change sync"] * quiet_syncs):
                before = {s: getattr(c, "requests", 0) for s, c in opened.items()}
                for t in timed.values():
                    t.reading = t.applying = 0.0
                started = time.perf_counter()
                with LoopStalls() as stalls:
                    report = await service.sync(settings.customers[0], trigger="bench")
                wall = time.perf_counter() - started
                requests = {s: getattr(c, "requests", 0) - before[s] for s, c in opened.items()}
                outside = max(t.reading for t in timed.values()) + sum(
                    t.applying for t in timed.values()
                )
                reading = {s: t.reading for s, t in timed.items()}
                rows.append((label, report, requests, wall, outside, reading, stalls.longest))
    finally:
        store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--quiet-syncs", type=int, default=3, help="no-change syncs after")
    parser.add_argument(
        "--gc",
        choices=("daemon", "default"),
        default="daemon",
        help="the collector's thresholds: the daemon's (GC_THRESHOLDS) or CPython's",
    )
    args = parser.parse_args()
    if args.quiet_syncs < 1:
        parser.error("--quiet-syncs must be at least 1")
    thresholds = collector_thresholds() if args.gc == "daemon" else contextlib.nullcontext()
    logs.configure(format="json", level="warning")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(Path(tmp), seed=5, customers=1, contacts=args.contacts) as box,
    ):
        seeded_zisson = sum(1 for c in box.customers[0].contacts if c.zisson is not None)
        with thresholds:
            used = gc.get_threshold()
            rows = asyncio.run(sync_twice(box.config_path, args.quiet_syncs))
        db = sum(p.stat().st_size for p in Path(tmp).glob("pdsync.db*"))
    print(
        f"customer with {args.contacts:,} contacts on the card, {seeded_zisson:,} already in Zisson"
    )
    systems = sorted(rows[0][2])
    print(
        f"{'run':<16} {'wall s':>7} "
        + " ".join(f"{s + ' req':>13}" for s in systems)
        + f" {'changes':>8} {'loop stall s':>13}"
    )
    for label, report, requests, wall, _, _, stall in rows:
        changes = sum(v for k, v in report.applied.items() if k.endswith(".applied"))
        print(
            f"{label:<16} {wall:>7.2f} "
            + " ".join(f"{requests.get(s, 0):>13}" for s in systems)
            + f" {changes:>8} {stall:>13.2f}   ({report.status})"
        )
    first, quiet = rows[0][2], rows[1][2]
    print(
        f"no-change requests / first-sync requests: {sum(quiet.values())}/{sum(first.values())}"
        f" = {sum(quiet.values()) / max(1, sum(first.values())):.3f}"
    )
    _, _, _, wall, outside, _, _ = rows[0]
    print(
        f"first sync: {wall:.2f} s; the systems' own time for its reads and writes: "
        f"{outside:.2f} s; ratio {wall / max(outside, 1e-9):.2f} (target <= 1.5)"
    )
    _, _, _, quiet_wall, _, reading, _ = rows[1]
    slowest = max(reading, key=reading.__getitem__)
    print(
        f"no-change sync: {quiet_wall:.2f} s, of which reading the systems (at once) "
        f"{reading[slowest]:.2f} s, the slowest being {slowest} ("
        + ", ".join(f"{s} {t:.2f} s" for s, t in sorted(reading.items()))
        + "); the simulators run in this process and share its interpreter"
    )
    quiet_stall = max(row[6] for row in rows[1:])
    baseline = (
        f"; with CPython's {DEFAULT_GC_THRESHOLDS} (--gc default) it was"
        f" {BASELINE_QUIET_STALL:.2f} s: ratio {quiet_stall / BASELINE_QUIET_STALL:.2f}"
        if args.gc == "daemon"
        else ""
    )
    print(
        f"longest loop stall of the {len(rows) - 1} no-change syncs: {quiet_stall:.2f} s"
        f" under collector thresholds {used}{baseline}"
    )
    print(
        f"store on disk: {db / 2**20:.1f} MB; peak RSS: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
