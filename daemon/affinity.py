"""Mailbox affinity across instances, and when each customer's sync comes round.

Graph's limits (4 requests in flight, 10,000 per 10 minutes) are per app and mailbox,
and several pdsync instances serve the customers of one service mailbox. Instances
therefore take turns at a mailbox (connectors/outlook/limits.py, `MailboxTurns`): one
holds the mailbox's lease at a time, a PostgreSQL session-level advisory lock, so a
holder that dies or loses its connection hands the mailbox over at once, with no lease
to run out; the others wait for it in the server's lock queue, first come first
served, and the holder sees them there. The budget's window travels with the lease in
`store_meta` (no table of its own: no migration). Chosen over routing each customer's
work to the lease holder because the work queue then stays as it is (any instance
claims any customer) and only the Outlook requests wait for the turn; chosen over
per-request slots in the store for the reasons in limits.py. On SQLite there is one
instance, so nothing is shared.

`schedule_offset` spreads the customers' syncs over the interval by a stable offset.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Mapping
from contextlib import AsyncExitStack

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from daemon.store import Store
from daemon.store.schema import store_meta

# The namespace of the mailbox locks (the first key of the two-key advisory locks, apart
# from the one-key leader lock).
HOLD = 0x70640001
_HANDOFF = "mailbox_budget/"
# SQLSTATE lock_not_available: the wait for the lock ran out (lock_timeout).
_LOCK_TIMEOUT = "55P03"


def _key(scope: str) -> int:
    """The mailbox's advisory key (31 bits: pg_locks shows it as a non-negative oid)."""
    return int.from_bytes(hashlib.sha256(scope.encode("utf-8")).digest()[:4], "big") >> 1


def _handoff_name(scope: str) -> str:
    return _HANDOFF + hashlib.sha256(scope.encode("utf-8")).hexdigest()[:48]


class _Session:
    """One mailbox's database session: its lock is held on it, and waited for on it."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self.conn: sa.Connection | None = None
        self.lock = threading.Lock()  # one statement at a time on the connection
        self.waiting = False  # a wait for the lock is under way on the connection

    def cancel_wait(self) -> None:
        """Cut a wait under way short (from another thread: psycopg allows that)."""
        conn = self.conn
        if self.waiting and conn is not None:
            with contextlib.suppress(Exception):
                raw = conn.connection.dbapi_connection
                if raw is not None:
                    raw.cancel()

    def connection(self) -> sa.Connection:
        if self.conn is None:
            self.conn = self._engine.connect()
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                # Not back into the pool: the session must end, and with it the lock.
                self.conn.invalidate()
                self.conn.close()
            self.conn = None


class PostgresMailboxLease:
    """`MailboxLease` on PostgreSQL session-level advisory locks, a session per mailbox.

    Waiting for a mailbox is waiting for its lock in the server (pg_advisory_lock under a
    lock_timeout), not polling: the server grants the lock to its waiters in the order
    they came as soon as the holder lets go, and shows them to the holder in pg_locks
    (not granted), which is how it knows that another instance waits.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()  # guards _sessions and _closed
        self._closed = False

    def _session(self, scope: str) -> _Session:
        with self._lock:
            if self._closed:  # no new session (and wait) once the daemon is stopping
                raise RuntimeError("the mailbox lease is closed")
            session = self._sessions.get(scope)
            if session is None:
                session = self._sessions[scope] = _Session(self._engine)
            return session

    def take(self, scope: str, wait: float = 0.0) -> str | None:
        key = _key(scope)
        session = self._session(scope)
        with session.lock:
            conn = session.connection()
            try:
                if wait > 0:
                    # SET LOCAL: for this transaction only (a session lock outlives it).
                    timeout = f"{max(1, round(wait * 1000))}ms"
                    conn.execute(sa.select(sa.func.set_config("lock_timeout", timeout, True)))
                    session.waiting = True
                    try:
                        conn.execute(sa.select(sa.func.pg_advisory_lock(HOLD, key)))
                    finally:
                        session.waiting = False
                elif not conn.scalar(sa.select(sa.func.pg_try_advisory_lock(HOLD, key))):
                    conn.commit()
                    return None
                value = conn.scalar(
                    sa.select(store_meta.c.value).where(store_meta.c.name == _handoff_name(scope))
                )
                conn.commit()
            except sa.exc.DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == _LOCK_TIMEOUT:
                    conn.rollback()
                    return None
                # The session is gone, or in doubt: end it, and every lock it held.
                session.drop()
                raise
        return bytes(value).decode("utf-8") if isinstance(value, bytes | memoryview) else ""

    def others_waiting(self, scope: str) -> bool:
        locks = sa.table(
            "pg_locks",
            sa.column("locktype"),
            sa.column("classid"),
            sa.column("objid"),
            sa.column("objsubid"),
            sa.column("granted"),
        )
        query = sa.select(
            sa.exists().where(
                locks.c.locktype == "advisory",
                locks.c.classid == HOLD,
                locks.c.objid == _key(scope),
                locks.c.objsubid == 2,
                sa.not_(locks.c.granted),
            )
        )
        session = self._session(scope)
        with session.lock:
            conn = session.connection()
            try:
                waiting = bool(conn.scalar(query))
                conn.commit()
            except sa.exc.DBAPIError:
                session.drop()
                raise
        return waiting

    def give_back(self, scope: str, handoff: str) -> None:
        session = self._session(scope)
        with session.lock:
            if session.conn is None:
                return  # the session ended: the lock went with it
            conn = session.conn
            stmt = postgresql.insert(store_meta).values(
                name=_handoff_name(scope), value=handoff.encode("utf-8")
            )
            try:
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[store_meta.c.name], set_={"value": stmt.excluded.value}
                    )
                )
                # Committed before the lock goes: unlocking is not transactional, and the
                # next holder, woken by it, must read this hand-over, not the last one.
                conn.commit()
                conn.execute(sa.select(sa.func.pg_advisory_unlock(HOLD, _key(scope))))
                conn.commit()
            except sa.exc.DBAPIError:
                session.drop()  # the lock goes with the session; the hand-over is lost
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.cancel_wait()  # a wait may be long; the daemon is stopping
            with session.lock:
                session.drop()


def schedule_offset(customer_id: str, interval: float, customers: int, *, job: str = "") -> float:
    """Seconds after the start at which the customer's `job` (syncs: "") comes round: a
    stable point (the same on every instance and after every restart, whatever the order
    in the config) within the first min(interval, customers) seconds, so hundreds of
    customers are spread over the interval and a few still start at once. Each job has
    its own points: a customer's retention run is not on its sync's."""
    spread = max(1.0, min(float(interval), float(customers)))
    name = f"{job}:{customer_id}" if job else customer_id
    fraction = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return spread * fraction / 2**64


def share_mailboxes(
    connectors: Mapping[str, object], store: Store, stack: AsyncExitStack
) -> PostgresMailboxLease | None:
    """Make the Outlook connector take turns at its mailboxes with the other instances on
    the store (PostgreSQL); the lease's session is closed when `stack` unwinds."""
    outlook = connectors.get("outlook")
    if outlook is None:
        return None
    from connectors.outlook.connector import OutlookConnector  # only when configured

    if not isinstance(outlook, OutlookConnector):
        return None
    lease = PostgresMailboxLease(store._engine)
    stack.callback(lease.close)
    outlook.share_mailboxes(lease)
    return lease
