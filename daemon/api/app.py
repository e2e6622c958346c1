"""create_app: the admin API, metrics and dashboard as one FastAPI application."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from daemon.api import access, dashboard, errors, probes, routes_erasure, routes_ops
from daemon.api.auth import AccessControl
from daemon.api.context import ApiContext, SyncRunner
from daemon.api.ratelimit import FailureLimiter
from daemon.api.settings import ApiConfig, api_config
from daemon.config import Settings
from daemon.store import Store

if TYPE_CHECKING:
    from daemon.erasure import ErasureService
    from daemon.ledger import Ledger

DESCRIPTION = """\
The admin API of pdsync. Send `Authorization: Bearer pds_…` (make a token with
`pdsync tokens create NAME --role admin|operator|auditor`). Roles: **auditor** reads runs,
logs, erasures, disputes, tasks (without instructions), certificates and the ledger;
**operator** also syncs, resolves disputes and completes manual tasks (and reads their
instructions); **admin** also creates, approves and cancels erasures. Every call is
recorded in the audit log under the token's name. Failed authentication is limited per
client address: past the limit, 429 with `Retry-After`. Errors are
`{"error": code, "detail": message}` and never repeat what was sent.
"""


# No request of this API needs more; a larger body gets 413 before it is read.
MAX_BODY_BYTES = 64 * 1024


def _version() -> str:
    try:
        return metadata.version("pdsync")
    except metadata.PackageNotFoundError:
        return "0"


ROUTERS = (probes.router, routes_ops.router, routes_erasure.router, dashboard.router)


def _check_access_table(app: FastAPI) -> None:
    """Every route is in access.ACCESS and every entry has a route: none forgotten."""
    served: set[access.Endpoint] = {("GET", app.openapi_url or "")}
    for router in ROUTERS:
        for route in router.routes:
            path, methods = getattr(route, "path", None), getattr(route, "methods", None)
            if isinstance(path, str) and methods:
                served |= {(str(m), path) for m in methods if m != "HEAD"}
    missing = served - set(access.ACCESS)
    stale = set(access.ACCESS) - served
    if missing or stale:
        raise RuntimeError(
            f"daemon/api/access.py is out of step with the routes: not listed {sorted(missing)},"
            f" no such route {sorted(stale)}"
        )


def _openapi(app: FastAPI, config: ApiConfig) -> dict[str, Any]:
    """The OpenAPI document, with the bearer scheme and each operation's roles."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "pds_…"}
        }
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                allowed = access.allowed_roles(
                    (method.upper(), path), metrics_public=config.metrics_public
                )
                operation["x-roles"] = access.describe(allowed)
                if allowed is not None:
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: Settings,
    store: Store,
    *,
    sync_service: SyncRunner | None = None,
    erasure_service: ErasureService | None = None,
    ledger: Ledger | None = None,
    config: ApiConfig | None = None,
    connectors: Mapping[str, object] | None = None,
) -> FastAPI:
    """The app serving /api/v1, /healthz, /readyz, /metrics, /dashboard and /docs.

    `store` is the daemon's own (shared, thread-safe); the services are optional: the
    endpoints that need a missing one answer 503. `config` defaults to settings.api.
    Raises RuntimeError when a route is missing from the access table.
    """
    config = config or api_config(settings)
    ctx = ApiContext(
        settings=settings,
        config=config,
        store=store,
        limiter=FailureLimiter(
            burst=config.auth_failures_burst, per_minute=config.auth_failures_per_minute
        ),
        sync_service=sync_service,
        erasure_service=erasure_service,
        ledger=ledger,
        connectors=dict(connectors or {}),
    )
    app = FastAPI(
        title="pdsync admin API",
        version=_version(),
        description=DESCRIPTION,
        docs_url=None,  # /docs is ours: Swagger UI would load its assets from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.ctx = ctx
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    _check_access_table(app)
    app.openapi = lambda: _openapi(app, config)  # type: ignore[method-assign]
    app.add_middleware(AccessControl, ctx=ctx)
    return app
