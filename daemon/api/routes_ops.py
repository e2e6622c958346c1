"""The operational API: customers, runs and their events, disputes, manual tasks, sync now,
and the API's own audit log. Who may call which: daemon/api/access.py."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from daemon.api import filters
from daemon.api.changes import json_body
from daemon.api.context import ApiContext, Principal, context, principal
from daemon.api.errors import ApiError, refuse_personal_data
from daemon.api.models import (
    CUSTOMER_PATTERN,
    AuditOut,
    CustomerOut,
    DisputeOut,
    EventOut,
    LastSync,
    Problem,
    ResolveIn,
    RunDetail,
    RunOut,
    SyncIn,
    SyncOut,
    SyncRun,
    TaskDetail,
    TaskDoneIn,
    TaskOut,
)
from daemon.report import build_report
from daemon.store import NotFound, RunRow, RunStatus, Store

log = structlog.get_logger("pdsync.api")

router = APIRouter(prefix="/api/v1", responses={401: {"model": Problem}, 403: {"model": Problem}})

Ctx = Annotated[ApiContext, Depends(context)]
Who = Annotated[Principal, Depends(principal)]
CustomerQ = Annotated[str | None, Query(pattern=CUSTOMER_PATTERN)]
SinceQ = Annotated[
    str | None, Query(max_length=40, description="24h, 30m, 7d, or an ISO 8601 time")
]
LimitQ = Annotated[int, Query(ge=1, le=1000)]
Id = Annotated[int, Path(ge=1, le=2**62)]
RunId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
_404: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
_409: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 409: {"model": Problem}}
# How long POST /sync waits for its runs to be recorded before answering "queued".
START_WAIT_SECONDS = 2.0


def since_of(text: str | None) -> datetime | None:
    """The `since` filter as a time; 422 when it is neither a duration nor a time."""
    if text is None:
        return None
    try:
        return filters.parse_since(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_since", str(exc)) from None


@router.get("/customers", summary="Customers with their last sync and open casework")
def list_customers(ctx: Ctx) -> list[CustomerOut]:
    # A handful of statements for all customers, not two per customer: the dashboard
    # overview of a fleet of hundreds.
    ids = [c.id for c in ctx.settings.customers]
    all_counts = ctx.store.customer_counts(ids)
    last_syncs = ctx.store.latest_runs(ids, kind="sync")
    customers = []
    for customer in ctx.settings.customers:
        counts = all_counts[customer.id]
        last = last_syncs.get(customer.id)
        customers.append(
            CustomerOut(
                id=customer.id,
                systems=sorted(customer.bindings()),
                last_sync=None
                if last is None
                else LastSync(
                    run_id=last.id,
                    status=str(last.status),
                    started_at=last.started_at,
                    finished_at=last.finished_at,
                ),
                links=counts["links"],
                open_disputes=counts["open_disputes"],
                open_tasks=counts["open_tasks"],
                quarantined=counts["quarantined"],
                pending_ops=counts["pending_ops"],
            )
        )
    return customers


@router.get(
    "/customers/{customer_id}/report",
    summary="How the customer's data is processed: systems, subprocessors, counts, rules",
    responses=_404,
)
def customer_report(
    ctx: Ctx, customer_id: Annotated[str, Path(pattern=CUSTOMER_PATTERN)]
) -> dict[str, Any]:
    """The processing report (daemon/report.py): per system its subprocessor, the
    categories of personal data, how many contacts pdsync keeps in step, the rules that
    delete them and what the system keeps after a deletion; since when; and the last
    30 days of syncs, retention runs and erasures. Counts and rules only, no persons."""
    if customer_id not in {c.id for c in ctx.settings.customers}:
        raise ApiError(404, "not_found", "no such customer is configured")
    residuals = connector_residuals(ctx)
    return build_report(ctx.settings, ctx.store, customer_id, residuals=residuals).to_dict()


def connector_residuals(ctx: ApiContext) -> dict[str, Any]:
    """What each of the daemon's systems keeps after a delete (for reports)."""
    residuals: dict[str, Any] = {}
    for system, connector in ctx.connectors.items():
        listed = getattr(connector, "residuals", None)
        if callable(listed):
            residuals[system] = listed()
    return residuals


_RUNS = TypeAdapter(list[RunOut])


