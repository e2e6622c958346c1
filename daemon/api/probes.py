"""Probes and metrics: /healthz (alive), /readyz (store and connectors), /metrics.

/metrics is public by default (`[api] metrics_public`): it holds customer ids and
counts, never personal data, and Prometheus scrapes without credentials. What it
reports is daemon/api/metrics.py, imported (with prometheus_client) at the first scrape.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response

from daemon.api.context import ApiContext, context
from daemon.api.models import Health, Readiness
from daemon.store import EventLevel, RunStatus, StoreError

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]
# prometheus_client's CONTENT_TYPE_LATEST, the format generate_latest writes (named here
# for the OpenAPI document without importing prometheus_client; a test compares them).
METRICS_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"


def _systems(ctx: ApiContext) -> list[str]:
    return sorted(ctx.settings.systems.model_dump(exclude_none=True))


Outcome = Literal["ok", "failing", "unknown"]


def connector_outcomes(ctx: ApiContext, *, recent: int = 50) -> dict[str, Outcome]:
    """Per configured system: `ok` when the latest sync that used it completed, `failing`
    when it failed on that system, `unknown` when no recent run tells."""
    outcome: dict[str, Outcome] = dict.fromkeys(_systems(ctx), "unknown")
    bindings = {c.id: set(c.bindings()) for c in ctx.settings.customers}
    for run in ctx.store.list_runs(limit=recent):
        pending = {s for s, v in outcome.items() if v == "unknown"}
        if not pending:
            break
        if run.kind != "sync" or run.finished_at is None:
            continue
        used = pending & bindings.get(run.customer_id or "", pending)
        if run.status is RunStatus.COMPLETED:
            outcome.update(dict.fromkeys(used, "ok"))
        elif run.status is RunStatus.FAILED:
            errors = ctx.store.run_events(run_id=run.id, min_level=EventLevel.ERROR)
            outcome.update(dict.fromkeys(used & {e.system for e in errors if e.system}, "failing"))
    return outcome


@router.get("/healthz", summary="Alive (no auth)")
def healthz() -> Health:
    return Health(status="alive")


@router.get(
    "/readyz", summary="Ready: the store answers (no auth)", responses={503: {"model": Readiness}}
)
def readyz(ctx: Ctx, response: Response) -> Readiness:
    try:
        connectors = connector_outcomes(ctx)
    except StoreError:
        response.status_code = 503
        return Readiness(
            status="not_ready",
            store="unavailable",
            connectors=dict.fromkeys(_systems(ctx), "unknown"),
        )
    return Readiness(status="ready", store="ok", connectors=connectors)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}},
)
def metrics(request: Request) -> Response:
    from daemon.api.metrics import exposition

    return Response(exposition(request.app.state.ctx), media_type=METRICS_CONTENT_TYPE)
