"""Work items and instances: how several daemons share the work on one PostgreSQL.

The leader enqueues work (a sync of a customer, a retention run, moving erasures on);
every instance claims items with `FOR UPDATE SKIP LOCKED` and holds a lease it renews
while it works. A dead instance's lease runs out and another instance takes the item
over. At most one item of a kind and key is queued or running at a time, so a duplicate
trigger does nothing and no customer is synced twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import socket
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import IO, Any

import sqlalchemy as sa
import structlog

from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.rows import InstanceRow, WorkItem
from daemon.store.schema import instances, work_items

log = structlog.get_logger("pdsync.daemon")

ACTIVE = ("queued", "running")
# The PostgreSQL channel enqueue_work notifies (payload: the kind) and WorkSignal listens on.
WORK_CHANNEL = "pdsync_work"


def _item(row: sa.Row[Any]) -> WorkItem:
    return WorkItem(
        id=row.id,
        kind=row.kind,
        key=row.key,
        state=row.state,
        attempts=row.attempts,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
        enqueued_at=row.enqueued_at,
        finished_at=row.finished_at,
        trigger=row.trigger,
        error=row.error,
    )


class WorkMixin(StoreBase):
    def enqueue_work(self, kind: str, key: str, *, trigger: str | None = None) -> int | None:
        """Queue `kind` for `key` unless one is already queued or running.

        Returns the new item's id, or None when one was queued or running already.
        `trigger` says who asked (None: the leader's schedule).
        """
        with self._write() as conn:
            active = conn.scalar(
                sa.select(work_items.c.id).where(
                    work_items.c.kind == kind,
                    work_items.c.key == key,
                    work_items.c.state.in_(ACTIVE),
                )
            )
            if active is not None:
                return None
            try:
                with conn.begin_nested():
                    item_id = conn.scalar(
                        sa.insert(work_items)
                        .values(
                            kind=kind,
                            key=key,
                            state="queued",
                            attempts=0,
                            enqueued_at=utcnow(),
                            trigger=trigger,
                        )
                        .returning(work_items.c.id)
                    )
                if self._dialect == "postgresql":
                    # Delivered at commit to every instance LISTENing (WorkSignal).
                    conn.execute(sa.select(sa.func.pg_notify(WORK_CHANNEL, kind)))
            except sa.exc.IntegrityError:
                return None  # another instance queued it a moment ago
        assert item_id is not None
        for wake in tuple(self.__dict__.get("_enqueue_listeners", ())):
            wake()
        return int(item_id)

    def on_work_enqueued(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (from the enqueuing thread) after this Store object queued
        an item; returns a function that unsubscribes it."""
        listeners: list[Callable[[], None]] = self.__dict__.setdefault("_enqueue_listeners", [])
        listeners.append(callback)
        return lambda: listeners.remove(callback)

    def withdraw_work(self, item_id: int, *, reason: str) -> bool:
        """Take back an item nobody has claimed yet (it ends failed, with `reason`);
        False when it was claimed or ended meanwhile."""
        with self._write() as conn:
            return (
                conn.execute(
                    sa.update(work_items)
                    .where(work_items.c.id == item_id, work_items.c.state == "queued")
                    .values(state="failed", finished_at=utcnow(), error=reason)
                ).rowcount
                == 1
            )

    def work_item(self, item_id: int) -> WorkItem | None:
        with self._read() as conn:
            row = conn.execute(sa.select(work_items).where(work_items.c.id == item_id)).first()
        return None if row is None else _item(row)

    def active_work(self, kind: str, key: str) -> WorkItem | None:
        """The item of `kind` for `key` that is queued or running, if there is one."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(work_items).where(
                    work_items.c.kind == kind,
                    work_items.c.key == key,
                    work_items.c.state.in_(ACTIVE),
                )
            ).first()
        return None if row is None else _item(row)

    @staticmethod
    def _claimable(now: datetime, kinds: tuple[str, ...] | None) -> sa.Select[tuple[int]]:
        """The oldest item queued, or running on a lease that ran out (of `kinds`)."""
        claimable = sa.or_(
            work_items.c.state == "queued",
            sa.and_(work_items.c.state == "running", work_items.c.lease_until < now),
        )
        query = sa.select(work_items.c.id).where(claimable)
        if kinds:
            query = query.where(work_items.c.kind.in_(kinds))
        return query.order_by(work_items.c.id).limit(1)

    def work_claimable(self, *, kinds: tuple[str, ...] | None = None) -> bool:
        """Whether claim_work would find an item (of `kinds`) now; one read."""
        with self._read() as conn:
            return conn.scalar(self._claimable(utcnow(), kinds)) is not None

    def claim_work(
        self, *, lease: timedelta, kinds: tuple[str, ...] | None = None
    ) -> WorkItem | None:
        """Take the oldest queued item, or one whose lease ran out; None if there is none."""
        now = utcnow()
        query = self._claimable(now, kinds)
        # Idle workers ask every second: a read answers "nothing" without queueing for
        # SQLite's write lock behind another writer; only a candidate opens the write
        # transaction (which looks again: another instance may have taken it).
        with self._read() as conn:
            if conn.scalar(query) is None:
                return None
        if self._dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        with self._write() as conn:
            item_id = conn.scalar(query)
            if item_id is None:
                return None
            conn.execute(
                sa.update(work_items)
                .where(work_items.c.id == item_id)
                .values(
                    state="running",
                    claimed_by=self.instance_id,
                    lease_until=now + lease,
                    attempts=work_items.c.attempts + 1,
                )
            )
            row = conn.execute(sa.select(work_items).where(work_items.c.id == item_id)).one()
        return _item(row)

    def renew_work(self, item_id: int, *, lease: timedelta) -> bool:
        """Extend our lease; False when the item is no longer ours (taken over)."""
        with self._write() as conn:
            return (
                conn.execute(
                    sa.update(work_items)
                    .where(
                        work_items.c.id == item_id,
                        work_items.c.claimed_by == self.instance_id,
                        work_items.c.state == "running",
                    )
                    .values(lease_until=utcnow() + lease)
                ).rowcount
                == 1
            )

    def finish_work(self, item_id: int, *, state: str = "done", error: str | None = None) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    sa.update(work_items)
                    .where(work_items.c.id == item_id, work_items.c.claimed_by == self.instance_id)
                    .values(state=state, finished_at=utcnow(), lease_until=None, error=error)
                ).rowcount
                == 1
            )

    def work_items(self, *, kind: str | None = None, limit: int = 1000) -> list[WorkItem]:
        query = sa.select(work_items).order_by(work_items.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(work_items.c.kind == kind)
        with self._read() as conn:
            return [_item(r) for r in conn.execute(query)]

    # -- instances ------------------------------------------------------------------------

    def heartbeat(self, *, leader: bool) -> None:
        """Say this instance is alive (and whether it leads); for takeover and dashboards."""
        now = utcnow()
        values = {
            "pid": os.getpid(),
            "host": socket.gethostname()[:200],
            "last_seen": now,
            "is_leader": leader,
        }
        with self._write() as conn:
            updated = conn.execute(
                sa.update(instances).where(instances.c.id == self.instance_id).values(**values)
            ).rowcount
            if not updated:
                conn.execute(
                    sa.insert(instances).values(id=self.instance_id, started_at=now, **values)
                )

    def instances(self, *, seen_within: timedelta | None = None) -> list[InstanceRow]:
        query = sa.select(instances).order_by(instances.c.started_at)
        if seen_within is not None:
            query = query.where(instances.c.last_seen >= utcnow() - seen_within)
        with self._read() as conn:
            return [
                InstanceRow(
                    id=r.id,
                    pid=r.pid,
                    host=r.host,
                    started_at=r.started_at,
                    last_seen=r.last_seen,
                    is_leader=r.is_leader,
                )
                for r in conn.execute(query)
            ]

    def forget_instance(self, *, leader_until: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                sa.update(instances)
                .where(instances.c.id == self.instance_id)
                .values(is_leader=False, last_seen=leader_until or utcnow())
            )


class SingleInstanceLock:
    """SQLite serves one daemon: a second one on the same file is refused, clearly."""

    def __init__(self, database: str) -> None:
        self.path = f"{database}.instance-lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InstanceLocked(
                f"another pdsync daemon (pid {holder}) is running on this SQLite store; "
                "several instances need PostgreSQL (store.url = postgresql+psycopg://…)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class InstanceLocked(Exception):
    pass


# pg_try_advisory_lock key of the leader ("pdsyncLD").
LEADER_LOCK = 0x706473796E634C44


class Leadership:
    """Who runs the schedules: the holder of a PostgreSQL advisory lock, kept on a
    connection of its own (the lock goes when that session ends, a dead leader's too).
    On SQLite the single instance always leads."""

    def __init__(self, engine: sa.Engine, dialect: str) -> None:
        self._engine = engine
        self._dialect = dialect
        self._conn: sa.Connection | None = None

    @property
    def asks_database(self) -> bool:
        """Whether try_acquire and still_leading do I/O (else they answer at once)."""
        return self._dialect == "postgresql"

    @property
    def is_leader(self) -> bool:
        return self._dialect != "postgresql" or self._conn is not None

    def try_acquire(self) -> bool:
        if self.is_leader:
            return True
        conn = self._engine.connect()
        try:
            won = bool(conn.scalar(sa.select(sa.func.pg_try_advisory_lock(LEADER_LOCK))))
            conn.commit()
        except sa.exc.DBAPIError:
            conn.close()
            return False
        if won:
            self._conn = conn
        else:
            conn.close()
        return won

    def still_leading(self) -> bool:
        """Check the lock's session is alive; drop leadership if it is not."""
        if self._conn is None:
            return self._dialect != "postgresql"
        try:
            self._conn.scalar(sa.select(1))
            self._conn.commit()
            return True
        except sa.exc.DBAPIError:
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                # Unlocked at once where the session still answers (ending it frees the
                # lock only once the server has noticed)...
                self._conn.scalar(sa.select(sa.func.pg_advisory_unlock(LEADER_LOCK)))
                self._conn.commit()
            with contextlib.suppress(sa.exc.DBAPIError):
                # ...and not back into the pool, where the session (and the lock, were
                # the unlock lost) would live on and no other instance could lead.
                self._conn.invalidate()
                self._conn.close()
            self._conn = None


class WorkSignal:
    """Wakes an instance's idle workers when work is queued, so they need not poll.

    Work queued through this Store object (the leader's schedules, the API's "sync
    now") wakes them at once, on every backend. Work queued by another process is
    noticed without asking for work:

    - on PostgreSQL, enqueue_work also sends NOTIFY on WORK_CHANNEL, which a thread of
      this instance LISTENs for on a connection of its own (blocked in select() until a
      notification arrives or the signal closes, never woken by a timer);
    - on SQLite (one daemon; the CLI and the API of another process may queue work),
      every `probe_seconds` the event loop asks SQLite whether any other connection
      committed since it last asked (PRAGMA data_version on a connection of its own:
      a few microseconds, no thread, no query of the work table). Only then do the
      workers look for work, so work queued by the CLI is picked up within
      `probe_seconds`, as it was when the workers polled every second.

    Polling stays as the fallback (`fallback_seconds`): it finds leases that ran out (a
    dead instance's work, which nobody announces and no commit shows) and covers a lost
    listening connection.
    """

    # How long closing waits for the listening thread (it is woken at once).
    LISTEN_TIMEOUT = 3.0

    def __init__(
        self, store: WorkMixin, *, fallback_seconds: float, probe_seconds: float = 1.0
    ) -> None:
        self._store = store
        self.fallback_seconds = fallback_seconds
        self.probe_seconds = probe_seconds
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        self._wake_pipe: tuple[int, int] | None = None  # (read, write): interrupts select()
        self._probe: _CommitProbe | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self.listening = threading.Event()  # set while LISTEN is in place

    def start(self) -> None:
        """Subscribe (call on the event loop the workers run on)."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self._store.on_work_enqueued(self._wake_threadsafe)
        if self._store.dialect == "postgresql":
            self._wake_pipe = os.pipe()
            self._listener = threading.Thread(
                target=self._listen, name="pdsync-work-listen", daemon=True
            )
            self._listener.start()
        elif self._store.dialect == "sqlite":
            self._probe = _CommitProbe(self._store._engine.url)
            self._probe_timer = self._loop.call_later(self.probe_seconds, self._look)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stopping.set()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._wake_pipe is not None:
            os.write(self._wake_pipe[1], b"x")
        if self._listener is not None:
            self._listener.join(timeout=self.LISTEN_TIMEOUT)
            if self._listener.is_alive():
                return  # still connecting: it stops on its own, and may use the pipe
            self._listener = None
        if self._wake_pipe is not None:
            for fd in self._wake_pipe:
                os.close(fd)
            self._wake_pipe = None

    async def wait(self, stop: asyncio.Event) -> None:
        """Return when work was announced, `stop` is set, or `fallback_seconds` passed."""
        if not self._event.is_set():
            woken = asyncio.ensure_future(self._event.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    (woken, stopped),
                    timeout=self.fallback_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                woken.cancel()
                stopped.cancel()
        self._event.clear()

    def _look(self) -> None:
        """On the loop, every probe_seconds (SQLite): wake the workers after a commit."""
        probe, loop = self._probe, self._loop
        if probe is None or loop is None or self._stopping.is_set():
            return
        if probe.changed():
            self._event.set()
        self._probe_timer = loop.call_later(self.probe_seconds, self._look)

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._event.set)

    def _listen(self) -> None:
        import psycopg  # PostgreSQL only: a SQLite daemon does not load the driver

        assert self._wake_pipe is not None
        wake_fd = self._wake_pipe[0]
        url = self._store._engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {WORK_CHANNEL}")
                    self.listening.set()
                    backoff = 1.0
                    self._wake_threadsafe()  # anything queued before LISTEN: look once
                    # Blocked in poll() until the server sends something (a
                    # notification, or the end of the connection) or close() writes to
                    # the pipe: psycopg's own notifies(timeout) wakes every 0.1 s.
                    poller = select.poll()
                    poller.register(conn.fileno(), select.POLLIN)
                    poller.register(wake_fd, select.POLLIN)
                    while not self._stopping.is_set():
                        ready = {fd for fd, _ in poller.poll()}
                        if conn.fileno() in ready:
                            for _ in conn.notifies(timeout=0):
                                self._wake_threadsafe()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("work_listen_failed", error=type(exc).__name__, retry_in=backoff)
                self._wake_threadsafe()  # the workers poll meanwhile
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        self.listening.clear()


class _CommitProbe:
    """Whether any other connection committed to a SQLite database since the last look:
    PRAGMA data_version on a connection of its own, which changes exactly then. Never
    waits for a lock (timeout 0); when it cannot tell, it says "changed", so the
    workers look (as they would have by polling)."""

    def __init__(self, url: sa.URL) -> None:
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        try:
            self._conn = sqlite3.connect(
                url.database or "",
                timeout=0,
                isolation_level=None,
                uri=bool(url.query.get("uri")),
                check_same_thread=False,  # made on the loop's thread; closed on any
            )
            self._version = self._read()
        except sqlite3.Error:
            self._version = None

    def _read(self) -> int | None:
        if self._conn is None:
            return None
        # fetchall: the statement runs to its end, so no read transaction stays open
        # (an open one would keep checkpoints from emptying the WAL).
        rows = self._conn.execute("PRAGMA data_version").fetchall()
        return int(rows[0][0]) if rows else None

    def changed(self) -> bool:
        try:
            version = self._read()
        except sqlite3.Error:
            return True
        if version is None or version != self._version:
            self._version = version
            return True
        return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