def runs_page(
    store: Store,
    *,
    customer: str | None = None,
    since: datetime | None = None,
    status: RunStatus | None = None,
    kind: str | None = None,
    trigger: str | None = None,
    limit: int = 50,
) -> list[RunOut]:
    """GET /api/v1/runs's answer."""
    refine = status is not None or kind is not None or trigger is not None
    rows = store.list_runs(customer_id=customer, since=since, limit=10_000 if refine else limit)
    rows = [
        r
        for r in rows
        if (status is None or r.status == status)
        and (kind is None or r.kind == kind)
        and (trigger is None or r.trigger == trigger)
    ]
    return [RunOut.of(r) for r in rows[:limit]]


@router.get("/runs", summary="Runs, newest first", response_model=list[RunOut])
async def list_runs(
    ctx: Ctx,
    customer: CustomerQ = None,
    since: SinceQ = None,
    status: RunStatus | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    trigger: Annotated[str | None, Query(max_length=200)] = None,
    limit: LimitQ = 50,
) -> Response:
    # The most read endpoint (dashboards, monitoring): one hand-off to a thread, and
    # none while the store is unchanged (daemon/api/changes.py). `since` is relative to
    # now, so a page with it is never kept.
    moment = since_of(since)

    def render() -> bytes:
        page = runs_page(
            ctx.store,
            customer=customer,
            since=moment,
            status=status,
            kind=kind,
            trigger=trigger,
            limit=limit,
        )
        return json_body(_RUNS, page)

    if moment is not None:
        body = await run_in_threadpool(render)
    else:
        key = ("runs", customer, status, kind, trigger, limit)
        body = await ctx.reads.get(key, render)
    return Response(body, media_type="application/json")


@router.get("/runs/{run_id}", summary="One run with its events", responses=_404)
def get_run(ctx: Ctx, run_id: RunId) -> RunDetail:
    row = ctx.store.get_run(run_id)
    if row is None:
        raise ApiError(404, "not_found", "no such run")
    events = ctx.store.run_events(run_id=row.id)
    return RunDetail(run=RunOut.of(row), events=[EventOut.of(e) for e in events])


@router.get("/logs", summary="Run events, oldest first (the latest `limit` of them)")
def list_logs(
    ctx: Ctx,
    customer: CustomerQ = None,
    level: Annotated[
        str | None, Query(pattern=r"^(debug|info|warning|error)$", description="and above")
    ] = None,
    run: Annotated[str | None, Query(pattern=r"^[0-9a-f-]{36}$")] = None,
    since: SinceQ = None,
    limit: LimitQ = 500,
) -> list[EventOut]:
    events = ctx.store.run_events(
        run_id=run, customer_id=customer, since=since_of(since), min_level=level, limit=limit
    )
    return [EventOut.of(e) for e in events]


@router.get("/disputes", summary="Disputes (field names and systems; values stay put)")
def list_disputes(
    ctx: Ctx, customer: CustomerQ = None, open_only: Annotated[bool, Query(alias="open")] = True
) -> list[DisputeOut]:
    return [
        DisputeOut.of(d) for d in ctx.store.list_disputes(customer_id=customer, open_only=open_only)
    ]


@router.post(
    "/disputes/{dispute_id}/resolve",
    summary="Decide which system's value stands",
    responses={**_409, 422: {"model": Problem}},
)
def resolve_dispute(ctx: Ctx, who: Who, dispute_id: Id, body: ResolveIn) -> DisputeOut:
    found = [d for d in ctx.store.list_disputes(open_only=False) if d.id == dispute_id]
    if not found:
        raise ApiError(404, "not_found", "no such dispute")
    dispute = found[0]
    if body.winner not in dispute.fingerprints:
        raise ApiError(422, "invalid_winner", "the winner must be one of the dispute's systems")
    if not ctx.store.resolve_dispute(dispute.id, winner=body.winner, by=who.name):
        raise ApiError(409, "already_resolved", "the dispute was already resolved")
    if ctx.ledger is not None:
        ctx.ledger.record(
            "dispute.resolved",
            customer_id=dispute.customer_id,
            dispute_id=dispute.id,
            link_id=dispute.link_id,
            field=dispute.field,
            winner=body.winner,
            by=who.name,
        )
    resolved = [d for d in ctx.store.list_disputes(open_only=False) if d.id == dispute_id]
    return DisputeOut.of(resolved[0])


def _task(store: Store, task_id: int) -> TaskOut:
    for row in store.list_tasks(open_only=False):
        if row.id == task_id:
            return TaskOut.of(row)
    raise ApiError(404, "not_found", "no such manual task")


