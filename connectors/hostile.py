"""What a vendor may answer that must not reach the daemon: the checks every parser makes.

One record a system answers must never stop a customer's sync (issue 10, item 5). A
parser therefore checks each field it takes in and rejects the record (quarantine,
with the field named) when a field

- holds a lone surrogate (a JSON `"\\ud800"`, or a byte that is not UTF-8, which
  `decode_json` turns into one): no store, log or HMAC can encode it;
- holds a control character (C0, DEL or C1) other than tab, line feed and carriage
  return: terminal escapes, NUL (which PostgreSQL refuses in text);
- is longer than its limit (`MAX_TEXT_CHARS`, `MAX_NOTES_CHARS` for free text), or a
  list holds more than `MAX_LIST_ITEMS` entries;
- sits deeper than `MAX_DEPTH` levels of JSON or XML nesting.

An id must also be fit for a URL path segment: not empty, not `.` or `..` (which
change the URL a write goes to), no white space, control characters, `?`, `#`, `%`
or `\\`, at most `MAX_ID_CHARS` characters; `/` only where the system's ids hold it
(Graph). `url_segment` checks once more right where a URL is built.

A whole answer is bounded too: base.MAX_RESPONSE_BYTES (HttpConnectorBase reads no more),
and JSON nested beyond what Python's parser can recurse into is cut at `MAX_DEPTH`
instead of raising RecursionError (`loads`). What cannot be split into records (a page
over the size cap, a document that does not parse) is a page-level ContractError.

Problems name the field and what is wrong, never the value (no personal data).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from connectors.base import ContractError

MAX_TEXT_CHARS = 1024  # a name, title, department, e-mail address or phone number
MAX_NOTES_CHARS = 32 * 1024  # free text: comments, notes
MAX_ID_CHARS = 512
MAX_LIST_ITEMS = 100  # e-mail addresses or phone numbers of one record
MAX_DEPTH = 32  # levels of JSON or XML nesting in one document

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ID_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f?#%\\]")
# JSON tokens that matter for nesting: a whole string (escapes included), a bracket, or
# the quote of a string that never ends.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"', re.DOTALL)


class Hostile(ValueError):
    """A field that cannot be taken in; the message names the field, never the value."""


class UnsafeId(ContractError, ValueError):
    """An id that would change the URL built from it: the one operation fails (a
    ValueError to code that plans operations), nothing is sent."""


class TooDeep(str):
    """Stands in for JSON nested deeper than MAX_DEPTH (see `loads`)."""

    __slots__ = ()


TOO_DEEP = TooDeep(f"(nested deeper than {MAX_DEPTH} levels)")


# --- text ------------------------------------------------------------------------------


def text_problem(value: str, *, limit: int = MAX_TEXT_CHARS) -> str | None:
    """What makes `value` unfit to take in, or None. Names no part of the value."""
    if isinstance(value, TooDeep):
        return f"nested deeper than {MAX_DEPTH} levels"
    if len(value) > limit:
        return f"longer than {limit} characters"
    if _SURROGATE.search(value):
        return "a lone surrogate or bytes that are not UTF-8"
    if _CONTROL.search(value):
        return "a control character"
    return None


def check_text(field: str, value: str, *, limit: int = MAX_TEXT_CHARS) -> str:
    """`value`, or Hostile naming `field` and the problem."""
    problem = text_problem(value, limit=limit)
    if problem is not None:
        raise Hostile(f"{field}: {problem}")
    return value


def check_items(field: str, items: list[Any]) -> list[Any]:
    if len(items) > MAX_LIST_ITEMS:
        raise Hostile(f"{field}: more than {MAX_LIST_ITEMS} entries")
    return items


def scrub(value: str) -> str:
    """`value` without what a read would reject it for (control characters other than
    tab and line breaks, lone surrogates): what a projection writes."""
    return _CONTROL.sub("", _SURROGATE.sub("", value))


def storable(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX`, so it can be encoded (a raw
    record for quarantine)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- ids -------------------------------------------------------------------------------


def id_problem(value: str, *, slash: bool = False) -> str | None:
    """What makes `value` unfit as an id (a URL path segment), or None."""
    problem = _segment_problem(value)
    if problem is None and (_ID_FORBIDDEN.search(value) or (not slash and "/" in value)):
        problem = "a character an id cannot hold"
    return problem


def _segment_problem(value: str) -> str | None:
    """What percent-encoding cannot make a safe path segment of."""
    if value in ("", ".", ".."):
        return "empty" if not value else "a dot segment ('.' or '..'), not an id"
    if len(value) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters"
    if _SURROGATE.search(value):
        return "a lone surrogate or bytes that are not UTF-8"
    return None


def check_id(field: str, value: str, *, slash: bool = False) -> str:
    problem = id_problem(value, slash=slash)
    if problem is not None:
        raise Hostile(f"{field}: {problem}")
    return value


def safe_id(value: Any, *, slash: bool = False) -> str | None:
    """`value` (an int as text) if it is an id that may be shown and stored, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and id_problem(value, slash=slash) is None:
        return value
    return None


