"""Records the store returns, and the states they move through.

Rows are frozen snapshots: changing one means calling the store. None of them carries
personal data; encrypted blobs (quarantined payloads, task instructions) are not part
of a row and are decrypted only on explicit request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    AWAITING_APPROVAL = "awaiting_approval"  # stopped before deleting too much
    INTERRUPTED = "interrupted"  # its process died; set by mark_interrupted_runs


class EventLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]

    def and_above(self) -> tuple[EventLevel, ...]:
        return tuple(level for level in EventLevel if level.rank >= self.rank)


_LEVEL_RANK = {
    EventLevel.DEBUG: 10,
    EventLevel.INFO: 20,
    EventLevel.WARNING: 30,
    EventLevel.ERROR: 40,
}


class DisputeStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class TaskStatus(StrEnum):
    OPEN = "open"
    DONE = "done"


class JournalStatus(StrEnum):
    PENDING = "pending"  # begun; a crash here means "find out whether it happened"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True, slots=True)
class JournalIntent:
    """A change about to be attempted: `intent` is the plan's op id (see journal_attempts)."""

    intent: str
    link_id: str
    system: str
    kind: str


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRecord:
    """A run event to be written with others in one transaction (see record_applied).
    `detail` must already be scrubbed of personal data."""

    event: str
    level: EventLevel | str = EventLevel.INFO
    system: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


# (link_id, system, external_id, version, fingerprints), as set_members takes them.
MemberValues = tuple[str, str, str, str | None, Mapping[str, str]]


@dataclass(kw_only=True, slots=True)
class AppliedChunk:
    """What the answers to one chunk of a sync's operations come to, written in one
    transaction by record_applied: the links' members (set and removed), the journal
    entries finished as (op_id, status, external_id), and the run's events."""

    members: list[MemberValues] = field(default_factory=list)
    removals: list[tuple[str, str]] = field(default_factory=list)  # (link_id, system)
    finished: list[tuple[str, JournalStatus, str | None]] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRow:
    id: str
    kind: str
    customer_id: str | None
    trigger: str
    status: RunStatus
    instance_id: str  # the Store instance (process) that started the run
    started_at: datetime
    finished_at: datetime | None
    summary: Mapping[str, Any] = field(default_factory=dict)
    quiet: bool = False  # completed with nothing to do or say (see finish_run)

    @property
    def changes(self) -> int:
        """What the run changed in the systems: a sync's applied operations, a retention
        run's deletions (per system, `results.applied`)."""
        applied = self.summary.get("applied")
        if isinstance(applied, Mapping):
            return sum(int(n) for k, n in applied.items() if str(k).endswith(".applied"))
        if self.kind == "retention":
            return sum(
                int(dict(part.get("results") or {}).get("applied", 0))
                for part in self.summary.values()
                if isinstance(part, Mapping)
            )
        return 0


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRow:
    id: int
    run_id: str
    ts: datetime
    level: EventLevel
    customer_id: str | None
    system: str | None
    event: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class QuarantineRow:
    """A record a system returned that could not be read; its payload stays encrypted."""

    id: int
    customer_id: str
    system: str
    external_id: str | None
    reason: str
    first_seen: datetime
    last_seen: datetime
    count: int
    released_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class DisputeRow:
    id: int
    customer_id: str
    link_id: str
    field: str
    fingerprints: Mapping[str, str]  # per system
    status: DisputeStatus
    opened_at: datetime
    resolved_at: datetime | None
    # {"winner": system or None, "by": who}; None while open.
    resolution: Mapping[str, Any] | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRow:
    """A change an operator must make by hand; the instruction stays encrypted."""

    id: int
    customer_id: str
    system: str
    link_id: str
    op_kind: str
    op_fingerprint: str
    status: TaskStatus
    created_at: datetime
    closed_at: datetime | None
    note: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ApprovalRow:
    id: int
    customer_id: str
    kind: str
    max_count: int
    approved_by: str
    reason: str
    created_at: datetime
    consumed_at: datetime | None
    consumed_by_run: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class JournalRow:
    op_id: str
    run_id: str
    customer_id: str
    link_id: str
    system: str
    kind: str
    status: JournalStatus
    external_id: str | None
    created_at: datetime
    finished_at: datetime | None


class Counts(TypedDict):
    """What `pdsync status` shows for one customer."""

    links: int
    members: dict[str, int]  # per system
    open_disputes: int
    open_tasks: int
    quarantined: int  # not yet released
    pending_ops: int


class ErasureState(StrEnum):
    RECEIVED = "received"
    PLANNED = "planned"
    AWAITING_APPROVAL = "awaiting_approval"  # a second admin must approve
    EXECUTING = "executing"
    VERIFYING = "verifying"  # waiting for read-backs (and manual tasks) to show absence
    COMPLETED = "completed"
    FAILED = "failed"  # needs a person
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True, slots=True)
class ErasureRow:
    id: str
    customer_id: str
    scope: str  # "subject" | "customer"
    state: ErasureState
    requested_by: str
    reason: str
    requested_at: datetime
    deadline: datetime
    approved_by: str | None
    approved_at: datetime | None
    masked: Mapping[str, Any]  # masked identifiers, for people and the certificate
    plan: Mapping[str, Any]  # per system: counts by kind
    outcome: Mapping[str, Any]  # per system: outcome, counts, verified
    certificate: str | None  # canonical JSON, once issued
    error: str | None
    updated_at: datetime
    completed_at: datetime | None
    has_identifiers: bool
    # How the plan weighed the subject's identifiers: [{kind, position, strength}].
    strengths: tuple[Mapping[str, Any], ...] = ()
    # Items an admin included before there was a plan: [{item, by, at}].
    includes: tuple[Mapping[str, Any], ...] = ()
    card_documents: int = 0  # documents deleted with the card (whole-customer erasure)


@dataclass(frozen=True, kw_only=True, slots=True)
class ErasureItemRow:
    system: str
    kind: str
    item_id: str
    scope: str
    phase: str  # "plan" | "sweep" (found again after executing the plan)
    # pending | done | manual | failed, or ambiguous: found only by shared identifiers
    # or a name, and left alone unless an admin includes it (then pending).
    status: str
    done_at: datetime | None
    # Why it was found: [{kind, position, strength}] (daemon.identity.Evidence.to_list);
    # None for a whole-customer erasure, where everything goes.
    evidence: tuple[Mapping[str, Any], ...] | None = None
    included_by: str | None = None
    included_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewErasureItem:
    """An item located for an erasure, as `Store.add_erasure_items` records it."""

    system: str
    kind: str
    item_id: str
    scope: str
    status: str = "pending"  # or "ambiguous"
    evidence: tuple[Mapping[str, Any], ...] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkItem:
    id: int
    kind: str  # "sync" | "retention" | "erasures" | "checkpoint" | "deadlines"
    key: str  # the customer id, or "all"
    state: str  # queued | running | done | failed
    attempts: int
    claimed_by: str | None
    lease_until: datetime | None
    enqueued_at: datetime
    finished_at: datetime | None
    trigger: str | None = None  # None: the leader's schedule; else who asked
    error: str | None = None  # why it failed (an exception's type name)


@dataclass(frozen=True, kw_only=True, slots=True)
class InstanceRow:
    id: str
    pid: int
    host: str
    started_at: datetime
    last_seen: datetime
    is_leader: bool
