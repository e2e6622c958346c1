"""The idle daemon's CPU and memory, and its admin API's latency under 50 concurrent clients.

`pdsync run` as a separate process with 20 customers against the sandbox (Firestore
emulator, Zisson and Graph simulators, the SQLite store, or with `--store postgresql` a
fresh PostgreSQL database made through `--pg-admin-url` and dropped afterwards), its
sync interval set to 300 s.

Idle daemon. The daemon starts and carries out its first work items: a sync and a
retention run per customer (in its worker process, daemon/worker.py), the first deadline
and ledger-checkpoint ticks. Once all of them are finished and the worker process has
ended (`--worker-idle-seconds` after its last item), nothing is measured from outside
for `--idle-seconds` (no sync falls due in that time; the erasure tick, every 60 s by
default, still looks for open requests). CPU is the daemon's utime + stime delta from
/proc/PID/stat over the wall time, with its ended workers' (cutime + cstime), as a share
of one core. Memory: the daemon's own peak since it started (VmHWM), and the RSS of the
daemon with any live worker at the end of the idle phase; the target holds for both.
Each worker's peak while it ran is shown too. The start-up and first-sync phase is shown
for contrast. Per thread (/proc/PID/task/*/schedstat: exact
CPU time and wake-ups), the event loop is told apart from the thread pools where the
store calls run. The idle share is then set against what the daemon's own polling of
the store costs: the same store calls (a claim per worker per fallback poll, a
heartbeat per few leader polls, and on SQLite a look at its commit counter per second)
timed in this process after the daemon has stopped.

Admin API. The same daemon serves the API on a free loopback port; an auditor token is
made with `pdsync tokens create` beforehand. `--extra-runs` runs (copies of the first
syncs' summaries, trigger "bench") are added to the store, then `--clients` concurrent
clients (one keep-alive connection each) make `--requests` requests each to GET
/api/v1/runs (the API's default page: 50 runs, newest first), after one untimed warm-up
request each. The clients write their requests and read the answers by hand
(RawConnection), as the bench runs on the daemon's machine and an httpx.AsyncClient
costs three times the daemon's CPU per request; `--api-client httpx` uses httpx
instead, for comparison. Latency is per request as the client sees it (request sent to
body read); every request goes through token authentication, the run listing and an
audit-log write. Errors (anything but 200 with a full page) must be 0.

The API line ends with the ratio to the figure of issue 15 (API_BASELINE_RPS req/s,
p99 1.09 s, before credential caching and batched audit writes) and the targets there
(>= 500 req/s, p99 < 200 ms); the idle line with the target of < 0.5 % of a core and
120 MB.

At the end the daemon gets SIGTERM and must exit 0; nothing may be left running.

    python -m bench.service_bench [--customers 20] [--contacts 5] [--idle-seconds 60]
        [--clients 50] [--requests 40] [--extra-runs 200] [--sync-interval 300]
        [--api-client raw|httpx]
        [--store sqlite|postgresql] [--pg-admin-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from daemon import config, logs
from daemon.config import Settings
from daemon.service import IDLE_HEARTBEAT_POLLS
from daemon.store import Store
from daemon.store.work import Leadership, _CommitProbe
from daemon.workloop import IDLE_POLL_SECONDS, IDLE_PROBE_SQLITE_SECONDS
from sandbox.up import running

CLK_TCK = os.sysconf("SC_CLK_TCK")
FIRST_SYNC_TIMEOUT = 150.0  # seconds for start-up and every first work item
STOP_TIMEOUT = 60.0
TOKEN_NAME = "bench-auditor"
API_BASELINE_RPS = 69.0  # issue 15, measured before the API stopped waiting on writes


# -- the daemon process, seen through /proc --------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads, live or ended), and of its
    children that ended (its worker processes: cutime + cstime), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3, "state"
    return sum(int(f) for f in fields[11:15]) / CLK_TCK  # fields 14 to 17


def children(pid: int) -> list[int]:
    """The daemon's live child processes (its worker)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_kb(pid: int, key: str) -> int:
    """`key` of /proc/PID/status summed over the daemon and its live children."""
    total = 0
    for each in (pid, *children(pid)):
        with suppress(OSError, KeyError):
            total += status_kb(each, key)
    return total


