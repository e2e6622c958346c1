"""Fault injection for the simulated Zisson: latency, 5xx, 429 with Retry-After, drops."""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

DROP: Literal["drop"] = "drop"


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


class FaultPlan:
    """Decides, per request, which fault (if any) to inject. Thread-safe, seeded."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = Faults()
        self._scripted: deque[Fault] = deque()

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

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {**asdict(self._faults), "scripted": len(self._scripted)}
