"""Failed authentication, limited per client address and counted for /metrics.

A token bucket per client address: each failed authentication (a missing, unknown or
revoked token, a wrong login) takes one from the client's bucket, which refills at a
steady rate; with the bucket empty, every request of that client that needs a
credential gets 429 with Retry-After, before its credential is even looked at. Nothing
of this is stored: the counters live in this process and go to /metrics.

Memory is bounded: at most `max_clients` buckets, the least recently seen dropped
first, so a caller rotating addresses cannot grow it; an IPv6 client counts as its /64
(`client_key`), as one host can hold that many. Addresses are the TCP peer's,
or behind a proxy named in `[api] trusted_proxies` the client's it forwarded for
(without: the proxy's, one bucket for all, which still stops guessing).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


def client_key(address: str) -> str:
    """The bucket an address counts in: an IPv4 address itself (also when written as
    IPv4-mapped IPv6), an IPv6 address as its /64. One host or site holds a whole /64
    (RFC 4291's interface identifiers, RFC 8981's temporary addresses) and could take a
    new address for every guess. Anything else (a Unix socket's name) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureLimiter:
    """Token buckets of failed authentications, one per client address (thread-safe)."""

    def __init__(
        self,
        *,
        burst: int,
        per_minute: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_minute <= 0 or max_clients < 1:
            raise ValueError("burst and max_clients must be at least 1, per_minute above 0")
        self.burst = burst
        self.per_second = per_minute / 60
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        # For /metrics: failures by kind, and requests refused with 429.
        self.failures: Counter[str] = Counter()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, client: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(client)
        if bucket is not None:
            bucket.tokens = min(
                self.burst, bucket.tokens + (now - bucket.updated) * self.per_second
            )
            bucket.updated = now
            self._buckets.move_to_end(client)
        return bucket

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it may now."""
        with self._lock:
            bucket = self._refilled(client, self._clock())
            if bucket is None or bucket.tokens >= 1:
                return None
            return (1 - bucket.tokens) / self.per_second

    def refuse(self, client: str) -> int | None:
        """The Retry-After (whole seconds) for a limited client, counted; None if not."""
        wait = self.retry_after(client)
        if wait is None:
            return None
        with self._lock:
            self.refused += 1
        return max(1, math.ceil(wait))

    def failed(self, client: str, kind: str = "invalid") -> None:
        """A failed authentication by `client` (`kind`: missing, invalid, login)."""
        with self._lock:
            now = self._clock()
            self.failures[kind] += 1
            bucket = self._refilled(client, now)
            if bucket is None:
                while len(self._buckets) >= self.max_clients:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[client] = _Bucket(tokens=self.burst, updated=now)
            bucket.tokens = max(0.0, bucket.tokens - 1)
