"""What the store holds about one customer's directory, as the reconciler sees it.

No plaintext values: links, versions and keyed fingerprints only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    """One system's record in a link, with the fingerprints of its last synced values."""

    system: str
    external_id: str
    version: str | None = None
    fingerprints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Link:
    """The records in several systems that are one and the same contact."""

    id: str
    members: Mapping[str, Member] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenDispute:
    id: int
    link_id: str
    field: str
    # Per system, the fingerprint of the value it held when the dispute was opened.
    fingerprints: Mapping[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenTask:
    id: int
    link_id: str
    system: str
    op_kind: str
    op_fingerprint: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomerState:
    customer_id: str
    links: Mapping[str, Link] = field(default_factory=dict)
    disputes: Mapping[tuple[str, str], OpenDispute] = field(default_factory=dict)
    tasks: Mapping[tuple[str, str], OpenTask] = field(default_factory=dict)  # (link, system)
    # Keyed fingerprints of erased subjects' identifiers; never re-created.
    tombstones: frozenset[str] = frozenset()
