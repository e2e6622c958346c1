"""Fault injection for the simulated Zisson.

Per request: latency, 5xx, 429 with Retry-After, drops (`Faults`, random and seeded, or
scripted with `fail_next`). Per account's listing (GET .../users and GetContacts): an
empty or shrunk listing (`ListingFault`), a directory that shifts between page requests
(`Shift`) and answers cut short. Per write: 412 as if the version check failed, fields a
write silently does not keep, and how an Idempotency-Key is matched for a replay.
"""

from __future__ import annotations

import codecs
import math
import random
import threading
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, TypeVar

DROP: Literal["drop"] = "drop"
ShiftKind = Literal["churn", "reorder"]
ReplayMatch = Literal["request", "key"]
PRECONDITION_METHODS = ("PATCH", "DELETE")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Faults:
    error_rate: float = 0.0  # share of requests answered 500/502/503
    latency_ms: float = 0.0  # added to every request
    rate_429: float = 0.0  # share answered 429 with Retry-After
    retry_after: float = 1.0  # seconds, in the Retry-After of those 429s
    drop_rate: float = 0.0  # share whose connection is closed without a response

    def __post_init__(self) -> None:
        for name in ("error_rate", "rate_429", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.error_rate + self.rate_429 + self.drop_rate > 1.0:
            raise ValueError("error_rate + rate_429 + drop_rate must not exceed 1")
        if self.latency_ms < 0 or self.retry_after < 0:
            raise ValueError("latency_ms and retry_after must not be negative")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Literal["drop", "status"]
    status: int = 0
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class ListingFault:
    """One account's listing served wrongly, as an outage or a wrong account might.

    `empty`: no entries at all (total 0). `keep_count` / `keep_share`: only the first
    that many entries, or that share of them (rounded down), in listing order. The
    listing stays self-consistent (its total is what is served): nothing in it says it
    is short. Applies to GET .../users and GetContacts, not to GET .../users/{id}.
    """

    empty: bool = False
    keep_count: int | None = None
    keep_share: float | None = None

    def __post_init__(self) -> None:
        if self.keep_count is not None and self.keep_share is not None:
            raise ValueError("give keep_count or keep_share, not both")
        if self.keep_count is not None and self.keep_count < 0:
            raise ValueError("keep_count must not be negative")
        if self.keep_share is not None and not 0.0 <= self.keep_share <= 1.0:
            raise ValueError("keep_share must be within 0..1")

    def served(self, listing: list[T]) -> list[T]:
        if self.empty:
            return []
        if self.keep_count is not None:
            return listing[: self.keep_count]
        if self.keep_share is not None:
            return listing[: math.floor(len(listing) * self.keep_share)]
        return listing


@dataclass(frozen=True, slots=True)
class XmlEncoding:
    """How GetContacts encodes its document, as legacy servers do (default: UTF-8, said
    both ways).

    `encoding`: the Python codec the document's bytes are written in ("utf-8",
    "iso-8859-1", "windows-1252", ...); a character it cannot carry is written as a
    character reference. `charset`: the Content-Type `charset` parameter, None for none.
    `declaration`: the XML declaration's `encoding`, None for no declaration at all. The
    three need not agree: that is the point. A lone surrogate U+DC80..U+DCFF in a raw XML
    fragment is written as the byte 0x80..0xFF (Python's surrogateescape), so a test can
    put bytes into one entry that no encoding decodes.
    """

    encoding: str = "utf-8"
    charset: str | None = "utf-8"
    declaration: str | None = "utf-8"

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding: {self.encoding}") from None
        for name in ("charset", "declaration"):
            value = getattr(self, name)
            if value is not None and (not value or not value.isascii() or '"' in value):
                raise ValueError(f"{name} must be a non-empty ASCII label without quotes")


@dataclass(frozen=True, slots=True)
class Shift:
    """The directory changing under a paged read (JSON listing only; GetContacts is one
    document, so nothing can move between its parts).

    After each of `times` page requests (the first `skip` page requests are served
    without a shift) the account's directory really changes: "churn" deletes the entry
    at index `at` (the last one if there are fewer) and creates a new user at the end,
    so the total stays the same and every later entry moves one place forward;
    "reorder" moves the entry at index `at` to the end.
    """

    how: ShiftKind = "churn"
    at: int = 0
    skip: int = 0
    times: int = 1

    def __post_init__(self) -> None:
        if self.how not in ("churn", "reorder"):
            raise ValueError("how must be 'churn' or 'reorder'")
        if self.at < 0 or self.skip < 0 or self.times < 0:
            raise ValueError("at, skip and times must not be negative")


class FaultPlan:
    """Decides, per request, which fault (if any) to inject. Thread-safe, seeded."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = Faults()
        self._scripted: deque[Fault] = deque()
        self._listings: dict[str, ListingFault] = {}
        self._shifts: dict[str, Shift] = {}
        self._truncations: dict[str, int] = {}
        self._xml_encodings: dict[str, XmlEncoding] = {}
        self._preconditions: deque[frozenset[str]] = deque()
        self._replay_match: ReplayMatch = "request"
        self._ignored_on_write: frozenset[str] = frozenset()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set(self, seed: int | None = None, **settings: Any) -> Faults:
        faults = Faults(**settings)
        with self._lock:
            self._faults = faults
            if seed is not None:
                self._rng = random.Random(seed)
        return faults

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | Literal["drop"] = 429,
        retry_after: float | None = 1.0,
    ) -> None:
        """Script the next `count` requests to fail this way, before any random fault."""
        fault = (
            Fault(DROP)
            if status == DROP
            else Fault("status", int(status), retry_after if status == 429 else None)
        )
        with self._lock:
            self._scripted.extend([fault] * count)

    def decide(self) -> Fault | None:
        with self._lock:
            if self._scripted:
                return self._scripted.popleft()
            faults = self._faults
            draw = self._rng.random()
            if draw < faults.drop_rate:
                return Fault(DROP)
            draw -= faults.drop_rate
            if draw < faults.rate_429:
                return Fault("status", 429, faults.retry_after)
            draw -= faults.rate_429
            if draw < faults.error_rate:
                return Fault("status", self._rng.choice((500, 502, 503)))
            return None

    # -- listings -------------------------------------------------------------------------

    def set_listing(self, guid: str, fault: ListingFault | None) -> None:
        with self._lock:
            if fault is None or fault == ListingFault():
                self._listings.pop(guid, None)
            else:
                self._listings[guid] = fault

    def served_listing(self, guid: str, listing: list[T]) -> list[T]:
        with self._lock:
            fault = self._listings.get(guid)
        return listing if fault is None else fault.served(listing)

    def shift_listing(self, guid: str, shift: Shift) -> None:
        with self._lock:
            if shift.times:
                self._shifts[guid] = shift
            else:
                self._shifts.pop(guid, None)

    def take_shift(self, guid: str) -> Shift | None:
        """The shift due after the page request just served, if any (counts it down)."""
        with self._lock:
            shift = self._shifts.get(guid)
            if shift is None:
                return None
            if shift.skip:
                self._shifts[guid] = replace(shift, skip=shift.skip - 1)
                return None
            if shift.times <= 1:
                del self._shifts[guid]
            else:
                self._shifts[guid] = replace(shift, times=shift.times - 1)
            return shift

    def truncate_listing(self, guid: str, times: int) -> None:
        if times < 0:
            raise ValueError("times must not be negative")
        with self._lock:
            self._truncations[guid] = times

    def take_truncation(self, guid: str) -> bool:
        with self._lock:
            left = self._truncations.get(guid, 0)
            if left:
                self._truncations[guid] = left - 1
            return left > 0

    def set_xml_encoding(self, guid: str, encoding: XmlEncoding) -> None:
        with self._lock:
            if encoding == XmlEncoding():
                self._xml_encodings.pop(guid, None)
            else:
                self._xml_encodings[guid] = encoding

    def xml_encoding(self, guid: str) -> XmlEncoding:
        with self._lock:
            return self._xml_encodings.get(guid, XmlEncoding())

    # -- writes ---------------------------------------------------------------------------

    def fail_preconditions(self, count: int, methods: tuple[str, ...]) -> None:
        wanted = frozenset(m.upper() for m in methods)
        if count < 0 or not wanted or not wanted <= set(PRECONDITION_METHODS):
            raise ValueError(f"count >= 0 and methods among {', '.join(PRECONDITION_METHODS)}")
        with self._lock:
            self._preconditions.extend([wanted] * count)

    def take_precondition(self, method: str) -> bool:
        """Whether this write (to a user that exists) fails its version check now."""
        with self._lock:
            for index, methods in enumerate(self._preconditions):
                if method in methods:
                    del self._preconditions[index]
                    return True
            return False

    def set_replay_match(self, match: ReplayMatch) -> None:
        if match not in ("request", "key"):
            raise ValueError("match must be 'request' or 'key'")
        with self._lock:
            self._replay_match = match

    @property
    def replay_match(self) -> ReplayMatch:
        with self._lock:
            return self._replay_match

    def ignore_on_write(self, fields: tuple[str, ...]) -> None:
        with self._lock:
            self._ignored_on_write = frozenset(fields)

    @property
    def ignored_on_write(self) -> frozenset[str]:
        with self._lock:
            return self._ignored_on_write

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                **asdict(self._faults),
                "scripted": len(self._scripted),
                "listings": {guid: asdict(f) for guid, f in self._listings.items()},
                "shifts": {guid: asdict(s) for guid, s in self._shifts.items()},
                "truncations": {g: n for g, n in self._truncations.items() if n},
                "xml_encodings": {g: asdict(e) for g, e in self._xml_encodings.items()},
                "preconditions": [sorted(m) for m in self._preconditions],
                "replay_match": self._replay_match,
                "ignored_on_write": sorted(self._ignored_on_write),
            }
