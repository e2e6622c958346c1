"""Sync policy: who is the authority for each field, and what happens to changes elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from daemon.identity import IdentityRules


class ForeignChange(StrEnum):
    """What to do when a system that is not the field's authority changed the field."""

    REVERT = "revert"  # put the authority's value back
    DISPUTE = "dispute"  # a person decides; nothing is overwritten meanwhile
    PROPAGATE = "propagate"  # take the change everywhere, the authority included


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldPolicy:
    authority: str
    on_foreign_change: ForeignChange


@dataclass(frozen=True, kw_only=True, slots=True)
class DeletionThreshold:
    """A plan deleting (or creating) more than `max_count` records, or more than
    `max_share` of the customer's contacts, stops and waits for an approval."""

    max_count: int = 25
    max_share: float = 0.5

    def exceeded_by(self, deletions: int, total: int) -> bool:
        if deletions <= 0:
            return False
        if deletions > self.max_count:
            return True
        # No contacts left to compare with (an empty card, a mistyped binding): any
        # deletion is all of them.
        return total <= 0 or deletions / total > self.max_share


@dataclass(frozen=True, kw_only=True, slots=True)
class ShrinkGuard:
    """A system that reads empty, or without more than `max_share` of the records it
    held at the last sync, is not believed: an outage, a wrong account or a mistyped
    binding looks exactly like that, and believing it would delete (or re-create)
    everything. The run waits until the read recovers or an operator approves."""

    max_share: float = 0.5

    def shrunk(self, *, held: int, missing: int, read: int) -> bool:
        if held <= 0:
            return False  # nothing to compare with: a first sync
        return read == 0 or missing / held > self.max_share


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncPolicy:
    """Record-level authority plus per-field overrides.

    `authority` is the system of record for whole contacts (by default the customer
    card): a contact deleted there is deleted everywhere, a contact created there is
    created everywhere. `on_foreign_change` says what happens when another system
    changed a field or deleted a contact; `on_foreign_record` what happens to a contact
    that exists only outside the authority.
    """

    authority: str = "firestore"
    on_foreign_change: ForeignChange = ForeignChange.REVERT
    on_foreign_record: ForeignChange = ForeignChange.DISPUTE
    fields: Mapping[str, FieldPolicy] = field(default_factory=dict)
    deletion_threshold: DeletionThreshold = DeletionThreshold()
    # The same limits for creation that repeats what a system held or copies records
    # found outside the authority (new contacts of the authority flow out freely).
    creation_threshold: DeletionThreshold = DeletionThreshold()
    shrink_guard: ShrinkGuard = ShrinkGuard()
    identity: IdentityRules = field(default_factory=IdentityRules)

    def for_field(self, name: str) -> FieldPolicy:
        return self.fields.get(name) or FieldPolicy(
            authority=self.authority, on_foreign_change=self.on_foreign_change
        )