def url_segment(system: str, value: str, *, slash: bool = False, name: bool = False) -> str:
    """`value` as one URL path segment; UnsafeId if it is no id (`.`, `..`, ...), so a
    write never goes to another URL than the record's.

    With `name`, `value` may also be a name (a folder's, with spaces and `/`): then only
    what percent-encoding cannot make safe is refused (empty, `.`, `..`, a lone
    surrogate, overlong).
    """
    problem = _segment_problem(value) if name else id_problem(value, slash=slash)
    if problem is not None:
        raise UnsafeId(f"{system}: an id that cannot go into a URL ({problem})", system=system)
    return quote(value, safe="")


# --- JSON ------------------------------------------------------------------------------


def decode_json(document: bytes) -> str:
    """A JSON answer's text: UTF-8 (RFC 8259, section 8.1), a byte order mark dropped; a
    byte that is not UTF-8 becomes a lone surrogate (surrogateescape), so the record
    holding it is rejected by `text_problem` and the rest is read."""
    return document.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def loads(text: str) -> Any:
    """`json.loads(text)` with every array or object deeper than MAX_DEPTH replaced by
    TOO_DEEP, and never a RecursionError. Raises ValueError as json.loads does."""
    try:
        return _prune(json.loads(text), None)
    except RecursionError:
        pass
    marker = f"pdsync-too-deep-{secrets.token_hex(16)}"
    try:
        return _prune(json.loads(_cut_deep(text, json.dumps(marker))), marker)
    except RecursionError:  # pragma: no cover - _cut_deep leaves nothing that deep
        raise json.JSONDecodeError("nested too deep", text, 0) from None


def deep_field(entry: Mapping[str, Any]) -> str | None:
    """The first key of `entry` whose value holds JSON nested too deep (as `field_name`
    shows it), or None."""
    for key, value in entry.items():
        if _holds_too_deep(value):
            return field_name(key)
    return None


def field_name(key: Any) -> str:
    """A key the vendor sent, fit to name a field in a reason: as it is when it is a
    short name without anything `text_problem` objects to, else "a field"."""
    if (
        isinstance(key, str)
        and key.strip()
        and text_problem(key, limit=64) is None
        and not any(char in key for char in "\t\n\r")
    ):
        return key
    return "a field"


def nested_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether maps and lists in `value` nest more than `limit` levels (counted without
    recursion, for values that did not come through `loads`)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _holds_too_deep(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, TooDeep):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _prune(root: Any, marker: str | None) -> Any:
    if isinstance(root, str) and root == marker:
        return TOO_DEEP
    if not isinstance(root, dict | list):
        return root
    stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            child = node[key]
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    node[key] = TOO_DEEP
                else:
                    stack.append((child, depth + 1))
            elif marker is not None and isinstance(child, str) and child == marker:
                node[key] = TOO_DEEP
    return root


def _cut_deep(text: str, replacement: str) -> str:
    """`text` with each array or object that opens below MAX_DEPTH replaced by
    `replacement` (a JSON string), found without parsing."""
    parts: list[str] = []
    depth = 0
    kept_to = 0
    cut_from: int | None = None
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            if len(token) == 1:
                break  # a string that never ends: the rest is left as it is
            continue
        if token in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1 and cut_from is None:
                cut_from = match.start()
        else:
            if depth == MAX_DEPTH + 1 and cut_from is not None:
                parts += [text[kept_to:cut_from], replacement]
                kept_to = match.end()
                cut_from = None
            depth -= 1
    parts.append(text[kept_to:])
    return "".join(parts)
