"""The admin HTTP API, Prometheus metrics and the read-only ops dashboard, in one app.

    from daemon.api import create_app
    app = create_app(settings, store, sync_service=sync, erasure_service=erasures,
                     ledger=ledger)

The daemon serves it on its own event loop (daemon/api/server.py). Who may call what is
one table, daemon/api/access.py. Importing this package is cheap: FastAPI is loaded
only when `create_app` is first used, so the config can import ApiConfig from here.

Modules: settings ([api] config), access (roles and the endpoint matrix), auth
(authentication, authorisation and the audit log, as ASGI middleware), ratelimit
(failed authentication per client address: 429 past the limit), errors (error
bodies without data), models (request and response bodies), routes_ops and
routes_erasure (the API), probes (healthz, readyz, metrics), metrics (what /metrics
reports, with prometheus_client: imported at the first scrape), dashboard (HTML, its
Jinja2 templates loaded for the first page), server (uvicorn inside the daemon).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.api.settings import ApiConfig, api_config

if TYPE_CHECKING:
    from daemon.api.app import create_app

__all__ = ["ApiConfig", "api_config", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from daemon.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