def thread_sched(pid: int) -> dict[int, tuple[int, int]]:
    """Per live thread, from /proc/PID/task/TID/schedstat: (ns on the CPU, times run),
    i.e. exact CPU time and a count of wake-ups, where stat only counts 10 ms ticks."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, _, slices = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # ended meanwhile
        found[int(task.name)] = (int(on_cpu), int(slices))
    return found


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


@dataclass(frozen=True, kw_only=True)
class Sample:
    wall: float  # time.monotonic()
    cpu: float
    threads: dict[int, tuple[int, int]]  # thread_sched

    @classmethod
    def of(cls, pid: int) -> Sample:
        return cls(wall=time.monotonic(), cpu=cpu_seconds(pid), threads=thread_sched(pid))


@dataclass(frozen=True, kw_only=True)
class Threads:
    """Between two samples, for the threads alive at the second: the main thread (the
    event loop) and the others (asyncio.to_thread's and the API's thread pools, where the
    store calls run; gRPC's own threads)."""

    loop_cpu: float
    loop_runs: int
    other_cpu: float
    other_runs: int
    others: int  # how many
    busiest: float  # CPU seconds of the busiest other thread

    @classmethod
    def between(cls, pid: int, a: Sample, b: Sample) -> Threads:
        delta = {}
        for tid, (ns, runs) in b.threads.items():
            ns_before, runs_before = a.threads.get(tid, (0, 0))  # a new thread: all of it
            delta[tid] = (ns - ns_before, runs - runs_before)
        loop = delta.pop(pid, (0, 0))
        return cls(
            loop_cpu=loop[0] / 1e9,
            loop_runs=loop[1],
            other_cpu=sum(ns for ns, _ in delta.values()) / 1e9,
            other_runs=sum(runs for _, runs in delta.values()),
            others=len(delta),
            busiest=max((ns for ns, _ in delta.values()), default=0) / 1e9,
        )


@dataclass(frozen=True, kw_only=True)
class Phase:
    label: str
    wall: float
    cpu: float
    threads: Threads
    hwm_mb: float  # the daemon process's own peak, since it started
    rss_mb: float  # the daemon's and its live worker's
    anon_mb: float  # of rss_mb: the process's own pages (heap, stacks)
    file_mb: float  # of rss_mb: mapped files (shared libraries, code), shareable
    thread_count: int
    workers: int  # worker processes alive at the end of the phase
    note: str = ""

    @classmethod
    def between(cls, label: str, pid: int, a: Sample, b: Sample, note: str = "") -> Phase:
        return cls(
            label=label,
            wall=b.wall - a.wall,
            cpu=b.cpu - a.cpu,
            threads=Threads.between(pid, a, b),
            hwm_mb=status_kb(pid, "VmHWM") / 1024,
            rss_mb=tree_kb(pid, "VmRSS") / 1024,
            anon_mb=tree_kb(pid, "RssAnon") / 1024,
            file_mb=tree_kb(pid, "RssFile") / 1024,
            thread_count=status_kb(pid, "Threads"),
            workers=len(children(pid)),
            note=note,
        )

    @property
    def share(self) -> float:
        return 100 * self.cpu / self.wall


# -- set-up ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pdsync_command() -> list[str]:
    """`pdsync`, the console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "pdsync"
    found = str(script) if script.exists() else shutil.which("pdsync")
    return [found] if found else [sys.executable, "-m", "daemon"]


def write_config(
    path: Path,
    *,
    interval: int,
    port: int,
    store_url: str | None = None,
    worker_idle_seconds: float | None = None,
) -> Settings:
    """The sandbox's config with the sync interval and `[api] listen` set (and the
    store's URL, and `[daemon] worker_idle_seconds`, when given)."""
    text, replaced = re.subn(
        r"(?m)^(\[sync\]\ninterval_seconds = )\d+$", rf"\g<1>{interval}", path.read_text()
    )
    if store_url is not None:
        text, urls = re.subn(
            r"(?m)^(\[store\]\nurl = ).*$", lambda m: f"{m.group(1)}{json.dumps(store_url)}", text
        )
        replaced *= urls
    if replaced != 1 or re.search(r"(?m)^\[(api|daemon)\]$", text):
        raise SystemExit(f"{path}: not the config sandbox.configfile.render writes")
    text += f'\n[api]\nlisten = "127.0.0.1:{port}"\n'
    if worker_idle_seconds is not None:
        text += f"\n[daemon]\nworker_idle_seconds = {worker_idle_seconds}\n"
    path.write_text(text, encoding="utf-8")
    settings = config.load(path)
    assert settings.sync.interval_seconds == interval and settings.api.port == port
    return settings


def make_token(command: list[str], config_path: Path, env: dict[str, str]) -> str:
    create = ["tokens", "create", TOKEN_NAME, "--role", "auditor", "--config", str(config_path)]
    done = subprocess.run(
        [*command, *create], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"pdsync tokens create failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


def first_items(settings: Settings) -> set[tuple[str, str]]:
    """The work items the leader's schedules queue first (daemon/service.py _schedule)."""
    # No "erasures" item: the tick queues one only while a request can be moved on.
    expected = {("deadlines", "all")}
    if settings.ledger.signing_key is not None:
        expected.add(("checkpoint", "ledger"))
    for customer in settings.customers:
        expected.add(("sync", customer.id))
        if customer.outlook is not None and settings.systems.outlook is not None:
            expected.add(("retention", customer.id))  # Outlook is the system with retention
    return expected


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def wait_first_work(
    store: Store, settings: Settings, daemon: subprocess.Popen[bytes], worker_peak: list[float]
) -> int:
    """Until every first work item is finished, nothing is queued or running, and the
    worker process has ended (`daemon.worker_idle_seconds` later); returns how many
    failed. `worker_peak` gets each worker's peak RSS (MB), read while it runs."""
    expected = first_items(settings)
    deadline = time.monotonic() + FIRST_SYNC_TIMEOUT
    peaks: dict[int, float] = {}
    while True:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited ({daemon.returncode}) during its first syncs")
        for worker in children(daemon.pid):
            with suppress(OSError, KeyError):
                peaks[worker] = status_kb(worker, "VmHWM") / 1024
        worker_peak[:] = list(peaks.values())
        items = store.work_items(limit=10_000)
        finished = {(i.kind, i.key) for i in items if i.state in ("done", "failed")}
        active = [i for i in items if i.state in ("queued", "running")]
        if expected <= finished and not active and not children(daemon.pid):
            return sum(1 for i in items if i.state == "failed")
        if time.monotonic() > deadline:
            raise SystemExit(
                f"first work items not finished after {FIRST_SYNC_TIMEOUT:.0f} s:"
                f" {len(expected - finished)} missing, {len(active)} queued or running"
            )
        time.sleep(0.5)


def add_runs(store: Store, count: int) -> int:
    """`count` finished runs copied from the daemon's (kind, customer, status, summary)."""
    model = [r for r in store.list_runs(limit=10_000) if r.finished_at is not None]
    if not model:
        raise SystemExit("the daemon recorded no finished run to copy")
    for i in range(count):
        row = model[i % len(model)]
        run_id = store.start_run(row.kind, customer_id=row.customer_id, trigger="bench")
        store.finish_run(run_id, row.status, row.summary)
    return len(store.list_runs(limit=100_000))


# -- the idle daemon's own polling, timed in this process ---------------------------------


def polling_cost(settings: Settings, calls: int) -> tuple[float, float, float]:
    """CPU seconds per claim_work (nothing queued), per heartbeat + leadership check and
    (SQLite) per look at the commit counter, on the daemon's store after it stopped, in
    this thread (thread_time)."""
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        lease = timedelta(seconds=settings.daemon.lease_seconds)
        leadership = Leadership(store._engine, store.dialect)
        # A kind nobody queues, so nothing left queued is taken (the daemon passes none).
        if store.claim_work(lease=lease, kinds=("bench-none",)) is not None:
            raise AssertionError("claimed a work item that does not exist")
        started = time.thread_time()
        for _ in range(calls):
            if store.claim_work(lease=lease, kinds=("bench-none",)) is not None:
                raise AssertionError("claimed a work item that does not exist")
        claim = (time.thread_time() - started) / calls
        started = time.thread_time()
        for _ in range(calls):
            leadership.still_leading()
            store.heartbeat(leader=True)
        beat = (time.thread_time() - started) / calls
        store.forget_instance()
        probe_cpu = 0.0
        if store.dialect == "sqlite":
            probe = _CommitProbe(store._engine.url)
            try:
                started = time.thread_time()
                for _ in range(calls):
                    probe.changed()
                probe_cpu = (time.thread_time() - started) / calls
            finally:
                probe.close()
    finally:
        store.close()
    return claim, beat, probe_cpu


# -- the API load ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Load:
    latencies: list[float]  # seconds, successful and failed requests alike
    errors: Counter[str]
    wall: float
    cpu: float  # the daemon's CPU seconds meanwhile
    page: int  # runs in one response
    client_cpu: float = 0.0  # this process's CPU seconds meanwhile (the load generator)


class RawConnection:
    """One keep-alive HTTP/1.1 connection with requests written and answers read by hand.

    A load generator on the daemon's machine takes CPU from the daemon: an
    httpx.AsyncClient costs about 2 ms of CPU per request here, three times what the
    daemon spends answering it, so with it the bench measured mostly itself (one core
    of the two at ~500 requests a second). This costs a tenth of that and checks as
    much: the status, Content-Length, and a JSON list of the whole page.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes):
        self.reader = reader
        self.writer = writer
        self.request = request

    @classmethod
    async def open(cls, url: str, path: str, headers: dict[str, str]) -> RawConnection:
        parsed = httpx.URL(url)
        host, port = parsed.host, parsed.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: */*"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return cls(reader, writer, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def get(self) -> tuple[int, bytes]:
        """(status, body) of one request; ValueError for an answer it cannot read."""
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, fields = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        for line in fields.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise ValueError("chunked answer")  # uvicorn sends whole bodies here
        if length is None:
            raise ValueError("no Content-Length")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


async def api_load(
    url: str, token: str, pid: int, clients: int, requests: int, page: int, *, client: str = "raw"
) -> Load:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    path = "/api/v1/runs"
    headers = {"Authorization": f"Bearer {token}"}

    async def get(connection: RawConnection | httpx.AsyncClient) -> float:
        started = time.perf_counter()
        try:
            if isinstance(connection, RawConnection):
                status, raw = await connection.get()
            else:
                response = await connection.get(path)
                status, raw = response.status_code, response.content
            body = json.loads(raw) if status == 200 else None
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[f"{type(exc).__name__}: {exc}".rstrip(": ")[:100]] += 1
        else:
            if status != 200:
                errors[f"HTTP {status}"] += 1
            elif not isinstance(body, list) or len(body) != page:
                errors["short page"] += 1
        return time.perf_counter() - started

    async def client_loop(connection: RawConnection | httpx.AsyncClient) -> None:
        for _ in range(requests):
            latencies.append(await get(connection))

    # One client, one connection each: a connection is reused as soon as its previous
    # response is read, never left idle near uvicorn's 5 s keep-alive timeout.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        pool: list[RawConnection | httpx.AsyncClient] = []
        for _ in range(clients):
            if client == "raw":
                connection = await RawConnection.open(url, path, headers)
                stack.push_async_callback(connection.close)
                pool.append(connection)
            else:
                pool.append(
                    await stack.enter_async_context(
                        httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60)
                    )
                )
        await asyncio.gather(*(get(connection) for connection in pool))  # warm-up: connect
        if errors:
            raise SystemExit(f"API warm-up failed: {dict(errors)}")
        before, client_before = Sample.of(pid), time.process_time()
        await asyncio.gather(*(client_loop(connection) for connection in pool))
        after, client_after = Sample.of(pid), time.process_time()
    return Load(
        latencies=latencies,
        errors=errors,
        wall=after.wall - before.wall,
        cpu=after.cpu - before.cpu,
        page=page,
        client_cpu=client_after - client_before,
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


# -- the run -----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Result:
    phases: list[Phase]
    idle_items: Counter[str]
    idle_runs: Counter[str]
    load: Load
    load_phase: Phase
    runs_in_store: int
    exit_code: int
    stop_seconds: float
    settings: Settings
    claim_cpu: float = 0.0
    beat_cpu: float = 0.0
    probe_cpu: float = 0.0
    command: str = ""
    started: dict[int, str] = field(default_factory=dict)  # processes seen under this one
    worker_peaks: list[float] = field(default_factory=list)  # MB, per worker process


@contextmanager
def store_database(args: argparse.Namespace) -> Iterator[str | None]:
    """None for the sandbox's SQLite store; else a fresh PostgreSQL database's URL."""
    if args.store == "sqlite":
        yield None
        return
    admin = sa.create_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"pdsync_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(args.pg_admin_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(args: argparse.Namespace, tmp: Path) -> Result:
    with (
        store_database(args) as store_url,
        running(tmp, seed=7, customers=args.customers, contacts=args.contacts) as box,
    ):
        settings = write_config(
            box.config_path,
            interval=args.sync_interval,
            port=free_port(),
            store_url=store_url,
            worker_idle_seconds=args.worker_idle_seconds,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
        command = pdsync_command()
        token = make_token(command, box.config_path, env)
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        log_file = (tmp / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [*command, "run", "--config", str(box.config_path)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        pid = daemon.pid
        try:
            start = Sample.of(pid)
            worker_peaks: list[float] = []
            failed = wait_first_work(store, settings, daemon, worker_peaks)
            settled = Sample.of(pid)
            first = Phase.between(
                "start + first syncs", pid, start, settled,
                note=f"{len(first_items(settings))} work items, {failed} failed;"
                f" worker ended ({settings.daemon.worker_idle_seconds:g} s idle)",
            )  # fmt: skip

            idle_from = datetime.now(UTC)
            time.sleep(args.idle_seconds)
            idle_to = datetime.now(UTC)
            quiet = Sample.of(pid)
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.returncode}) while idle")
            items = Counter(
                i.kind for i in store.work_items(limit=10_000)
                if idle_from <= aware(i.enqueued_at) < idle_to
            )  # fmt: skip
            runs = Counter(
                r.kind for r in store.list_runs(limit=10_000, since=idle_from)
                if aware(r.started_at) < idle_to
            )  # fmt: skip
            idle = Phase.between(
                "idle", pid, settled, quiet,
                note=", ".join(f"{n} {k}" for k, n in sorted(items.items())) or "no work items",
            )  # fmt: skip

            runs_in_store = add_runs(store, args.extra_runs)
            page = min(50, runs_in_store)
            loaded_from = Sample.of(pid)
            load = asyncio.run(
                api_load(
                    f"http://127.0.0.1:{settings.api.port}", token, pid,
                    args.clients, args.requests, page, client=args.api_client,
                )
            )  # fmt: skip
            load_phase = Phase.between(
                "API load", pid, loaded_from, Sample.of(pid),
                note=f"{args.clients} clients x {args.requests} GET /api/v1/runs, with warm-up",
            )  # fmt: skip

            started = descendants()  # the daemon, the emulator and its guard
            stopping = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            try:
                exit_code = daemon.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                exit_code = -1
            stop_seconds = time.monotonic() - stopping
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            log_file.close()
            store.close()
        claim, beat, probe = polling_cost(settings, args.polling_calls)
    return Result(
        phases=[first, idle],
        idle_items=items,
        idle_runs=runs,
        load=load,
        load_phase=load_phase,
        runs_in_store=runs_in_store,
        exit_code=exit_code,
        stop_seconds=stop_seconds,
        settings=settings,
        claim_cpu=claim,
        beat_cpu=beat,
        probe_cpu=probe,
        started=started,
        worker_peaks=worker_peaks,
        command=" ".join(Path(command[0]).name if i == 0 else c for i, c in enumerate(command)),
    )


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, name) of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        name = text[text.index("(") + 1 : text.rindex(")")]
        found[int(stat.parent.name)] = (int(fields[1]), fields[0], name)
    return found


def descendants() -> dict[int, str]:
    """This process's children, grandchildren and so on: pid -> name."""
    table = processes()
    found: dict[int, str] = {}
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier}
        found.update({pid: table[pid][2] for pid in frontier})
    return found


def still_alive(started: dict[int, str], grace: float = 5.0) -> list[str]:
    """Which of `started` are alive (not zombies) after up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        table = processes()
        alive = [
            f"{pid} {name}" for pid, name in started.items()
            if pid in table and table[pid][2] == name and table[pid][1] != "Z"
        ]  # fmt: skip
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def report(args: argparse.Namespace, result: Result, leftover: list[str]) -> None:
    settings = result.settings
    daemon = settings.daemon
    print(
        f"pdsync daemon (`{result.command} run`), {args.customers} customers x {args.contacts}"
        f" contacts against the sandbox; sync every {settings.sync.interval_seconds} s,"
        f" {daemon.workers} workers, leader poll {daemon.leader_poll_seconds:g} s,"
        f" {'SQLite' if settings.store.url.startswith('sqlite') else 'PostgreSQL'} store"
    )
    print(
        f"{'phase':<20} {'wall s':>7} {'CPU s':>6} {'CPU % 1 core':>13} {'peak RSS MB':>12}"
        f" {'RSS MB':>7} {'threads':>8}  work"
    )
    for phase in (*result.phases, result.load_phase):
        print(
            f"{phase.label:<20} {phase.wall:>7.1f} {phase.cpu:>6.2f} {phase.share:>13.2f}"
            f" {phase.hwm_mb:>12.0f} {phase.rss_mb:>7.0f} {phase.thread_count:>8}  {phase.note}"
        )
    first, idle = result.phases
    syncs = result.idle_runs.get("sync", 0)
    print(
        f"idle: CPU {idle.share:.2f} % of one core ({1000 * idle.cpu / idle.wall:.1f} ms per s),"
        f" peak RSS {idle.hwm_mb:.0f} MB; start + first syncs {first.share:.1f} %;"
        f" syncs started while idle: {syncs}; worker processes alive: {idle.workers}"
        f" (target: < 0.5 % and 120 MB:"
        f" {'met' if idle.share < 0.5 and max(idle.hwm_mb, idle.rss_mb) <= 120 else 'NOT met'})"
    )
    print(
        f"idle RSS {idle.rss_mb:.0f} MB: {idle.anon_mb:.0f} MB the daemon's own (heap,"
        f" stacks), {idle.file_mb:.0f} MB mapped files (shared libraries and code, shared"
        " with every process that maps them: other instances on the host too)"
    )
    peaks = ", ".join(f"{mb:.0f}" for mb in result.worker_peaks) or "none seen"
    print(
        f"worker processes (the syncs, retention runs and erasures; daemon/worker.py): peak RSS"
        f" {peaks} MB, while they ran; the daemon's own peak {idle.hwm_mb:.0f} MB"
    )
    for phase in (idle, result.load_phase):
        t, wall = phase.threads, phase.wall
        print(
            f"{phase.label}, per thread (schedstat): event loop {1000 * t.loop_cpu / wall:.1f}"
            f" ms CPU per s, {t.loop_runs / wall:.1f} wake-ups per s; {t.others} other"
            f" threads {1000 * t.other_cpu / wall:.1f} ms per s, {t.other_runs / wall:.1f}"
            f" wake-ups per s (busiest {1000 * t.busiest / wall:.1f} ms per s)"
        )
    workers, poll = settings.daemon.workers, settings.daemon.leader_poll_seconds
    # What an idle instance asks the store (daemon/service.py): a claim per worker each
    # fallback poll (work queued elsewhere wakes it sooner: NOTIFY on PostgreSQL, on
    # SQLite a look at the commit counter each second), a heartbeat each few polls.
    sqlite = settings.store.url.startswith("sqlite")
    every = min(IDLE_POLL_SECONDS, settings.daemon.lease_seconds / 2)
    beat_every = poll * IDLE_HEARTBEAT_POLLS
    probe_every = IDLE_PROBE_SQLITE_SECONDS if sqlite else math.inf
    polling = (
        workers * result.claim_cpu / every
        + result.beat_cpu / beat_every
        + result.probe_cpu / probe_every
    )  # CPU s per s
    probes = f" + a commit-counter look per {probe_every:g} s at {1e6 * result.probe_cpu:.0f} us"
    # The idle figure counts whole clock ticks: a short --idle-seconds may see none.
    share_of_idle = (
        f"{100 * (100 * polling) / idle.share:.0f} % of the idle figure"
        if idle.share > 0
        else f"the idle figure saw no whole clock tick (1/{CLK_TCK} s) in {idle.wall:.0f} s"
    )
    print(
        f"idle store polling: {workers / every:g} claims per s (every {every:g} s per worker) at"
        f" {1e6 * result.claim_cpu:.0f} us + a heartbeat per {beat_every:g} s at"
        f" {1e6 * result.beat_cpu:.0f} us{probes if sqlite else ''}"
        f" = {100 * polling:.3f} % of one core for the store calls alone (timed warm in this"
        f" process; without the thread hand-offs), or"
        f" {share_of_idle};"
        f" {86400 * workers / every:,.0f} claims a day (read-only unless something is"
        f" claimable{'; more after commits: a heartbeat, a run' if sqlite else ''}) and"
        f" {86400 / beat_every:,.0f} heartbeat writes"
    )

    load = result.load
    ordered = sorted(load.latencies)
    done = len(ordered)
    print()
    print(
        f"admin API: {args.clients} concurrent clients x {args.requests} requests,"
        f" GET /api/v1/runs ({load.page} of {result.runs_in_store} runs per response),"
        f" auditor token, loopback, {args.api_client} client"
    )
    print(
        f"{'requests':>9} {'errors':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        f" {'req/s':>7} {'wall s':>7} {'daemon CPU %':>13} {'CPU ms/req':>11}"
    )
    print(
        f"{done:>9} {load.errors.total():>7} {1000 * percentile(ordered, 50):>7.1f}"
        f" {1000 * percentile(ordered, 99):>7.1f} {1000 * ordered[-1]:>7.1f}"
        f" {done / load.wall:>7.1f} {load.wall:>7.2f} {100 * load.cpu / load.wall:>13.1f}"
        f" {1000 * load.cpu / done:>11.2f}"
    )
    rps, p99 = done / load.wall, 1000 * percentile(ordered, 99)
    print(
        f"the load generator (this process, {args.api_client} client):"
        f" {1000 * load.client_cpu / done:.2f} ms CPU per request; machine load"
        f" {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs"
    )
    print(
        f"{rps / API_BASELINE_RPS:.1f}x the {API_BASELINE_RPS:g} req/s of issue 15; target"
        f" >= 500 req/s with p99 < 200 ms: {'met' if rps >= 500 and p99 < 200 else 'NOT met'}"
    )
    if load.errors:
        print(f"errors: {dict(load.errors)}")
    print()
    errors = load.errors.total()
    ok = result.exit_code == 0 and errors == 0 and not leftover
    print(
        f"SIGTERM: daemon exited {result.exit_code} after {result.stop_seconds:.1f} s;"
        f" API errors {errors}; left running: {', '.join(leftover) or 'nothing'}"
        f" -> {'ok' if ok else 'NOT ok'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--contacts", type=int, default=5, help="per customer")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--worker-idle-seconds",
        type=float,
        default=10.0,
        help="[daemon] worker_idle_seconds: the worker process ends this long after its"
        " last work item (the daemon's default is 120 s)",
    )
    parser.add_argument("--sync-interval", type=int, default=300, help="sync.interval_seconds")
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients")
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--extra-runs", type=int, default=200, help="runs added to the store")
    parser.add_argument(
        "--api-client",
        choices=("raw", "httpx"),
        default="raw",
        help="the load's HTTP client: requests written by hand (default), or httpx",
    )
    parser.add_argument(
        "--polling-calls", type=int, default=500, help="store calls timed for the idle estimate"
    )
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "PDSYNC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL database from which the bench's database is made (--store postgresql)",
    )
    args = parser.parse_args()
    if args.idle_seconds + FIRST_SYNC_TIMEOUT >= 0.9 * args.sync_interval:
        print(
            f"warning: --sync-interval {args.sync_interval} s may bring second syncs into the"
            " idle window (syncs are counted and shown)"
        )
    logs.configure(format="json", level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    leftover = still_alive(result.started)
    report(args, result, leftover)
    if result.exit_code != 0 or result.load.errors.total() or leftover:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
