"""The proof side of the API: erasure requests, deletion certificates, ledger verification.

Creating, approving, cancelling an erasure and including ambiguous items in it is for
admins; the request is recorded under the caller's token name, and a second admin
(another token name) must approve a whole-customer erasure. The daemon's erasure worker
carries requests out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from daemon.api.context import ApiContext, Principal, context, principal
from daemon.api.errors import ApiError, refuse_personal_data
from daemon.api.models import (
    CUSTOMER_PATTERN,
    ErasureIn,
    ErasureItemOut,
    ErasureOut,
    Finding,
    IncludeIn,
    LedgerReport,
    Masked,
    MatchedOut,
    Problem,
    Progress,
    SystemOutcome,
)
from daemon.certificate import Certificate, render_pdf
from daemon.certificate.evidence import masked_matches
from daemon.config import ConfigError
from daemon.erasure import ErasureError, ErasureService, item_id
from daemon.ledger import Verifier, verify_ledger
from daemon.ledger.witness import WitnessError
from daemon.logs import redact_text
from daemon.normalize import BadIdentifier, parse_subject
from daemon.proof import trusted_verifiers, witness_from
from daemon.store import ErasureItemRow, ErasureRow, ErasureState, NotFound, Store

router = APIRouter(prefix="/api/v1", responses={401: {"model": Problem}, 403: {"model": Problem}})

Ctx = Annotated[ApiContext, Depends(context)]
Who = Annotated[Principal, Depends(principal)]
RequestId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
_FINAL = (ErasureState.COMPLETED, ErasureState.CANCELLED)
_404: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
_409: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 409: {"model": Problem}}


def erasure_out(
    store: Store, row: ErasureRow, *, now: datetime | None = None, with_items: bool = False
) -> ErasureOut:
    """A request as the API and the dashboard show it: masked identifiers, counts; with
    `with_items`, its ambiguous and included items with their evidence."""
    now = now or datetime.now(UTC)
    located = store.erasure_items(row.id)
    items = Counter(item.status for item in located)
    masked = row.masked or {}
    weighed = {(str(m["kind"]), int(m["position"])): str(m["strength"]) for m in row.strengths}
    ambiguous: dict[str, dict[str, int]] = {}
    for item in located:
        if item.status == "ambiguous":
            kinds = ambiguous.setdefault(item.system, {})
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
    decided = [i for i in located if i.status == "ambiguous" or i.included_by]
    return ErasureOut(
        id=row.id,
        customer=row.customer_id,
        scope=row.scope,
        state=str(row.state),
        requested_by=row.requested_by,
        reason=redact_text(row.reason),
        requested_at=row.requested_at,
        deadline=row.deadline,
        overdue=row.deadline < now and row.state not in _FINAL,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        completed_at=row.completed_at,
        masked=Masked(
            emails=list(masked.get("emails", ())),
            phones=list(masked.get("phones", ())),
            names=list(masked.get("names", ())),
        ),
        strengths={
            f"{kind}s": [
                weighed.get((kind, i), "name" if kind == "name" else "")
                for i in range(len(masked.get(f"{kind}s", ())))
            ]
            for kind in ("email", "phone", "name")
        }
        if row.strengths
        else {},
        plan={s: {k: int(n) for k, n in kinds.items()} for s, kinds in row.plan.items()},
        ambiguous=ambiguous,
        outcome={
            system: SystemOutcome(
                outcome=str(o.get("outcome", "")),
                counts={k: int(n) for k, n in o.get("counts", {}).items()},
                verified_absent=bool(o.get("verified_absent")),
                remaining=int(o.get("remaining", 0)),
                verified_at=o.get("verified_at"),
                left_alone={k: int(n) for k, n in o.get("left_alone", {}).items()},
            )
            for system, o in row.outcome.items()
        },
        progress=Progress(
            total=sum(items.values()),
            done=items["done"],
            manual=items["manual"],
            failed=items["failed"],
            pending=items["pending"],
        ),
        certificate=row.certificate is not None,
        error=redact_text(row.error) if row.error else None,
        includes=[str(i["item"]) for i in row.includes]
        if row.state is ErasureState.RECEIVED
        else [],
        items=[_item_out(i, masked, scope=row.scope) for i in decided] if with_items else None,
    )


def _item_out(item: ErasureItemRow, masked: Mapping[str, Any], *, scope: str) -> ErasureItemOut:
    return ErasureItemOut(
        id=item_id(item.system, item.kind, item.item_id),
        system=item.system,
        kind=item.kind,
        status=item.status,
        phase=item.phase,
        matched=[
            MatchedOut(kind=kind, identifier=shown, strength=strength)  # type: ignore[arg-type]
            for kind, shown, strength in masked_matches(item.evidence or (), masked)
        ],
        included_by=item.included_by,
        # In a whole-customer erasure that is the one reason an item is ambiguous.
        held_by_others=scope == "customer",
    )


def _service(ctx: ApiContext) -> ErasureService:
    if ctx.erasure_service is None:
        raise ApiError(503, "erasure_unavailable", "this server runs no erasure service")
    return ctx.erasure_service


def _get(store: Store, request_id: str) -> ErasureRow:
    try:
        return store.get_erasure(request_id)
    except NotFound:
        raise ApiError(404, "not_found", "no such erasure request") from None


@router.get("/erasures", summary="Erasure requests, newest first")
def list_erasures(
    ctx: Ctx,
    customer: Annotated[str | None, Query(pattern=CUSTOMER_PATTERN)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> list[ErasureOut]:
    rows = ctx.store.list_erasures(customer_id=customer, open_only=open_only, limit=limit)
    now = datetime.now(UTC)
    return [erasure_out(ctx.store, row, now=now) for row in rows]


@router.post(
    "/erasures",
    status_code=201,
    summary="Ask for an erasure (the daemon's worker carries it out)",
    responses={410: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
)
def create_erasure(ctx: Ctx, who: Who, body: ErasureIn) -> ErasureOut:
    service = _service(ctx)
    ctx.customer(body.customer)
    refuse_personal_data(body.reason, "the reason")
    identifiers = body.emails or body.phones or body.names
    if body.scope == "customer":
        if identifiers:
            raise ApiError(422, "invalid_request", "a customer erasure takes no identifiers")
        subject = None
    else:
        try:
            subject = parse_subject(emails=body.emails, phones=body.phones, names=body.names)
        except BadIdentifier as exc:
            raise ApiError(422, "bad_identifier", str(exc).replace("--", "")) from None
    try:
        request_id = service.request(
            body.customer,
            scope=body.scope,
            subject=subject,
            requested_by=who.name,
            reason=body.reason,
            include=body.include,
        )
    except ErasureError as exc:
        raise ApiError(422, "refused", str(exc)) from None
    return erasure_out(ctx.store, ctx.store.get_erasure(request_id), with_items=True)


@router.get(
    "/erasures/{request_id}",
    summary="One erasure request, with its ambiguous items and their evidence",
    responses=_404,
)
def get_erasure(ctx: Ctx, request_id: RequestId) -> ErasureOut:
    return erasure_out(ctx.store, _get(ctx.store, request_id), with_items=True)


@router.post(
    "/erasures/{request_id}/include",
    summary="Erase ambiguous items all the same, by their ids in the plan (not yet executing)",
    responses={**_409, 422: {"model": Problem}, 503: {"model": Problem}},
)
def include_in_erasure(ctx: Ctx, who: Who, request_id: RequestId, body: IncludeIn) -> ErasureOut:
    service = _service(ctx)
    row = _get(ctx.store, request_id)
    if row.state not in (
        ErasureState.RECEIVED,
        ErasureState.PLANNED,
        ErasureState.AWAITING_APPROVAL,
    ):
        raise ApiError(409, "wrong_state", f"the request is {row.state}: too late to include")
    try:
        service.include(row.id, body.items, by=who.name)
    except ErasureError as exc:
        raise ApiError(422, "refused", str(exc)) from None
    return erasure_out(ctx.store, ctx.store.get_erasure(row.id), with_items=True)


@router.post(
    "/erasures/{request_id}/approve",
    summary="Approve a whole-customer erasure (a second admin: not the requester)",
    responses={**_409, 503: {"model": Problem}},
)
def approve_erasure(ctx: Ctx, who: Who, request_id: RequestId) -> ErasureOut:
    service = _service(ctx)
    row = _get(ctx.store, request_id)
    if row.requested_by == who.name:
        raise ApiError(403, "same_admin", "the admin who asked for an erasure cannot approve it")
    if row.state is not ErasureState.AWAITING_APPROVAL:
        raise ApiError(409, "wrong_state", f"the request is {row.state}, not awaiting approval")
    try:
        service.approve(row.id, approver=who.name)
    except ErasureError as exc:
        raise ApiError(409, "wrong_state", str(exc)) from None
    return erasure_out(ctx.store, ctx.store.get_erasure(row.id))


@router.post(
    "/erasures/{request_id}/cancel",
    summary="Cancel a request that has not started erasing",
    responses={**_409, 503: {"model": Problem}},
)
def cancel_erasure(ctx: Ctx, who: Who, request_id: RequestId) -> ErasureOut:
    service = _service(ctx)
    row = _get(ctx.store, request_id)
    try:
        service.cancel(row.id, by=who.name)
    except ErasureError as exc:
        raise ApiError(409, "wrong_state", str(exc)) from None
    return erasure_out(ctx.store, ctx.store.get_erasure(row.id))


@router.get(
    "/certificates/{request_id}",
    summary="A deletion certificate: signed JSON (byte for byte as issued), or PDF",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}, "application/pdf": {}}},
        **_404,
    },
)
def get_certificate(
    ctx: Ctx,
    request_id: RequestId,
    format: Annotated[Literal["json", "pdf"], Query()] = "json",
) -> Response:
    row = _get(ctx.store, request_id)
    if row.certificate is None:
        raise ApiError(404, "no_certificate", f"no certificate yet (the request is {row.state})")
    name = f"pdsync-certificate-{row.id}"
    if format == "pdf":
        pdf = render_pdf(Certificate.from_json(row.certificate.encode("utf-8")))
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
        )
    return Response(
        row.certificate.encode("utf-8"),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
    )


def _verify(ctx: ApiContext) -> LedgerReport:
    verifiers: Mapping[str, Verifier]
    if ctx.ledger is not None:
        verifiers = dict(ctx.ledger.verifiers)
    else:
        try:
            verifiers = trusted_verifiers(ctx.settings)
        except ConfigError:
            raise ApiError(
                503, "ledger_unavailable", "ledger.signing_key is not configured"
            ) from None
    # The witness's checkpoints too: rows removed from the end are found against them.
    try:
        witness = witness_from(ctx.settings)
        external = witness.checkpoints() if witness is not None else []
    except (ConfigError, WitnessError) as exc:
        raise ApiError(503, "witness_unavailable", str(exc)) from None
    report = verify_ledger(ctx.store, verifiers, external=external)
    return LedgerReport(
        ok=report.ok,
        rows=report.rows,
        checkpoints=report.checkpoints,
        findings=[
            Finding(
                problem=f.problem.value,
                seq=f.seq,
                checkpoint_size=f.checkpoint_size,
                detail=f.detail,
            )
            for f in report.findings
        ],
    )


@router.get(
    "/ledger/verify",
    summary="Recompute the ledger and check its signed checkpoints",
    responses={503: {"model": Problem}},
)
def verify_ledger_get(ctx: Ctx) -> LedgerReport:
    return _verify(ctx)


@router.post("/ledger/verify", summary="The same, as POST", responses={503: {"model": Problem}})
def verify_ledger_post(ctx: Ctx) -> LedgerReport:
    return _verify(ctx)
