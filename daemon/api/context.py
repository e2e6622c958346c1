"""What the endpoints work with: the daemon's services, and the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from fastapi import Request

from daemon.api.changes import CachedReads
from daemon.api.errors import ApiError
from daemon.api.ratelimit import FailureLimiter
from daemon.api.settings import ApiConfig
from daemon.config import CustomerConfig, Settings
from daemon.store import Role, Store

if TYPE_CHECKING:
    from daemon.erasure import ErasureService
    from daemon.ledger import Ledger


class SyncRunner(Protocol):
    """The part of daemon.sync.SyncService the API uses."""

    async def sync(self, customer_config: CustomerConfig, *, trigger: str) -> object: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Principal:
    """The caller, as its token says: name (recorded on everything it does) and role."""

    token_id: int
    name: str
    role: Role


@dataclass(kw_only=True)
class ApiContext:
    settings: Settings
    config: ApiConfig
    store: Store
    # Failed authentication per client address (429 past the limit; counted in /metrics).
    limiter: FailureLimiter
    sync_service: SyncRunner | None = None
    erasure_service: ErasureService | None = None
    ledger: Ledger | None = None
    # The daemon's connectors, for their request, retry and 429 counters in /metrics.
    connectors: Mapping[str, object] = field(default_factory=dict)
    # Responses of read endpoints kept while the store is unchanged (create_app makes it).
    reads: CachedReads = field(init=False)
    # Syncs started by POST /api/v1/sync: referenced until done (asyncio keeps only weak refs).
    background: set[asyncio.Task[object]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.reads = CachedReads(self.store)

    def customer(self, customer_id: str) -> CustomerConfig:
        """A configured customer; 422 otherwise (it is a value the caller sent)."""
        for customer in self.settings.customers:
            if customer.id == customer_id:
                return customer
        raise ApiError(422, "unknown_customer", "no such customer is configured")


# The dependencies are coroutines although they never wait: FastAPI runs a plain
# function dependency in a worker thread, a hand-off (and a GIL switch) per request each.
async def context(request: Request) -> ApiContext:
    """FastAPI dependency: the app's ApiContext."""
    return cast(ApiContext, request.app.state.ctx)


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (set by the AccessControl middleware)."""
    found = request.scope.get("state", {}).get("principal")
    if not isinstance(found, Principal):
        raise ApiError(401, "unauthorized", "a valid bearer token is needed")
    return found