@router.get("/tasks", summary="Manual tasks (without their instructions)")
def list_tasks(
    ctx: Ctx, customer: CustomerQ = None, open_only: Annotated[bool, Query(alias="open")] = True
) -> list[TaskOut]:
    return [TaskOut.of(t) for t in ctx.store.list_tasks(customer_id=customer, open_only=open_only)]


@router.get(
    "/tasks/{task_id}",
    summary="One task with its instruction (names a person)",
    responses={**_404, 410: {"model": Problem}},
)
def get_task(ctx: Ctx, task_id: Id) -> TaskDetail:
    task = _task(ctx.store, task_id)
    return TaskDetail(**task.model_dump(), instruction=ctx.store.task_instruction(task_id))


@router.post(
    "/tasks/{task_id}/done",
    summary="Mark a manual task done",
    responses={**_409, 422: {"model": Problem}},
)
def complete_task(ctx: Ctx, who: Who, task_id: Id, body: TaskDoneIn | None = None) -> TaskOut:
    note = body.note if body is not None else None
    if note:
        refuse_personal_data(note, "the note")
    task = _task(ctx.store, task_id)
    try:
        closed = ctx.store.close_task(
            task_id, f"{note} (by {who.name})" if note else f"by {who.name}"
        )
    except NotFound:
        raise ApiError(404, "not_found", "no such manual task") from None
    if not closed:
        raise ApiError(409, "already_done", "the task was already closed")
    if ctx.ledger is not None:
        ctx.ledger.record(
            "task.done",
            customer_id=task.customer,
            task_id=task.id,
            system=task.system,
            link_id=task.link_id,
            by=who.name,
        )
    return _task(ctx.store, task_id)


def _runs_for(store: Store, customers: list[str], trigger: str) -> dict[str, RunRow]:
    found: dict[str, RunRow] = {}
    for customer in customers:
        for row in store.list_runs(customer_id=customer, limit=20):
            if row.trigger == trigger:
                found[customer] = row
                break
    return found


def _finished(ctx: ApiContext) -> Any:
    def done(task: asyncio.Task[object]) -> None:
        ctx.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "api_sync_failed", task=task.get_name(), error=type(task.exception()).__name__
            )

    return done


@router.post(
    "/sync",
    status_code=202,
    summary="Sync now: one customer, or all",
    responses={200: {"model": SyncOut}, 422: {"model": Problem}, 503: {"model": Problem}},
)
async def sync_now(ctx: Ctx, who: Who, response: Response, body: SyncIn | None = None) -> SyncOut:
    """On a daemon each customer's sync is queued as a work item, carried out by whichever
    instance claims it, never beside another sync of the same customer; one already
    running is waited for first, so the run starts after this request. The runs carry
    the returned `trigger`. 202 with the runs started within two seconds (the others
    `queued`), or with `wait` 200 once every run has ended."""
    request = body or SyncIn()
    service = ctx.sync_service
    if service is None:
        raise ApiError(503, "sync_unavailable", "this server runs no sync service")
    customers = (
        [ctx.customer(request.customer)] if request.customer else list(ctx.settings.customers)
    )
    trigger = f"api:{who.name}:{secrets.token_hex(4)}"
    tasks = []
    for customer in customers:
        task = asyncio.create_task(
            service.sync(customer, trigger=trigger), name=f"sync:{customer.id}"
        )
        ctx.background.add(task)
        task.add_done_callback(_finished(ctx))
        tasks.append(task)
    ids = [c.id for c in customers]
    if request.wait and tasks:
        await asyncio.wait(tasks)
        response.status_code = 200
    deadline = time.monotonic() + START_WAIT_SECONDS
    while True:
        runs = await run_in_threadpool(_runs_for, ctx.store, ids, trigger)
        if len(runs) == len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return SyncOut(
        trigger=trigger,
        runs=[
            SyncRun(customer=c, run_id=runs[c].id, status=str(runs[c].status))
            if c in runs
            else SyncRun(customer=c, run_id=None, status="queued")
            for c in ids
        ],
    )


@router.get("/audit", summary="The API's audit log, newest first")
def list_audit(
    ctx: Ctx,
    token: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{0,63}$")] = None,
    since: SinceQ = None,
    limit: LimitQ = 200,
) -> list[AuditOut]:
    rows = ctx.store.list_api_calls(token_name=token, since=since_of(since), limit=limit)
    return [AuditOut.of(r) for r in rows]
