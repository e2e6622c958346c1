"""What an erasure left alone, and why, as a certificate states it: masked only.

A subject erasure erases what holds one of the subject's personal identifiers. What it
found only through identifiers several people share (a switchboard number, `post@`) or
by a name is ambiguous and left alone unless an admin included it; the certificate says
which identifiers were shared and how many items, of which kind, each system holds that
were left alone, grouped by the identifiers they matched.

Evidence is stored as [{kind, position, strength}] (daemon.identity.Evidence.to_list):
positions in the subject's lists, never values. The masked identifiers of the request
(MaskedIdentifiers.to_dict()) turn a position into what people may read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.certificate import masking
from daemon.certificate._reader import Reader

_PATTERNS = {
    "email": masking.MASKED_EMAIL,
    "phone": masking.MASKED_PHONE,
    "name": masking.MASKED_NAME,
}
# How people read a strength (identity.Strength's values).
STRENGTH_LABELS = {"personal": "personal", "shared": "shared", "name": "name only"}
LEFT_ALONE_STRENGTHS = ("shared", "name")


@dataclass(frozen=True, kw_only=True, slots=True, order=True)
class MatchedIdentifier:
    """One of the subject's identifiers, masked, and what it was worth as evidence."""

    kind: str  # email | phone | name
    identifier: str  # masked
    strength: str  # shared | name (a left-alone item never matched a personal one)

    def __post_init__(self) -> None:
        pattern = _PATTERNS.get(self.kind)
        if pattern is None:
            raise ValueError(f"unknown identifier kind {self.kind!r}")
        if not pattern.fullmatch(self.identifier):
            raise ValueError(f"a matched {self.kind} is not masked")
        if self.strength not in LEFT_ALONE_STRENGTHS:
            raise ValueError(f"a left-alone item matched {self.strength!r}, not shared or name")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "identifier": self.identifier, "strength": self.strength}

    @classmethod
    def read(cls, r: Reader) -> MatchedIdentifier:
        matched = cls(
            kind=r.text("kind"), identifier=r.text("identifier"), strength=r.text("strength")
        )
        r.done()
        return matched


@dataclass(frozen=True, kw_only=True, slots=True)
class LeftAlone:
    """Items of one system found by the same identifiers and left alone: how many of
    each kind, and their ids in the erasure's plan."""

    system: str
    matched: tuple[MatchedIdentifier, ...]
    counts: Mapping[str, int] = field(default_factory=dict)
    items: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(n < 0 for n in self.counts.values()):
            raise ValueError(f"{self.system}: counts cannot be negative")
        if sum(self.counts.values()) != len(self.items):
            raise ValueError(f"{self.system}: the counts do not add up to the items")

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "matched": [m.to_dict() for m in self.matched],
            "counts": dict(self.counts),
            "items": list(self.items),
        }

    @classmethod
    def read(cls, r: Reader) -> LeftAlone:
        left = cls(
            system=r.text("system"),
            matched=tuple(MatchedIdentifier.read(m) for m in r.objs("matched")),
            counts=r.counts("counts"),
            items=r.texts("items"),
        )
        r.done()
        return left


def masked_matches(
    evidence: Iterable[Mapping[str, Any]], masked: Mapping[str, Sequence[str]]
) -> list[tuple[str, str, str]]:
    """(kind, masked identifier, strength) of each stored match, in the stored order;
    a position the masked identifiers lack shows as fully masked."""
    found = []
    for match in evidence:
        kind, position = str(match["kind"]), int(match["position"])
        values = masked.get(f"{kind}s", ())
        shown = values[position] if 0 <= position < len(values) else masking.MASK
        found.append((kind, shown, str(match["strength"])))
    return found


def shared_identifiers(
    strengths: Iterable[Mapping[str, Any]], masked: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    """The subject's identifiers the plan found shared, masked: {"emails", "phones"}
    (the keyword arguments of a MaskedIdentifiers)."""
    shared: dict[str, list[str]] = {"emails": [], "phones": []}
    for kind, shown, strength in masked_matches(strengths, masked):
        if strength == "shared" and f"{kind}s" in shared:
            shared[f"{kind}s"].append(shown)
    return {kind: tuple(values) for kind, values in shared.items()}


def left_alone_groups(
    items: Iterable[tuple[str, str, Iterable[Mapping[str, Any]]]],
) -> list[dict[str, Any]]:
    """(item id, kind, evidence) of one system's left-alone items, grouped by their
    evidence: [{"evidence", "counts", "items"}], in a stable order (stored with the
    erasure's outcome; `left_alone` reads it back)."""
    groups: dict[tuple[tuple[str, int, str], ...], list[tuple[str, str]]] = defaultdict(list)
    for item, kind, evidence in items:
        key = tuple(
            sorted((str(m["kind"]), int(m["position"]), str(m["strength"])) for m in evidence)
        )
        groups[key].append((item, kind))
    return [
        {
            "evidence": [{"kind": k, "position": p, "strength": s} for k, p, s in key],
            "counts": dict(sorted(Counter(kind for _, kind in members).items())),
            "items": sorted(item for item, _ in members),
        }
        for key, members in sorted(groups.items())
    ]


def left_alone(
    outcome: Mapping[str, Mapping[str, Any]], masked: Mapping[str, Sequence[str]]
) -> tuple[LeftAlone, ...]:
    """The certificate's view of an erasure outcome's `left_alone_groups`, per system."""
    found = []
    for system, result in sorted(outcome.items()):
        for group in result.get("left_alone_groups", ()):
            matched = tuple(
                sorted(
                    {
                        MatchedIdentifier(kind=kind, identifier=shown, strength=strength)
                        for kind, shown, strength in masked_matches(group["evidence"], masked)
                        if strength in LEFT_ALONE_STRENGTHS
                    }
                )
            )
            found.append(
                LeftAlone(
                    system=system,
                    matched=matched,
                    counts={k: int(n) for k, n in group["counts"].items()},
                    items=tuple(group["items"]),
                )
            )
    return tuple(found)


def included_counts(outcome: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Per system, the ambiguous items an admin included (and so were erased)."""
    return {
        system: int(result["included"])
        for system, result in sorted(outcome.items())
        if result.get("included")
    }
