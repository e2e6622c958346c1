"""The audit log of the admin API: who called what, when, and how it ended.

A record names the token (name and role), the method, the route's path template
(`/api/v1/erasures/{request_id}`, never the path as sent, nor the query string) and the
status. Bodies and query values may carry personal data and are never recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.schema import api_audit, api_tokens


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


class AuditMixin(StoreBase):
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
        """Append an audit record (and mark the token used), in one transaction."""
        now = utcnow()
        with self._write() as conn:
            audit_id = conn.scalar(
                sa.insert(api_audit)
                .values(
                    ts=now,
                    token_name=token_name,
                    role=role,
                    method=method[:16],
                    route=route[:200],
                    status=status,
                    duration_ms=max(0, duration_ms),
                )
                .returning(api_audit.c.id)
            )
            if token_id is not None:
                conn.execute(
                    sa.update(api_tokens)
                    .where(api_tokens.c.id == token_id)
                    .values(last_used_at=now)
                )
        assert audit_id is not None
        return int(audit_id)

    def list_api_calls(
        self,
        *,
        token_name: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[AuditRow]:
        """Audit records, newest first."""
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
