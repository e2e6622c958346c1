"""Canonical JSON: the one byte form of a value that the ledger and certificates hash and sign.

Sorted keys, no insignificant whitespace, UTF-8 (not \\u escapes), no floats (their text
differs between languages), string keys only. Timestamps are UTC with microseconds and
a "Z", e.g. "2025-01-31T09:30:00.000000Z".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(value: datetime) -> str:
    """A timezone-aware datetime as canonical UTC text."""
    if value.tzinfo is None:
        raise ValueError("naive datetime; use an aware UTC time")
    return value.astimezone(UTC).strftime(TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """The inverse of format_ts; refuses any other form of the same instant."""
    value = datetime.strptime(text, TS_FORMAT).replace(tzinfo=UTC)
    if format_ts(value) != text:
        raise ValueError(f"not a canonical timestamp: {text!r}")
    return value


def plain(value: Any) -> Any:
    """`value` as plain JSON types: mappings, lists, str, int, bool, None.

    Tuples become lists, datetimes canonical text, enums their value. Raises TypeError
    for floats, bytes, non-string keys and anything else that has no single JSON form.
    """
    if isinstance(value, Enum):
        return plain(value.value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            result[str(key)] = plain(item)
        return result
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def dumps(value: Any) -> str:
    """Canonical JSON text of `value` (see plain for what is accepted)."""
    return json.dumps(
        plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def encode(value: Any) -> bytes:
    """Canonical JSON of `value`, UTF-8 encoded: the bytes that get hashed or signed."""
    return dumps(value).encode("utf-8")


def loads(data: str | bytes) -> Any:
    """Parse JSON strictly: duplicate keys and NaN/Infinity are errors (ValueError)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("duplicate key in JSON object")
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constants)
