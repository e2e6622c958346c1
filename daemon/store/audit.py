"""The audit log of the admin API: who called what, when, and how it ended.

A record names the token (name and role), the method, the route's path template
(`/api/v1/erasures/{request_id}`, never the path as sent, nor the query string) and the
status. Bodies and query values may carry personal data and are never recorded. Only
callers with a valid token are recorded (failed authentication is counted in /metrics
instead), and records older than `[api] audit_retention_days` are deleted daily
(`expire_api_records`), so no caller can grow the table without bound.

The API hands its records to `queue_api_call`, which returns at once: a writer thread
of the Store writes them in batches (one transaction per batch, every
AUDIT_FLUSH_SECONDS or as soon as AUDIT_BATCH are waiting), so a read request never
waits for the store's write lock. The queue is bounded (AUDIT_MAX_PENDING: when full,
the caller writes its record itself); `list_api_calls` writes what is waiting first,
and `Store.close` (a clean stop) writes everything left.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import StoreError
from daemon.store.schema import api_audit, api_sessions, api_tokens

log = structlog.get_logger("pdsync.store")

AUDIT_FLUSH_SECONDS = 0.5  # the most a queued record waits before it is written
AUDIT_BATCH = 200  # written at once when this many are waiting
AUDIT_MAX_PENDING = 10_000  # beyond this the caller writes its own record


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRow:
    id: int
    ts: datetime
    token_name: str | None  # None: no valid token was presented
    role: str | None
    method: str
    route: str
    status: int
    duration_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Expired:
    """What expire_api_records deleted."""

    audit: int  # audit records past retention
    sessions: int  # dashboard sessions past their expiry


def _audit_row(row: sa.Row[Any]) -> AuditRow:
    return AuditRow(
        id=row.id,
        ts=row.ts,
        token_name=row.token_name,
        role=row.role,
        method=row.method,
        route=row.route,
        status=row.status,
        duration_ms=row.duration_ms,
    )


def _record(
    token_id: int | None,
    token_name: str | None,
    role: str | None,
    method: str,
    route: str,
    status: int,
    duration_ms: int,
) -> dict[str, Any]:
    """An audit record as it is written, stamped now (with the token to mark used)."""
    return {
        "token_id": token_id,
        "ts": utcnow(),
        "token_name": token_name,
        "role": role,
        "method": method[:16],
        "route": route[:200],
        "status": status,
        "duration_ms": max(0, duration_ms),
    }


def _columns(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "token_id"}


def _mark_used(conn: sa.Connection, records: list[dict[str, Any]]) -> None:
    """Set each token's last_used_at to its newest record's time."""
    used: dict[int, datetime] = {}
    for record in records:
        token_id = record["token_id"]
        if token_id is not None:
            used[token_id] = max(record["ts"], used.get(token_id, record["ts"]))
    for token_id, last in used.items():
        conn.execute(
            sa.update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=last)
        )


class _AuditQueue:
    """Records waiting to be written, and the thread that writes them."""

    def __init__(self) -> None:
        self.pending: deque[dict[str, Any]] = deque()
        self.ready = threading.Condition()
        self.writing = threading.Lock()  # one batch at a time, in order
        self.thread: threading.Thread | None = None
        self.closed = False


class AuditMixin(StoreBase):
    def _audit_queue(self) -> _AuditQueue:
        queue: _AuditQueue | None = self.__dict__.get("_audit")
        if queue is None:
            queue = self.__dict__.setdefault("_audit", _AuditQueue())
        return queue

    def queue_api_call(
        self,
        *,
        token_id: int | None,
        token_name: str | None,
        role: str | None,
        method: str,
        route: str,
        status: int,
        duration_ms: int,
    ) -> bool:
        """Queue an audit record for the writer thread; never blocks on the database.

        False when the queue is full or the store is closing: then write the record
        with record_api_call (the caller waits, and so slows down as it should).
        """
        queue = self._audit_queue()
        with queue.ready:
            if queue.closed or len(queue.pending) >= AUDIT_MAX_PENDING:
                return False
            queue.pending.append(
                _record(token_id, token_name, role, method, route, status, duration_ms)
            )
            if queue.thread is None:
                queue.thread = threading.Thread(
                    target=self._write_audit_batches, name="pdsync-audit", daemon=True
                )
                queue.thread.start()
            if len(queue.pending) >= AUDIT_BATCH:
                queue.ready.notify()
        return True

    def flush_api_calls(self) -> int:
        """Write every queued audit record now; returns how many were written. Records
        of a batch the database refused stay queued for the next try (StoreError)."""
        queue = self._audit_queue()
        written = 0
        with queue.writing:
            while True:
                with queue.ready:
                    batch = [
                        queue.pending.popleft() for _ in range(min(AUDIT_BATCH, len(queue.pending)))
                    ]
                if not batch:
                    return written
                try:
                    self._write_audit(batch)
                except BaseException:
                    with queue.ready:
                        queue.pending.extendleft(reversed(batch))
                    raise
                written += len(batch)

    def _close_audit(self) -> None:
        """Stop the writer thread and write what is left (Store.close)."""
        queue: _AuditQueue | None = self.__dict__.get("_audit")
        if queue is None:
            return
        with queue.ready:
            queue.closed = True
            queue.ready.notify()
        if queue.thread is not None:
            queue.thread.join()
        try:
            self.flush_api_calls()
        except StoreError as exc:
            log.error(
                "api_audit_lost_at_close", records=len(queue.pending), error=type(exc).__name__
            )

    def _write_audit_batches(self) -> None:
        queue = self._audit_queue()
        while True:
            with queue.ready:
                if not queue.closed and len(queue.pending) < AUDIT_BATCH:
                    queue.ready.wait(AUDIT_FLUSH_SECONDS)
                closed = queue.closed
            try:
                self.flush_api_calls()
            except Exception as exc:  # kept queued; the thread must live on
                log.warning(
                    "api_audit_failed", records=len(queue.pending), error=type(exc).__name__
                )
                if not closed:
                    with queue.ready:
                        queue.ready.wait(AUDIT_FLUSH_SECONDS)
            if closed:
                return

    def _write_audit(self, batch: list[dict[str, Any]]) -> None:
        with self._write() as conn:
            conn.execute(sa.insert(api_audit), [_columns(record) for record in batch])
            _mark_used(conn, batch)

    def record_api_call(
        self,
        *,
        token_id: int | None,
        token_name: str | None,
        role: str | None,
        method: str,
        route: str,
        status: int,
        duration_ms: int,
    ) -> int:
        """Append an audit record (and mark the token used), in one transaction, now."""
        record = _record(token_id, token_name, role, method, route, status, duration_ms)
        with self._write() as conn:
            audit_id = conn.scalar(
                sa.insert(api_audit).values(_columns(record)).returning(api_audit.c.id)
            )
            _mark_used(conn, [record])
        assert audit_id is not None
        return int(audit_id)

    def list_api_calls(
        self,
        *,
        token_name: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[AuditRow]:
        """Audit records, newest first (those still queued written first)."""
        self.flush_api_calls()
        query = sa.select(api_audit).order_by(api_audit.c.id.desc()).limit(limit)
        if token_name is not None:
            query = query.where(api_audit.c.token_name == token_name)
        if since is not None:
            query = query.where(api_audit.c.ts >= since)
        with self._read() as conn:
            return [_audit_row(row) for row in conn.execute(query)]

    def prune_api_calls(self, *, before: datetime) -> int:
        """Delete audit records older than `before` (retention); returns how many."""
        with self._write() as conn:
            return conn.execute(sa.delete(api_audit).where(api_audit.c.ts < before)).rowcount

    def expire_api_records(self, *, audit_before: datetime) -> Expired:
        """Delete audit records older than `audit_before` and every expired dashboard
        session, in one transaction (the daemon's daily `api-records` job)."""
        with self._write() as conn:
            audit = conn.execute(sa.delete(api_audit).where(api_audit.c.ts < audit_before))
            sessions = conn.execute(
                sa.delete(api_sessions).where(api_sessions.c.expires_at <= utcnow())
            )
            return Expired(audit=audit.rowcount, sessions=sessions.rowcount)
