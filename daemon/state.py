"""What the store holds about one customer's directory, as the reconciler sees it.

No plaintext values: links, versions and keyed fingerprints only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

FP_WIDTH = 16  # hex characters of a stored fingerprint (64 bits)
PENDING = "-" * FP_WIDTH  # a baseline that never matches: compare field by field


class Fingerprints(Mapping[str, str]):
    """A member's fingerprints packed into one string.

    A customer with 100,000 contacts in three systems has 300,000 members of about ten
    fingerprints each; as dicts of strings they would take most of a gigabyte. Packed,
    a member costs one short string and a field-name tuple shared by all members.
    """

    __slots__ = ("_names", "_packed")
    _shapes: ClassVar[dict[tuple[str, ...], tuple[str, ...]]] = {}

    def __init__(self, values: Mapping[str, str]) -> None:
        names = tuple(sorted(values))
        self._names = self._shapes.setdefault(names, names)
        packed = [values[name] for name in names]
        # Values of another width (not ours to pack) are kept as they are.
        self._packed: str | tuple[str, ...] = (
            "".join(packed) if all(len(v) == FP_WIDTH for v in packed) else tuple(packed)
        )

    def __getitem__(self, name: str) -> str:
        try:
            i = self._names.index(name)
        except ValueError:
            raise KeyError(name) from None
        if isinstance(self._packed, tuple):
            return self._packed[i]
        return self._packed[i * FP_WIDTH : (i + 1) * FP_WIDTH]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Fingerprints):
            return self._names == other._names and self._packed == other._packed
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Fingerprints({dict(self.items())!r})"


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    """One system's record in a link, with the fingerprints of its last synced values."""

    system: str
    external_id: str
    version: str | None = None
    fingerprints: Mapping[str, str] = field(default_factory=dict)  # Fingerprints when loaded


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
class Decision:
    """A person's decision on a dispute, not yet carried out: `winner`'s value stands.

    For a field: the value the winner held when the dispute was last seen
    (`fingerprints[winner]`) goes to every other system; if the winner's value has
    changed since, the decision no longer applies. For the whole record (`_record`):
    the winner's state ("deleted" or "present") stands.
    """

    id: int
    link_id: str
    field: str
    winner: str
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
    decisions: Mapping[tuple[str, str], Decision] = field(default_factory=dict)  # (link, field)
    tasks: Mapping[tuple[str, str], OpenTask] = field(default_factory=dict)  # (link, system)
    # Keyed fingerprints of erased subjects' identifiers; never re-created.
    tombstones: frozenset[str] = frozenset()
