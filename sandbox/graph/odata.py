"""OData query options as Graph applies them: Prefer, $select, $top/$skip, $orderby, paging.

Paging is by offset, as in Exchange: `@odata.nextLink` carries `$skip` with the
offset of the next page, as Graph's message and contact lists do
(https://learn.microsoft.com/en-us/graph/api/user-list-messages, "@odata.nextLink":
".../messages?$skip=10"; clients follow the link verbatim; an opaque `$skiptoken`
holding an offset is still read), and the query is evaluated again for every page.
So deleting items while paging forward shifts later items onto pages already read,
exactly the trap a real client must avoid (collect first, then delete; or page again
until nothing matches).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.graph.errors import bad_request

Query = Mapping[str, Sequence[str]]
MAX_TOP = 1000
_PREFERENCE = re.compile(r'\s*([^=,\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)')


def option(query: Query, name: str) -> str | None:
    """The value of a query option, matched without regard to case (Graph is lenient)."""
    for key, values in query.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def parse_prefer(headers: Mapping[str, str]) -> dict[str, str]:
    """`Prefer: IdType="ImmutableId", odata.maxpagesize=50` -> lower-case names, bare values."""
    raw = ",".join(v for k, v in headers.items() if k.lower() == "prefer")
    preferences: dict[str, str] = {}
    for match in _PREFERENCE.finditer(raw):
        name, value = match.group(1), (match.group(2) or "").strip()
        if name:
            preferences[name.lower()] = value.strip('"')
    return preferences


def wants_immutable_ids(prefer: Mapping[str, str]) -> bool:
    return prefer.get("idtype", "").lower() == "immutableid"


def body_type(prefer: Mapping[str, str]) -> str:
    return "text" if prefer.get("outlook.body-content-type", "").lower() == "text" else "html"


def selection(query: Query, known: Sequence[str], entity: str) -> list[str] | None:
    """The canonical names $select asks for (None: everything); 400 on unknown names."""
    raw = option(query, "$select")
    if raw is None:
        return None
    by_lower = {name.lower(): name for name in known}
    chosen: list[str] = []
    for part in raw.split(","):
        name = by_lower.get(part.strip().lower())
        if name is None:
            raise bad_request(
                f"Could not find a property named '{part.strip()}' on type "
                f"'microsoft.graph.{entity}'.",
                "RequestBroker--ParseUri",
            )
        if name not in chosen:
            chosen.append(name)
    return chosen


def project(document: Mapping[str, Any], chosen: Sequence[str] | None) -> dict[str, Any]:
    """$select: the chosen properties, plus id and @odata.etag which Graph always returns."""
    if chosen is None:
        return dict(document)
    keep = {"@odata.etag", "id", *chosen}
    return {k: v for k, v in document.items() if k in keep}


def page_size(query: Query, prefer: Mapping[str, str], default: int = 10) -> int:
    raw = option(query, "$top") or prefer.get("odata.maxpagesize")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise bad_request(f"Invalid page size '{raw}'.", "ErrorInvalidParameter") from None
    if not 1 <= size <= MAX_TOP:
        raise bad_request(
            f"The value of $top must be between 1 and {MAX_TOP}.", "ErrorInvalidParameter"
        )
    return size


def encode_skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"skip": offset}).encode()).decode().rstrip("=")


def offset(query: Query) -> int:
    token = option(query, "$skiptoken")
    if token is not None:
        try:
            value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["skip"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise bad_request("The $skiptoken is not valid.", "ErrorInvalidParameter") from None
        if not isinstance(value, int) or value < 0:
            raise bad_request("The $skiptoken is not valid.", "ErrorInvalidParameter")
        return value
    raw = option(query, "$skip")
    if raw is None:
        return 0
    if not raw.isdigit():
        raise bad_request("The value of $skip must be a non-negative integer.")
    return int(raw)


def link(base: str, path: str, pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return f"{base}{path}"
    return f"{base}{path}?{urlencode(pairs, quote_via=quote, safe='$,()/:@')}"


def next_link(base: str, path: str, query: Query, next_offset: int) -> str:
    pairs = [
        (key, value)
        for key, values in query.items()
        if key.lower() not in ("$skiptoken", "$skip")
        for value in values[:1]
    ]
    # Graph's Outlook lists page with $skip (user-list-messages, user-list-contacts).
    pairs.append(("$skip", str(next_offset)))
    return link(base, path, pairs)


def parse_orderby(query: Query, known: Sequence[str]) -> list[tuple[str, bool]]:
    """$orderby -> [(property, descending)]; 400 on unknown properties."""
    raw = option(query, "$orderby")
    if raw is None:
        return []
    by_lower = {name.lower(): name for name in known}
    keys: list[tuple[str, bool]] = []
    for part in raw.split(","):
        words = part.split()
        if (
            not words
            or len(words) > 2
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
        ):
            raise bad_request(f"Invalid $orderby clause '{part.strip()}'.")
        name = by_lower.get(words[0].lower())
        if name is None:
            raise bad_request(
                f"Could not find a property named '{words[0]}' for $orderby.",
                "RequestBroker--ParseUri",
            )
        keys.append((name, len(words) == 2 and words[1].lower() == "desc"))
    return keys


def sort_documents(documents: list[dict[str, Any]], keys: Sequence[tuple[str, bool]]) -> None:
    for name, descending in reversed(keys):  # stable sorts, least significant key first
        documents.sort(key=lambda d: _sort_key(d.get(name)), reverse=descending)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.casefold())
    if isinstance(value, bool | int | float):
        return (2, value)
    return (3, json.dumps(value, sort_keys=True))


def collection(
    context: str, documents: list[dict[str, Any]], next_url: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"@odata.context": context, "value": documents}
    if next_url is not None:
        payload["@odata.nextLink"] = next_url
    return payload
