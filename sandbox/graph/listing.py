"""Collection responses shared by mail and contacts: paged lists and delta pages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sandbox.graph.delta import Round, Seen
from sandbox.graph.errors import bad_request
from sandbox.graph.odata import (
    collection,
    link,
    next_link,
    offset,
    option,
    page_size,
    parse_orderby,
    project,
    selection,
    sort_documents,
)
from sandbox.graph.odata_filter import compile_filter, first_property
from sandbox.graph.service import Ctx
from sandbox.graph.store import EXTENDED
from sandbox.zisson.store import Response

T = TypeVar("T")


def context_url(ctx: Ctx) -> str:
    return f"{ctx.base}/$metadata#{ctx.call.path.lstrip('/')}"


def paged(
    ctx: Ctx,
    documents: list[dict[str, Any]],
    *,
    properties: Sequence[str],
    entity: str,
    default_order: Sequence[tuple[str, bool]] = (),
    filterable: bool = True,
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """Filter, order, page and project documents the way Graph lists a collection."""
    query = ctx.call.query
    chosen = selection(query, properties, entity)
    raw_filter = option(query, "$filter")
    order = parse_orderby(query, properties)
    if raw_filter is not None:
        if not filterable:
            raise bad_request("$filter is not supported on this collection.")
        matches = compile_filter(raw_filter)
        documents = [d for d in documents if matches(d)]
        if order and (first_property(raw_filter) or "").lower() != order[0][0].lower():
            # Exchange refuses to sort on a property the filter does not start with.
            raise bad_request(
                "The restriction or sort order is too complex for this operation.",
                "InefficientFilter",
            )
    sort_documents(documents, order or default_order)
    return page_of(ctx, documents, chosen, finish)


def page_of(
    ctx: Ctx,
    documents: list[dict[str, Any]],
    chosen: list[str] | None,
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """`finish(document)` gives what is shown of a (filtered) document: $expand."""
    return page_rendered(ctx, documents, len(documents), finish or (lambda d: d), chosen)


def page_rendered(
    ctx: Ctx,
    items: Sequence[T],
    total: int,
    render: Callable[[T], dict[str, Any]],
    chosen: list[str] | None,
) -> Response:
    """The page the query asks for out of `items` (already in order), rendering only it:
    a mailbox of 20,000 messages costs 1,000 renders a page, not 20,000."""
    size, start = page_size(ctx.call.query, {}), offset(ctx.call.query)
    page = []
    for item in items[start : start + size]:
        document = render(item)
        shown = project(document, chosen)
        if EXTENDED in document:  # expanded: shown whatever $select says
            shown[EXTENDED] = document[EXTENDED]
        page.append(shown)
    more = start + size < total
    following = next_link(ctx.base, ctx.call.path, ctx.call.query, start + size) if more else None
    return ctx.json(200, collection(context_url(ctx), page, following))


def delta_page(
    ctx: Ctx,
    *,
    kind: str,
    folder_id: str,
    current: dict[str, Seen],
    properties: Sequence[str],
    render: Callable[[str], dict[str, Any] | None],
) -> Response:
    """One page of a delta round; `render(key)` gives an item as it is now (None: gone)."""
    query = ctx.call.query
    folder_key = (ctx.mailbox.id, kind, folder_id)
    skiptoken, deltatoken = option(query, "$skiptoken"), option(query, "$deltatoken")
    restart = link(ctx.base, ctx.call.path, [])
    found = ctx.delta.resume(folder_key, skiptoken, deltatoken, restart=restart)
    round_: Round
    if found is not None and skiptoken is not None:
        round_ = found
    elif found is not None:
        round_ = ctx.delta.start(
            folder_key,
            current,
            select=found.select,
            change_type=found.change_type,
            since=found.snapshot,
            top=found.top,
        )
    else:
        round_ = ctx.delta.start(
            folder_key,
            current,
            select=selection(query, properties, kind.rstrip("s")),
            change_type=option(query, "changeType"),
            since=None,
            top=page_size(query, {}) if option(query, "$top") is not None else None,
        )
    # $top from the first request wins (it is kept in the tokens); else the Prefer header.
    size = round_.top or page_size({}, ctx.prefer)
    if round_.top is None and "odata.maxpagesize" in ctx.prefer:
        ctx.applied.append(f"odata.maxpagesize={size}")
    changes, token, final = ctx.delta.next_page(round_, size)
    odata_type = "#microsoft.graph.message" if kind == "messages" else "#microsoft.graph.contact"
    values: list[dict[str, Any]] = []
    for change in changes:
        if change.removed is not None:
            seen = change.removed
            values.append(
                {
                    "@odata.type": odata_type,
                    "id": seen.immutable_id if ctx.immutable else seen.regular_id,
                    "@removed": {"reason": "deleted"},
                }
            )
            continue
        document = render(change.key)
        if document is not None:  # gone since the round began: the next round says so
            values.append({"@odata.type": odata_type, **project(document, round_.select)})
    name = "$deltatoken" if final else "$skiptoken"
    url = link(ctx.base, ctx.call.path, [(name, token)])
    payload: dict[str, Any] = {"@odata.context": context_url(ctx), "value": values}
    payload["@odata.deltaLink" if final else "@odata.nextLink"] = url
    return ctx.json(200, payload)
