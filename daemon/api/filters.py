"""Parsing the filters shared by the API and `pdsync log`: times and levels."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from daemon.store.rows import EventLevel

_RELATIVE = re.compile(r"(\d{1,6}(?:\.\d{1,3})?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_AGE = timedelta(days=3660)


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`30s`, `15m`, `24h`, `7d` (ago), or an ISO 8601 time (UTC when it has no zone).

    Raises ValueError with a message that does not repeat the input.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    match = _RELATIVE.fullmatch(value)
    if match:
        age = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        return now - min(age, MAX_AGE)
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            "since: give a number with s, m, h or d (e.g. 24h), or an ISO 8601 time"
        ) from None


def parse_level(text: str) -> EventLevel:
    """An event level by name (debug, info, warning, error); ValueError otherwise."""
    try:
        return EventLevel(text.strip().lower())
    except ValueError:
        raise ValueError("level: one of debug, info, warning, error") from None
