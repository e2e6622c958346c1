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
- How busy the mailbox was during the cycle (the simulator's per-request timeline): the
  mean number of requests in flight and the share of the time at 0 to 4, and the Graph
  calls by endpoint; together they tell a mailbox-bound cycle from one held up
  elsewhere (the daemons' CPU, the store, the other systems).
- CPU per customer sync: the daemons' and their worker processes' utime + stime (/proc)
  over the sync runs.

The daemons are stopped, and the database dropped, however the bench ends: a timeout,
Ctrl-C, SIGTERM or SIGHUP (`timeout`, a closed terminal) unwind it; and each daemon is
told to stop by the kernel should the bench itself be killed outright (SIGKILL; its
`pdsync_fleet_*` database then stays behind, to be dropped by hand).

With `--year`, also the store after a simulated year of this fleet's history with
retention on, and the dashboard and `pdsync log` answering on it (bench/history_bench.py,
on a fresh store of the same backend: 15-40 minutes more at 300 customers); without it
that row is printed as "not measured".

    python -m bench.fleet_bench [--customers 300] [--contacts 60] [--instances 3]
        [--interval 60] [--workers 2] [--latency-ms 20] [--time-scale 1] [--timeout 1800] [--year]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
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
METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}  # the simulator's per-endpoint counters
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# How long a stopping daemon may drain before it is killed (its syncs may be waiting
# for the mailbox's budget, minutes at time scale 1).
DRAIN_SECONDS = 30.0


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
    box: Sandbox,
    store_url: str,
    path: Path,
    *,
    interval: int,
    time_scale: float,
    workers: int,
    worker_process: bool = True,
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
    text += f"worker_process = {str(worker_process).lower()}\n"
    path.write_text(text, encoding="utf-8")
    return path


def cpu_seconds(pid: int) -> float:
    """The daemon's CPU time with its worker processes' (daemon/worker.py): the ended
    ones' (cutime + cstime) and the live ones'."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    try:
        live = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        live = []
    for child in live:
        with contextlib.suppress(OSError):
            own += cpu_seconds(int(child))
    return own


def first_cycle(store: Store, customers: set[str]) -> tuple[float, int, float] | None:
    """(span in seconds, sync runs, start as a Unix time) once every customer has a
    finished sync; else None."""
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
    began = min(s for s, _ in first.values())
    return max(e for _, e in first.values()) - began, runs, began


def history_rows(store_url: str, args: argparse.Namespace) -> list[str]:
    """With `--year`: a simulated year of this fleet's history with retention on, in a
    fresh store beside the fleet's (bench/history_bench.py), and the dashboard's and
    `pdsync log`'s latency on it."""
    if not args.year:
        return []
    from bench.history_bench import Fleet
    from bench.history_bench import history_rows as year_rows

    return year_rows(store_url, fleet=Fleet(customers=args.customers, contacts=args.contacts))


class Interrupted(BaseException):
    """SIGTERM, SIGHUP or SIGINT: unwinds the bench, so the daemons and the database go
    too (`timeout`, a closed terminal and Ctrl-C alike)."""


def _interrupt(signum: int, frame: object) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
    raise Interrupted(signal.Signals(signum).name)


# Looked up before any fork: in the child, between fork and exec, only the call is safe.
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the signal handlers are all there is
    _prctl = None


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGTERM when the bench dies, even of SIGKILL."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def fleet(config: Path, instances: int, logs_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`instances` daemons on `config`; on the way out (however it is left) each gets
    SIGTERM, and SIGKILL when it has not stopped within DRAIN_SECONDS."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(instances):
            with open(logs_dir / f"daemon-{i}.log", "wb") as log:
                daemons.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "daemon", "run", "--config", str(config)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=base,
                        preexec_fn=_die_with_parent,
                    )
                )
        yield daemons
    finally:
        for d in daemons:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_SECONDS
        for d in daemons:
            try:
                d.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()


