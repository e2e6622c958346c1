"""Strict reading of parsed JSON: each field typed, nothing missing, nothing extra."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from daemon.ledger import canonical

_HEX = re.compile(r"[0-9a-f]*")


class Reader:
    """Fields of one JSON object; every accessor raises ValueError naming the field."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{path} must be an object")
        self._data = data
        self._path = path
        self._seen: set[str] = set()

    def _get(self, key: str) -> Any:
        if key not in self._data:
            raise ValueError(f"{self._path}.{key} is missing")
        self._seen.add(key)
        return self._data[key]

    def _fail(self, key: str, what: str) -> ValueError:
        return ValueError(f"{self._path}.{key} must be {what}")

    def done(self) -> None:
        """Raise ValueError if the object has fields nobody read."""
        extra = sorted(set(self._data) - self._seen)
        if extra:
            raise ValueError(f"{self._path} has unknown fields: {', '.join(extra)}")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def number(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self._fail(key, "a whole number >= 0")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def ts(self, key: str) -> datetime:
        value = self.text(key)
        try:
            return canonical.parse_ts(value)
        except ValueError:
            raise self._fail(key, "a UTC timestamp like 2025-01-31T09:30:00.000000Z") from None

    def ts_or_none(self, key: str) -> datetime | None:
        return None if self._get(key) is None else self.ts(key)

    def hexstr(self, key: str, nbytes: int) -> str:
        value = self.text(key)
        if len(value) != 2 * nbytes or not _HEX.fullmatch(value):
            raise self._fail(key, f"{2 * nbytes} lowercase hex digits")
        return value

    def hexstrs(self, key: str, nbytes: int) -> list[str]:
        values = self._get(key)
        if not isinstance(values, list) or not all(
            isinstance(v, str) and len(v) == 2 * nbytes and _HEX.fullmatch(v) for v in values
        ):
            raise self._fail(key, f"a list of {2 * nbytes}-digit lowercase hex strings")
        return values

    def texts(self, key: str) -> tuple[str, ...]:
        values = self._get(key)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self._fail(key, "a list of strings")
        return tuple(values)

    def counts(self, key: str) -> dict[str, int]:
        value = self._get(key)
        if not isinstance(value, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value.values()
        ):
            raise self._fail(key, "an object of whole numbers")
        return dict(value)

    def obj(self, key: str) -> Reader:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return Reader(value, f"{self._path}.{key}")

    def objs(self, key: str) -> list[Reader]:
        values = self._get(key)
        if not isinstance(values, list):
            raise self._fail(key, "a list of objects")
        return [Reader(v, f"{self._path}.{key}[{i}]") for i, v in enumerate(values)]
