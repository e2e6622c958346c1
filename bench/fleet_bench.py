"""A fleet on one service mailbox: several `pdsync run` instances on one PostgreSQL store,
every customer's Outlook contact folder in the same mailbox (the sandbox's layout).

The sandbox is seeded with `--customers` × `--contacts`, the Graph simulator given a
service time per request (`--latency-ms`, spent holding one of the mailbox's four
slots, as Exchange does) and its 10-minute budget window scaled by `--time-scale`
(the daemons' `budget_window_seconds` scaled alike). Then `--instances` daemons start
on a fresh PostgreSQL database and carry out the first full cycle: one sync of every
customer (the leader's schedules spread them over the interval; retention runs and the
erasure tick go on meanwhile, as they would). The bound below also counts the
schedules' spread: a cycle cannot end before the last customer's first sync is due.

Measured, for that cycle (from the first sync's start to the last one's end, as the
store recorded them):
- wall time against the bound the mailbox sets: every request the simulator admitted
  holds a slot for the service time, so with 4 slots the cycle takes at least
  admitted × latency / 4; and the budget lets `request_budget` requests through per
  window, so at least floor((admitted − 1) / budget) windows. Target: ≤ 1.2× the larger.
- 429s the simulator sent (target 0) and the most requests in flight for the mailbox at
  once across all instances (the simulator's counters; target ≤ 4).
- CPU per customer sync: the daemons' utime + stime (/proc) over the sync runs.

Not measured here: the store's size after a simulated year with retention on, and the
dashboard's and `pdsync log`'s latency on it. They belong to history retention (another
part of issue 15); `history_rows` is the hook where that measurement goes, and its row
is printed as "not measured".

    python -m bench.fleet_bench [--customers 300] [--contacts 60] [--instances 3]
        [--interval 60] [--workers 2] [--latency-ms 20] [--time-scale 1] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from daemon.affinity import schedule_offset
from daemon.config import load as load_config
from daemon.store import Store
from sandbox.up import Sandbox, running

PG_ADMIN_URL = os.environ.get(
    "PDSYNC_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SLOTS = 4  # Graph: concurrent requests per app and mailbox
BUDGET = 10_000  # Graph: requests per app and mailbox per 10 minutes
WINDOW = 600.0


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database for the store, dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"pdsync_fleet_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fleet_config(
    box: Sandbox, store_url: str, path: Path, *, interval: int, time_scale: float, workers: int
) -> Path:
    """The sandbox's config on PostgreSQL, the sync interval, and the Graph budget's
    window as the simulator scales it."""
    text = box.config_path.read_text(encoding="utf-8")
    text = re.sub(r'^url = ".*"$', f'url = "{store_url}"', text, count=1, flags=re.M)
    text = text.replace("interval_seconds = 30", f"interval_seconds = {interval}")
    text = text.replace(
        "budget_window_seconds = 600.0", f"budget_window_seconds = {WINDOW / time_scale}"
    )
    text += f"\n[daemon]\nlease_seconds = 30\nleader_poll_seconds = 1\nworkers = {workers}\n"
    path.write_text(text, encoding="utf-8")
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_cycle(store: Store, customers: set[str]) -> tuple[float, int] | None:
    """(span in seconds, sync runs) once every customer has a finished sync; else None."""
    first: dict[str, tuple[float, float]] = {}
    runs = 0
    for run in store.list_runs(limit=100_000):
        if run.kind != "sync" or run.finished_at is None or run.customer_id not in customers:
            continue
        runs += 1
        span = (run.started_at.timestamp(), run.finished_at.timestamp())
        if run.customer_id not in first or span[0] < first[run.customer_id][0]:
            first[run.customer_id] = span
    if set(first) != customers:
        return None
    return max(e for _, e in first.values()) - min(s for s, _ in first.values()), runs


def history_rows(store_url: str) -> list[str]:
    """Hook for the history-retention measurement (store size after a simulated year,
    dashboard and `pdsync log` latency on it): not part of this change."""
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--contacts", type=int, default=60)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2, help="work items per instance at once")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(
            Path(tmp) / "sandbox", seed=9, customers=args.customers, contacts=args.contacts
        ) as box,
        fresh_database() as store_url,
    ):
        config = fleet_config(
            box,
            store_url,
            Path(tmp) / "fleet.toml",
            interval=args.interval,
            time_scale=args.time_scale,
            workers=args.workers,
        )
        master_key = load_config(config).store.master_key_bytes()
        Store.open(store_url, master_key=master_key).close()  # migrated before the race
        box.graph.set_time_scale(args.time_scale)
        box.graph.set_faults(latency_ms=args.latency_ms)
        box.graph.reset_counters()
        base = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
        logs = [open(Path(tmp) / f"daemon-{i}.log", "w") for i in range(args.instances)]  # noqa: SIM115
        daemons = [
            subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=base,
            )
            for log in logs
        ]
        customers = {c.id for c in box.customers}
        store = Store.open(store_url, master_key=master_key)
        try:
            deadline = time.monotonic() + args.timeout
            cycle = None
            while cycle is None:
                if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
                    for i in range(args.instances):
                        tail = (Path(tmp) / f"daemon-{i}.log").read_text().splitlines()[-5:]
                        print(f"daemon {i}:", *tail, sep="\n  ", file=sys.stderr)
                    raise SystemExit("the fleet did not finish its first cycle")
                time.sleep(1.0)
                cycle = first_cycle(store, customers)
            counters = box.graph.counters
            cpu = sum(cpu_seconds(d.pid) for d in daemons)
            span, runs = cycle
        finally:
            store.close()
            for d in daemons:
                if d.poll() is None:
                    d.send_signal(signal.SIGTERM)
            codes = [d.wait(timeout=120) for d in daemons]
            for log in logs:
                log.close()
        extra = history_rows(store_url)
    admitted = counters.get("admitted", 0)
    slot_bound = admitted * args.latency_ms / 1000 / SLOTS
    budget_bound = math.floor(max(0, admitted - 1) / BUDGET) * WINDOW / args.time_scale
    # The schedules start the last customer's first sync this long after the first's.
    spread = max(schedule_offset(c.id, args.interval, args.customers) for c in box.customers)
    spread -= min(schedule_offset(c.id, args.interval, args.customers) for c in box.customers)
    bound = max(slot_bound, budget_bound, spread)
    print(
        f"{args.instances} instances, {args.customers} customers × {args.contacts} contacts, "
        f"one service mailbox; Graph service time {args.latency_ms:g} ms, "
        f"time scale {args.time_scale:g}"
    )
    print(f"{'first full cycle':<44} {span:>9.1f} s")
    print(f"{'requests the mailbox admitted':<44} {admitted:>9}")
    print(
        f"{'bound set by the mailbox':<44} {bound:>9.1f} s "
        f"(slots {slot_bound:.1f} s, budget {budget_bound:.1f} s, schedule spread {spread:.1f} s)"
    )
    print(f"{'cycle / bound (target <= 1.2)':<44} {span / max(bound, 1e-9):>9.2f}")
    print(f"{'429s (target 0)':<44} {counters.get('429', 0):>9}")
    print(f"{'most in flight for the mailbox (<= 4)':<44} {counters.get('max_in_flight', 0):>9}")
    print(f"{'sync runs':<44} {runs:>9}")
    print(f"{'CPU per customer sync (all daemons)':<44} {1000 * cpu / max(runs, 1):>9.0f} ms")
    print(f"{'daemons exit codes':<44} {codes!s:>9}")
    for row in extra or ["store size after a simulated year, dashboard/log latency: not measured"]:
        print(row)


if __name__ == "__main__":
    main()
