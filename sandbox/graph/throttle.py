"""Exchange's throttling for Graph: per app and mailbox, 4 in flight, 10,000 per 10 minutes.

The budget is a sliding window: a request is refused when `budget` requests were
admitted in the last `window / time_scale` seconds, with Retry-After = the whole
seconds until the oldest of them leaves the window. Refused requests are not counted
against the budget, so a client that honours Retry-After gets through when it says.

Both refusals are 429 with code "ApplicationThrottled", as real Graph sends them; the
message tells them apart ("...over its MailboxConcurrency limit." for concurrency).

For benchmarks, the throttle also keeps how long each (app, mailbox) had 0, 1, 2, ...
requests in flight (`occupancy`) and when each admitted request held its slot
(`timeline`, the last TIMELINE_LIMIT), so a run can tell a mailbox kept busy from one
left idle between requests.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from sandbox.graph.errors import GraphError
from sandbox.graph.store import GraphState

Key = tuple[str, str]  # (client id, mailbox id)
TIMELINE_LIMIT = 200_000  # admitted requests kept in the timeline (about 10 MB)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds on the wire; round up so a client is never early."""
    return str(max(0, math.ceil(seconds - 1e-9)))


class Throttle:
    def __init__(
        self,
        state: GraphState,
        *,
        max_concurrency: int,
        request_budget: int,
        budget_window_seconds: float,
        time_scale: float,
    ) -> None:
        if max_concurrency < 1 or request_budget < 1 or budget_window_seconds <= 0:
            raise ValueError("max_concurrency, request_budget and the window must be positive")
        self._state = state
        self._lock = threading.Lock()
        self.max_concurrency = max_concurrency
        self.request_budget = request_budget
        self.budget_window_seconds = budget_window_seconds
        self._time_scale = 1.0
        self.time_scale = time_scale
        self._in_flight: dict[Key, int] = defaultdict(int)
        self._admitted: dict[Key, deque[float]] = defaultdict(deque)
        # Seconds spent at each in-flight level, and since when the level is as it is.
        self._occupancy: dict[Key, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        self._level_since: dict[Key, float] = {}
        self._timeline: deque[tuple[Key, float, float]] = deque(maxlen=TIMELINE_LIMIT)

    @property
    def time_scale(self) -> float:
        return self._time_scale

    @time_scale.setter
    def time_scale(self, scale: float) -> None:
        if scale <= 0:
            raise ValueError("time_scale must be positive")
        with self._lock:
            self._time_scale = float(scale)

    def scaled(self, seconds: float) -> float:
        """Simulated seconds as wall-clock seconds."""
        return seconds / self._time_scale

    @contextmanager
    def admit(self, key: Key) -> Iterator[None]:
        """Hold one of the key's concurrency slots, or raise the 429 Graph would send."""
        with self._lock:
            now = time.monotonic()
            if self._in_flight[key] >= self.max_concurrency:
                self._state.count("429")
                self._state.count("throttled_concurrency")
                self._state.count("concurrency_violations")
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    headers={"Retry-After": retry_after_header(self.scaled(1.0))},
                )
            window = self.scaled(self.budget_window_seconds)
            admitted = self._admitted[key]
            while admitted and admitted[0] <= now - window:
                admitted.popleft()
            if len(admitted) >= self.request_budget:
                self._state.count("429")
                self._state.count("throttled_budget")
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    f"Application is over its request limit for this mailbox "
                    f"({self.request_budget} requests per {self.budget_window_seconds:g} s).",
                    headers={"Retry-After": retry_after_header(admitted[0] + window - now)},
                )
            admitted.append(now)
            self._state.count("admitted")  # what the budget counted (benchmarks' bound)
            self._change_level(key, now, +1)
            self._state.observe_max("max_in_flight", self._in_flight[key])
        try:
            yield
        finally:
            with self._lock:
                ended = time.monotonic()
                self._change_level(key, ended, -1)
                self._timeline.append((key, now, ended))

    def _change_level(self, key: Key, now: float, by: int) -> None:
        level = self._in_flight[key]
        since = self._level_since.get(key)
        if since is not None:
            self._occupancy[key][level] += now - since
        self._level_since[key] = now
        self._in_flight[key] = level + by

    def occupancy(self) -> dict[Key, dict[int, float]]:
        """Per (app, mailbox): seconds spent with 0, 1, 2, ... requests in flight, from its
        first request since the last `reset` until now."""
        with self._lock:
            now = time.monotonic()
            result: dict[Key, dict[int, float]] = {}
            for key, since in self._level_since.items():
                levels = dict(self._occupancy[key])
                level = self._in_flight[key]
                levels[level] = levels.get(level, 0.0) + now - since
                result[key] = levels
            return result

    def timeline(self) -> list[tuple[Key, float, float]]:
        """(key, admitted, answered) per request since the last `reset`, in monotonic
        seconds, in the order they were answered (the last TIMELINE_LIMIT)."""
        with self._lock:
            return list(self._timeline)

    def reset(self) -> None:
        """Start occupancy and the timeline afresh (the counters' reset)."""
        with self._lock:
            self._occupancy.clear()
            self._level_since.clear()
            self._timeline.clear()

    def describe(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "max_concurrency": self.max_concurrency,
                "request_budget": self.request_budget,
                "budget_window_seconds": self.budget_window_seconds,
                "time_scale": self._time_scale,
                "in_flight": sum(self._in_flight.values()),
            }