def log_tail(logs_dir: Path, instances: int) -> None:
    for i in range(instances):
        tail = (logs_dir / f"daemon-{i}.log").read_text(errors="replace").splitlines()[-5:]
        print(f"daemon {i}:", *tail, sep="\n  ", file=sys.stderr)


def mailbox_use(
    timeline: list[tuple[tuple[str, str], float, float]], start: float, end: float
) -> tuple[float, dict[int, float]]:
    """Over [start, end] (monotonic): the mean requests in flight for the busiest mailbox,
    and the share of the time it had 0, 1, ... requests in flight."""
    by_key: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for key, admitted, answered in timeline:
        if answered <= start or admitted >= end:
            continue
        edges = by_key.setdefault(key, [])
        edges.append((max(admitted, start), +1))
        edges.append((min(answered, end), -1))
    if not by_key or end <= start:
        return 0.0, {}
    edges = max(by_key.values(), key=len)
    edges.sort()
    levels: dict[int, float] = {}
    level, at, busy = 0, start, 0.0
    for moment, change in edges:
        levels[level] = levels.get(level, 0.0) + moment - at
        busy += level * (moment - at)
        level, at = level + change, moment
    levels[level] = levels.get(level, 0.0) + end - at
    span = end - start
    return busy / span, {k: v / span for k, v in sorted(levels.items()) if v > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--contacts", type=int, default=60)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2, help="work items per instance at once")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="[daemon] worker_process = false: each daemon syncs in its own process",
    )
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--year", action="store_true", help="also a simulated year of history (history_bench)"
    )
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupt)
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
            worker_process=not args.in_process,
        )
        master_key = load_config(config).store.master_key_bytes()
        Store.open(store_url, master_key=master_key).close()  # migrated before the race
        box.graph.set_time_scale(args.time_scale)
        box.graph.set_faults(latency_ms=args.latency_ms)
        box.graph.reset_counters()
        customers = {c.id for c in box.customers}
        wall_minus_monotonic = time.time() - time.monotonic()
        with fleet(config, args.instances, Path(tmp)) as daemons:
            store = Store.open(store_url, master_key=master_key)
            try:
                deadline = time.monotonic() + args.timeout
                cycle = None
                while cycle is None:
                    if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
                        log_tail(Path(tmp), args.instances)
                        raise SystemExit("the fleet did not finish its first cycle")
                    time.sleep(1.0)
                    cycle = first_cycle(store, customers)
                counters = box.graph.counters
                timeline = box.graph.timeline()
                cpu = sum(cpu_seconds(d.pid) for d in daemons)
            finally:
                store.close()
        codes = [d.returncode for d in daemons]
        extra = history_rows(store_url, args)
    span, runs, began = cycle
    busy, levels = mailbox_use(
        timeline, began - wall_minus_monotonic, began + span - wall_minus_monotonic
    )
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
    print(f"{'mean in flight during the cycle':<44} {busy:>9.2f}")
    print(
        f"{'share of the cycle at 0/1/2/3/4 in flight':<44} "
        + " ".join(f"{levels.get(k, 0.0):.0%}" for k in range(SLOTS + 1))
    )
    endpoints = sorted(
        ((n, c) for n, c in counters.items() if n.split(" ", 1)[0] in METHODS),
        key=lambda nc: -nc[1],
    )
    print(
        f"{'Graph calls by endpoint (batch items too)':<44} "
        + ", ".join(f"{n} {c}" for n, c in endpoints[:6])
    )
    print(f"{'sync runs':<44} {runs:>9}")
    print(f"{'CPU per customer sync (all daemons)':<44} {1000 * cpu / max(runs, 1):>9.0f} ms")
    print(f"{'daemons exit codes':<44} {codes!s:>9}")
    for row in extra or [
        "store size after a simulated year, dashboard/log latency: not measured (--year)"
    ]:
        print(row)


if __name__ == "__main__":
    main()
