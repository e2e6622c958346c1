"""Canonical domain records shared by the daemon and every connector.

Connectors read the outside world into these records and apply these operations; the
daemon never sees a vendor's wire format. All records are frozen and keyword-only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

# The fields of a contact that take part in reconciliation, in a fixed order.
SYNC_FIELDS: tuple[str, ...] = (
    "kind",
    "given_name",
    "family_name",
    "display_name",
    "title",
    "department",
    "emails",
    "phones",
    "notes",
)


class ContactKind(StrEnum):
    PERSON = "person"
    DEPARTMENT = "department"


class PhoneType(StrEnum):
    MOBILE = "mobile"
    WORK = "work"
    HOME = "home"
    FAX = "fax"
    OTHER = "other"


class Situation(StrEnum):
    """Where a record stands relative to the stored links (midPoint's vocabulary)."""

    LINKED = "linked"  # a stored link points at it
    UNLINKED = "unlinked"  # no link yet, but exactly one counterpart matched: link it
    UNMATCHED = "unmatched"  # no counterpart anywhere
    DISPUTED = "disputed"  # several candidates or a conflicting change: a person decides
    DELETED = "deleted"  # linked, but gone from this system


class OpKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class OpStatus(StrEnum):
    APPLIED = "applied"  # the system holds the change now
    MANUAL = "manual"  # an operator must make the change; closed by a read-back
    CONFLICT = "conflict"  # the optimistic precondition failed; retried next cycle
    NOT_FOUND = "not_found"  # the target vanished meanwhile
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True, slots=True)
class Phone:
    """A phone number as the system holds it, with its E.164 form where parseable."""

    number: str  # verbatim, exactly as entered
    type: PhoneType = PhoneType.OTHER
    e164: str | None = None  # None: unparseable, kept verbatim and flagged

    @property
    def key(self) -> str:
        return self.e164 or self.number


@dataclass(frozen=True, kw_only=True, slots=True)
class ContactRecord:
    """One contact (a person or a department) as one system holds it."""

    system: str
    external_id: str
    kind: ContactKind = ContactKind.PERSON
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""
    title: str = ""
    department: str = ""
    emails: tuple[str, ...] = ()
    phones: tuple[Phone, ...] = ()
    notes: str = ""
    # Opaque optimistic-concurrency token (Firestore update_time, Zisson version, change key).
    version: str | None = None
    # Ids of this contact in other systems, where the system itself records them.
    system_ids: Mapping[str, str] = field(default_factory=dict)
    # Not data: the identity directory that last counted this record, and the e-mails
    # and phones it counted (daemon/identity.py). Kept here rather than in a table by
    # record: a large customer's table would not fit the CPU caches. Not copied by
    # `replace` (a changed record is counted again), not compared.
    counted: Any = field(default=None, init=False, compare=False, repr=False)

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SYNC_FIELDS}

    def with_values(self, values: Mapping[str, Any]) -> ContactRecord:
        unknown = set(values) - set(SYNC_FIELDS)
        if unknown:
            raise ValueError(f"not a sync field: {', '.join(sorted(unknown))}")
        return replace(self, **dict(values))


@dataclass(frozen=True, kw_only=True, slots=True)
class Rejected:
    """A record a system returned that could not be read into a ContactRecord.

    `reason` names the field and what is wrong with it, never the value; `raw` is the
    payload as received, kept only encrypted (quarantine) so nothing is lost.
    """

    system: str
    external_id: str | None
    reason: str
    raw: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadResult:
    records: tuple[ContactRecord, ...]
    rejected: tuple[Rejected, ...] = ()
    # Cursor to store for the next incremental read, where the system has a change feed.
    cursor: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Operation:
    """One change to one record in one system.

    `op_id` is deterministic for the same intended change, so a rerun after a crash
    retries the same operation instead of inventing a new one (connectors use it as an
    idempotency key). `values` holds the full desired values for CREATE and the changed
    fields for UPDATE; `expected_version` is the optimistic precondition.
    """

    op_id: str
    kind: OpKind
    system: str
    link_id: str
    external_id: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    expected_version: str | None = None

    @staticmethod
    def make_id(*parts: str) -> str:
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True, slots=True)
class OpResult:
    op_id: str
    status: OpStatus
    external_id: str | None = None
    version: str | None = None
    # The record as the system holds it after the change, where the connector knows it.
    record: ContactRecord | None = None
    # For MANUAL: what the operator is asked to do, in words (stored encrypted).
    instruction: str | None = None
    error: str | None = None  # no personal data: field names and error codes only


@dataclass(frozen=True, kw_only=True, slots=True)
class Customer:
    """A customer of the switchboard and its bindings in each system."""

    id: str
    name: str
    # Per system, that connector's binding model (e.g. ZissonBinding), as configured.
    bindings: Mapping[str, Any] = field(default_factory=dict)

    def binding(self, system: str) -> Any:
        try:
            return self.bindings[system]
        except KeyError:
            raise LookupError(f"customer {self.id!r} has no binding for {system!r}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Subject:
    """A data subject to find or erase, by identifiers within one customer.

    Held only in memory and, encrypted, in the store until the erasure completes;
    never logged.
    """

    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.emails or self.phones or self.names)


@dataclass(frozen=True, kw_only=True, slots=True)
class ItemRef:
    """One item a system holds that an erasure or retention run deletes.

    `kind` is "contact", "message", "card" and so on; `scope` is the quota scope it
    lives in (a mailbox, a database, an account); `id` is stable (Graph ImmutableId).
    """

    system: str
    kind: str
    id: str
    scope: str = ""
    # For a subject erasure: which of the subject's identifiers the item holds, as
    # ("email" | "phone" | "name", position in the subject's list). The daemon weighs
    # them (daemon/identity.py); the connector only reports what it found.
    matched: tuple[tuple[str, int], ...] = ()
    # For retention: the version the item had when it was found (Firestore's update
    # time); the delete is conditional on it, so an item changed meanwhile is kept.
    version: str | None = None
    # For a whole-customer erasure: the item is another customer's too (mail between
    # two customers of one service mailbox, or in the other's folders). It is left alone,
    # as ambiguous, unless an admin includes it: one customer's erasure is no
    # instruction about another customer's data.
    held_by_others: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionScan:
    """What a connector's `expired(customer, now)` found past the customer's rules.

    `refs` are the items to delete, each in the customer's scope. `failed` holds the
    rules that could not be applied, by their key as configured (a mail folder, a
    subcollection), with the connector error: one bad rule fails alone and the others
    are applied. `kept_shared` counts items past the customer's rules that are another
    customer's too and that customer's rules keep (Outlook: one service mailbox).
    """

    refs: tuple[ItemRef, ...] = ()
    failed: Mapping[str, Exception] = field(default_factory=dict)
    kept_shared: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Residual:
    """What a system keeps after a delete, and for how long: shown on certificates."""

    system: str
    what: str  # e.g. "Recoverable Items (Purges)", "point-in-time recovery"
    retention: str  # e.g. "up to 14 days (default), up to 30 days configurable"
    note: str = ""
