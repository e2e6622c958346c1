"""An operation's values, checked and turned into ContactRecord field types.

The reconciler hands over values as domain types or as plain JSON-like data; both are
accepted. Errors name the field and the problem, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.domain import SYNC_FIELDS, ContactKind, Phone, PhoneType


class BadValues(ValueError):
    """An operation's values cannot be written; the message names fields, not values."""


def coerce_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """An operation's values as ContactRecord field types; errors name fields, not values."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in SYNC_FIELDS:
            raise BadValues(f"{name}: not a sync field")
        if name == "kind":
            try:
                out[name] = ContactKind(value)
            except ValueError:
                raise BadValues("kind: not a contact kind") from None
        elif name == "emails":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise BadValues("emails: not a list of strings")
            out[name] = tuple(_text(f"emails[{i}]", v) for i, v in enumerate(value))
        elif name == "phones":
            if not isinstance(value, list | tuple):
                raise BadValues("phones: not a list of phones")
            out[name] = tuple(_phone(index, item) for index, item in enumerate(value))
        elif isinstance(value, str):
            out[name] = _text(name, value)
        else:
            raise BadValues(f"{name}: not a string")
    return out


def _text(name: str, value: str) -> str:
    try:
        value.encode("utf-8")  # a lone surrogate cannot go on the wire
    except UnicodeEncodeError:
        raise BadValues(f"{name}: not valid Unicode text") from None
    return value


def _phone(index: int, value: Any) -> Phone:
    if isinstance(value, Phone):
        phone = value
    elif isinstance(value, Mapping) and isinstance(value.get("number"), str):
        try:
            phone = Phone(number=value["number"], type=PhoneType(value.get("type") or "other"))
        except ValueError:
            raise BadValues(f"phones[{index}].type: not a phone type") from None
    else:
        raise BadValues(f"phones[{index}]: not a phone")
    _text(f"phones[{index}].number", phone.number)
    return phone
