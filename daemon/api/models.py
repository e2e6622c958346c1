"""Request and response bodies of the API.

Responses carry ids, states, counts, field and system names, and masked identifiers;
free text that people typed (reasons, notes) and event details are passed through the
log redaction on the way out, as a last line of defence. Requests refuse unknown keys
and bound every size.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from daemon.logs import redact_text, scrub
from daemon.reconcile import REVIEWS
from daemon.store import AuditRow, DisputeRow, EventRow, RunRow, TaskRow

CUSTOMER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SYSTEM_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(BaseModel):
    """Every error: a short code and a message (or, for 422, where the problems are)."""

    error: str
    detail: str | list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    store: Literal["ok", "unavailable"]
    # Per system: the outcome of the most recent sync that used it.
    connectors: dict[str, Literal["ok", "failing", "unknown"]]


class LastSync(BaseModel):
    run_id: str
    status: str
    started_at: datetime
    finished_at: datetime | None


class CustomerOut(BaseModel):
    id: str
    systems: list[str]
    last_sync: LastSync | None
    links: int
    open_disputes: int
    open_tasks: int
    quarantined: int
    pending_ops: int


class RunOut(BaseModel):
    id: str
    kind: str
    customer: str | None
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    summary: dict[str, Any]

    @classmethod
    def of(cls, row: RunRow) -> RunOut:
        seconds = (row.finished_at - row.started_at).total_seconds() if row.finished_at else None
        return cls(
            id=row.id,
            kind=row.kind,
            customer=row.customer_id,
            trigger=row.trigger,
            status=str(row.status),
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=seconds,
            summary=scrub(dict(row.summary)),
        )


class EventOut(BaseModel):
    id: int
    run_id: str
    ts: datetime
    level: str
    customer: str | None
    system: str | None
    event: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, row: EventRow) -> EventOut:
        return cls(
            id=row.id,
            run_id=row.run_id,
            ts=row.ts,
            level=str(row.level),
            customer=row.customer_id,
            system=row.system,
            event=row.event,
            detail=scrub(dict(row.detail)),
        )


class RunDetail(BaseModel):
    run: RunOut
    events: list[EventOut]


class DisputeOut(BaseModel):
    id: int
    customer: str
    link_id: str
    field: str
    systems: list[str] = Field(
        description="The systems that disagree (values stay in the systems); for a review"
        " of who a record is, the answers it takes: `separate` or `same:` and a contact."
    )
    review: bool = Field(
        default=False,
        description="A question of who a record is (`_ambiguous_match`,"
        " `_possible_duplicate`): the record is held until it is answered.",
    )
    answers: dict[str, str] = Field(
        default_factory=dict,
        description="For a review: each answer and the records it stands for"
        " (system:external id, never a value).",
    )
    status: str
    opened_at: datetime
    resolved_at: datetime | None
    winner: str | None
    resolved_by: str | None
    carried_out: bool = Field(
        default=False, description="The next sync put the winner's value everywhere."
    )

    @classmethod
    def of(cls, row: DisputeRow) -> DisputeOut:
        resolution = row.resolution or {}
        return cls(
            id=row.id,
            customer=row.customer_id,
            link_id=row.link_id,
            field=row.field,
            systems=sorted(row.fingerprints),
            review=row.field in REVIEWS,
            answers=dict(row.fingerprints) if row.field in REVIEWS else {},
            status=str(row.status),
            opened_at=row.opened_at,
            resolved_at=row.resolved_at,
            winner=resolution.get("winner"),
            resolved_by=resolution.get("by"),
            carried_out=bool(resolution.get("carried_out")),
        )


class ResolveIn(_In):
    winner: str = Field(
        pattern=r"^(?:[a-z][a-z0-9_]{0,31}|same:[0-9a-f]{8})$",
        description="The system whose value stands; the next sync carries it everywhere."
        " For a review of who a record is: `separate` (a contact of its own) or"
        " `same:XXXXXXXX` (the contact it is).",
    )


class TaskOut(BaseModel):
    id: int
    customer: str
    system: str
    link_id: str
    op_kind: str
    status: str
    created_at: datetime
    closed_at: datetime | None
    note: str | None

    @classmethod
    def of(cls, row: TaskRow) -> TaskOut:
        return cls(
            id=row.id,
            customer=row.customer_id,
            system=row.system,
            link_id=row.link_id,
            op_kind=row.op_kind,
            status=str(row.status),
            created_at=row.created_at,
            closed_at=row.closed_at,
            note=redact_text(row.note) if row.note else None,
        )


class TaskDetail(TaskOut):
    instruction: str  # names a person: operators and admins only


class TaskDoneIn(_In):
    note: str | None = Field(default=None, max_length=500, description="No personal data.")


class SyncIn(_In):
    customer: str | None = Field(
        default=None, pattern=CUSTOMER_PATTERN, description="All if absent."
    )
    wait: bool = Field(default=False, description="Answer when the runs have ended.")


class SyncRun(BaseModel):
    customer: str
    run_id: str | None  # None: queued behind a run of the same customer
    status: str


class SyncOut(BaseModel):
    trigger: str  # also on the runs: GET /api/v1/runs?trigger=...
    runs: list[SyncRun]


class Finding(BaseModel):
    problem: str
    seq: int | None
    checkpoint_size: int | None
    detail: str


class LedgerReport(BaseModel):
    ok: bool
    rows: int
    checkpoints: int
    findings: list[Finding]


class AuditOut(BaseModel):
    id: int
    ts: datetime
    token_name: str | None
    role: str | None
    method: str
    route: str
    status: int
    duration_ms: int

    @classmethod
    def of(cls, row: AuditRow) -> AuditOut:
        return cls(
            id=row.id,
            ts=row.ts,
            token_name=row.token_name,
            role=row.role,
            method=row.method,
            route=row.route,
            status=row.status,
            duration_ms=row.duration_ms,
        )


Email = Annotated[str, StringConstraints(max_length=320)]
Phone = Annotated[str, StringConstraints(max_length=64)]
Name = Annotated[str, StringConstraints(max_length=200)]
# An item of an erasure plan (daemon.erasure.item_id): "zisson:k3f7q2ma".
ItemId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}:[a-z2-7]{8}$")]


class ErasureIn(_In):
    """Erase one data subject (`scope: subject`, with identifiers) or a whole customer."""

    customer: str = Field(pattern=CUSTOMER_PATTERN)
    scope: Literal["subject", "customer"]
    emails: list[Email] = Field(default_factory=list, max_length=20)
    phones: list[Phone] = Field(default_factory=list, max_length=20)
    names: list[Name] = Field(default_factory=list, max_length=20)
    reason: str = Field(
        min_length=1, max_length=500, description="Goes on the certificate: no personal data."
    )
    include: list[ItemId] = Field(
        default_factory=list,
        max_length=200,
        description="Ambiguous items to erase all the same, by their ids in a plan "
        "(`pdsync erase subject ... --plan`); a subject erasure only.",
    )


class IncludeIn(_In):
    """Ambiguous items of a request to erase all the same, by their ids in its plan."""

    items: list[ItemId] = Field(min_length=1, max_length=200)


class MatchedOut(BaseModel):
    """One of the subject's identifiers an item holds, masked, and what it is worth."""

    kind: Literal["email", "phone", "name"]
    identifier: str  # masked
    strength: Literal["personal", "shared", "name"]


