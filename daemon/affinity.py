"""Mailbox affinity across instances, and when each customer's sync comes round.

Graph's limits (4 requests in flight, 10,000 per 10 minutes) are per app and mailbox,
and several pdsync instances serve the customers of one service mailbox. Instances
therefore take turns at a mailbox (connectors/outlook/limits.py, `MailboxTurns`): one
holds the mailbox's lease at a time, a PostgreSQL session-level advisory lock, so a
holder that dies or loses its connection hands the mailbox over at once, with no lease
to run out. The budget's window travels with the lease in `store_meta` (no table of its
own: no migration). Chosen over routing each customer's work to the lease holder
because the work queue then stays as it is (any instance claims any customer) and only
the Outlook requests wait for the turn; chosen over per-request slots in the store for
the reasons in limits.py. On SQLite there is one instance, so nothing is shared.

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

from connectors.outlook import OutlookConnector
from daemon.store import Store
from daemon.store.schema import store_meta

# Namespaces (the first key of the two-key advisory locks, apart from the one-key
# leader lock): holding a mailbox, and waiting for it (a shared lock per waiter).
HOLD = 0x70640001
WANT = 0x70640002
_HANDOFF = "mailbox_budget/"


def _key(scope: str) -> int:
    """The mailbox's advisory key (31 bits: pg_locks shows it as a non-negative oid)."""
    return int.from_bytes(hashlib.sha256(scope.encode("utf-8")).digest()[:4], "big") >> 1


def _handoff_name(scope: str) -> str:
    return _HANDOFF + hashlib.sha256(scope.encode("utf-8")).hexdigest()[:48]


class PostgresMailboxLease:
    """`MailboxLease` on PostgreSQL advisory locks, on a session of its own."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._conn: sa.Connection | None = None
        self._lock = threading.Lock()  # one connection, called from worker threads
        self._waiting: set[str] = set()

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _scalar(self, statement: sa.Executable) -> object:
        conn = self._connection()
        try:
            value = conn.scalar(statement)
            conn.commit()
        except sa.exc.DBAPIError:
            # The session is gone, and every lock it held with it.
            self._drop()
            raise
        return value

    def try_take(self, scope: str) -> str | None:
        key = _key(scope)
        with self._lock:
            if scope not in self._waiting:
                self._scalar(sa.select(sa.func.pg_try_advisory_lock_shared(WANT, key)))
                self._waiting.add(scope)
            if not self._scalar(sa.select(sa.func.pg_try_advisory_lock(HOLD, key))):
                return None
            self._scalar(sa.select(sa.func.pg_advisory_unlock_shared(WANT, key)))
            self._waiting.discard(scope)
            value = self._scalar(
                sa.select(store_meta.c.value).where(store_meta.c.name == _handoff_name(scope))
            )
        return bytes(value).decode("utf-8") if isinstance(value, bytes | memoryview) else ""

    def others_waiting(self, scope: str) -> bool:
        locks = sa.table(
            "pg_locks",
            sa.column("locktype"),
            sa.column("classid"),
            sa.column("objid"),
            sa.column("objsubid"),
            sa.column("pid"),
            sa.column("granted"),
        )
        query = (
            sa.select(sa.func.count())
            .select_from(locks)
            .where(
                locks.c.locktype == "advisory",
                locks.c.classid == WANT,
                locks.c.objid == _key(scope),
                locks.c.objsubid == 2,
                locks.c.granted,
                locks.c.pid != sa.func.pg_backend_pid(),
            )
        )
        with self._lock:
            return bool(self._scalar(query))

    def give_back(self, scope: str, handoff: str) -> None:
        with self._lock:
            if self._conn is None:
                return  # the session ended: the lock went with it
            stmt = postgresql.insert(store_meta).values(
                name=_handoff_name(scope), value=handoff.encode("utf-8")
            )
            self._connection().execute(
                stmt.on_conflict_do_update(
                    index_elements=[store_meta.c.name], set_={"value": stmt.excluded.value}
                )
            )
            self._scalar(sa.select(sa.func.pg_advisory_unlock(HOLD, _key(scope))))

    def stop_waiting(self, scope: str) -> None:
        with self._lock:
            if scope in self._waiting:
                self._waiting.discard(scope)
                self._scalar(sa.select(sa.func.pg_advisory_unlock_shared(WANT, _key(scope))))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                # Not back into the pool: the session must end, and with it every lock.
                self._conn.invalidate()
                self._conn.close()
            self._conn = None
            self._waiting.clear()


def schedule_offset(customer_id: str, interval: float, customers: int) -> float:
    """Seconds after the start at which the customer's syncs come round: a stable point
    (the same on every instance and after every restart, whatever the order in the
    config) within the first min(interval, customers) seconds, so hundreds of customers
    are spread over the interval and a few still start at once."""
    spread = max(1.0, min(float(interval), float(customers)))
    fraction = int.from_bytes(hashlib.sha256(customer_id.encode("utf-8")).digest()[:8], "big")
    return spread * fraction / 2**64


def share_mailboxes(
    connectors: Mapping[str, object], store: Store, stack: AsyncExitStack
) -> PostgresMailboxLease | None:
    """Make the Outlook connector take turns at its mailboxes with the other instances on
    the store (PostgreSQL); the lease's session is closed when `stack` unwinds."""
    outlook = next((c for c in connectors.values() if isinstance(c, OutlookConnector)), None)
    if outlook is None:
        return None
    lease = PostgresMailboxLease(store._engine)
    stack.callback(lease.close)
    outlook.share_mailboxes(lease)
    return lease