class ErasureItemOut(BaseModel):
    """An item an erasure found: erased (pending until done), or ambiguous and left
    alone unless an admin includes it by `id`."""

    id: str  # as `include` takes it
    system: str
    kind: str
    status: str  # pending | done | manual | failed | ambiguous
    phase: str  # plan | sweep
    matched: list[MatchedOut]
    included_by: str | None
    # A whole-customer erasure's item that another customer holds too (mail between the
    # two in a shared mailbox, or in the other's folders): it matched no identifier.
    held_by_others: bool = False


class Masked(BaseModel):
    emails: list[str]
    phones: list[str]
    names: list[str]


class Progress(BaseModel):
    total: int
    done: int
    manual: int
    failed: int
    pending: int


class SystemOutcome(BaseModel):
    outcome: str
    counts: dict[str, int]
    verified_absent: bool
    remaining: int
    verified_at: str | None
    left_alone: dict[str, int] = Field(
        default_factory=dict, description="Ambiguous items left alone, by kind."
    )


class ErasureOut(BaseModel):
    id: str
    customer: str
    scope: str
    state: str
    requested_by: str
    reason: str
    requested_at: datetime
    deadline: datetime
    overdue: bool
    approved_by: str | None
    approved_at: datetime | None
    completed_at: datetime | None
    masked: Masked
    # Per identifier (e-mails, phones, names: the same order as `masked`): personal,
    # shared or name, as the plan weighed it; empty before the plan.
    strengths: dict[str, list[str]]
    plan: dict[str, dict[str, int]]  # per system, what is erased, by kind
    ambiguous: dict[str, dict[str, int]]  # per system, left alone unless included, by kind
    outcome: dict[str, SystemOutcome]
    progress: Progress
    certificate: bool  # GET /api/v1/certificates/{id} has it
    error: str | None
    # Ids to include once the plan exists (a request still `received`).
    includes: list[str] = Field(default_factory=list)
    # The ambiguous and included items with their evidence (one request's view only).
    items: list[ErasureItemOut] | None = None
