"""The customer's contact folder as a reconciliation directory: read, apply, changes.

Idempotent CREATE: Graph has no idempotency key, so a contact made by pdsync carries
its link id in a single-value extended property in pdsync's own namespace
(`LINK_PROPERTY`, a MAPI named property: invisible in Outlook, untouched by users). It
is set in the create body and looked up with
`$filter=singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…')`, or,
for many creates at once, by listing the folder with
`$expand=singleValueExtendedProperties($filter=id eq '…')`
(https://learn.microsoft.com/en-us/graph/api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties,
https://learn.microsoft.com/en-us/graph/api/singlevaluelegacyextendedproperty-get).
Before creating, and again after any create whose answer was lost, a contact already
carrying the op's link id is reported APPLIED instead of made twice.

Earlier versions marked contacts with the visible category `pdsync-link:<link id>`
(mapping.MARKER), which a user could remove. Such contacts are migrated the first time
a process reads, syncs or writes the folder: the property set, the category removed
(other categories kept), with If-Match so a user's concurrent edit wins.

UPDATE sends If-Match with the expected change key: 412 becomes CONFLICT, unless the
contact already holds exactly the wanted values (a replay), then APPLIED. DELETE with
If-Match; 404 means gone, APPLIED. Several ops go through $batch.

Delta: `changes(cursor)` follows the folder's contact delta. An expired delta or next
link (410, or a 4xx with a sync-state code: graph.RESYNC_CODES) raises ResyncRequired:
the caller starts again with `cursor=None`, a full round whose records are every
contact now in the folder.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from connectors.base import FatalError, NotFoundError
from connectors.outlook.folders import ContactFolders
from connectors.outlook.graph import GraphClient
from connectors.outlook.mapping import (
    MARKER,
    NAME_FIELDS,
    SELECT,
    create_body,
    from_contact,
    link_of,
    project,
    read_result,
    update_body,
    version_of,
)
from connectors.outlook.matching import SubjectMatcher
from connectors.outlook.settings import OutlookBinding
from connectors.outlook.tasks import run_all
from connectors.outlook.wire import (
    PREFER,
    SYSTEM,
    UNKNOWN,
    BatchItem,
    ItemResponse,
    ResyncRequired,
    odata_string,
    response_json,
    segment,
    user_path,
)
from daemon.domain import (
    ContactRecord,
    ItemRef,
    Operation,
    OpKind,
    OpResult,
    OpStatus,
    ReadResult,
)

_RESTARTS = 3  # full delta rounds restarted when their own next links expire midway
# pdsync's namespace GUID for its named properties on Outlook items, and the link marker.
NAMESPACE = "{6f1c3e1a-8d1b-4c55-9a0e-3f1f5d3f1c11}"
LINK_PROPERTY = f"String {NAMESPACE} Name pdsync-link"
EXTENDED = "singleValueExtendedProperties"
EXPAND_LINK = f"{EXTENDED}($filter=id eq '{LINK_PROPERTY}')"


class ContactDirectory:
    """Contacts of one customer: a contact folder (by display name) in the service mailbox."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph
        self.folders = ContactFolders(graph)
        self.migrated = 0  # category markers replaced by the property, for tests
        self._swept: set[tuple[str, str]] = set()  # (mailbox, folder) without old markers

    # -- reading --------------------------------------------------------------------------

    async def read(self, binding: OutlookBinding) -> ReadResult:
        contacts = await self._list(binding, select=f"{SELECT},categories")
        contacts.update(await self._migrate(binding, contacts.values()))
        self._swept.add(self._sweep_key(binding))
        # Mapping thousands of contacts is CPU work: in a worker thread, off the event loop.
        return await asyncio.to_thread(read_result, list(contacts.values()), cursor=None)

    async def _list(
        self, binding: OutlookBinding, *, select: str, expand: str | None = None
    ) -> dict[str, dict[str, Any]]:
        for attempt in (1, 2):
            folder_id = await self.folders.resolve(binding)
            assert folder_id is not None
            try:
                items, _ = await self.graph.collect(
                    binding.scope,
                    self.folders.contacts_url(binding, folder_id),
                    what="list contacts",
                    params={
                        "$select": select,
                        "$top": str(self.graph.settings.page_size),
                        **({"$expand": expand} if expand else {}),
                    },
                )
            except NotFoundError:
                if attempt == 2:
                    raise
                self.folders.forget(binding)  # deleted in Outlook: make it again
                continue
            # Paging is by offset: an item can appear on two pages when others change.
            return {str(item.get("id")): item for item in items}
        raise AssertionError("unreachable")

    async def changes(
        self, binding: OutlookBinding, cursor: str | None
    ) -> tuple[ReadResult, list[str], str]:
        """What changed since `cursor` (a delta link); everything when it is None.

        Returns the changed records, the ids removed from the folder and the cursor for
        next time. Raises ResyncRequired when `cursor` has expired.
        """
        prefer = f"{PREFER}, odata.maxpagesize={self.graph.settings.page_size}"
        if cursor is not None:
            # Before the delta, so the contacts it migrates come back in it, new versions.
            await self._sweep(binding)
        for _ in range(_RESTARTS):
            if cursor is None:
                folder_id = await self.folders.resolve(binding)
                assert folder_id is not None
                url = self.folders.contacts_url(binding, folder_id) + "/delta"
                params: dict[str, str] | None = {"$select": f"{SELECT},categories"}
            else:
                url, params = cursor, None
            try:
                items, delta_link = await self.graph.collect(
                    binding.scope,
                    url,
                    what="contacts delta",
                    params=params,
                    headers={"Prefer": prefer},
                )
            except ResyncRequired:
                if cursor is not None:
                    raise
                continue  # our own round expired midway: start it again
            if delta_link is None:
                raise FatalError("outlook: contacts delta ended without a deltaLink", system=SYSTEM)
            if cursor is None:
                migrated = await self._migrate(binding, items)
                items = [migrated.get(str(item.get("id")), item) for item in items]
                self._swept.add(self._sweep_key(binding))
            changed: dict[str, dict[str, Any]] = {}
            removed: dict[str, None] = {}
            for item in items:  # the last word on an id wins
                item_id = str(item.get("id"))
                if "@removed" in item:
                    changed.pop(item_id, None)
                    removed[item_id] = None
                else:
                    removed.pop(item_id, None)
                    changed[item_id] = item
            result = await asyncio.to_thread(read_result, list(changed.values()), cursor=delta_link)
            return result, list(removed), delta_link
        raise ResyncRequired("outlook: contacts delta kept expiring", system=SYSTEM)

    # -- writing --------------------------------------------------------------------------

    async def apply(self, binding: OutlookBinding, ops: Sequence[Operation]) -> list[OpResult]:
        if not ops:
            return []
        results: dict[int, OpResult | None] = dict.fromkeys(range(len(ops)))
        planned: list[tuple[int, BatchItem]] = []
        folder_id = await self.folders.resolve(binding)
        assert folder_id is not None
        existing: dict[str, dict[str, Any]] = {}
        links = [op.link_id for op in ops if op.kind is OpKind.CREATE]
        if links:
            await self._sweep(binding)
            existing = await self._made_by_link(binding, links)
        current = await self._renamed(binding, ops)
        for index, op in enumerate(ops):
            try:
                plan = self._plan(binding, folder_id, op, existing, current)
            except ValueError as exc:
                results[index] = _result(op, OpStatus.FAILED, error=str(exc))
                continue
            if isinstance(plan, OpResult):
                results[index] = plan
            else:
                planned.append((index, plan))
        for round_ in _rounds(planned, ops):
            answers = await self.graph.execute(
                binding.scope, [item for _, item in round_], what="apply contacts"
            )
            unsure: list[tuple[int, BatchItem]] = []
            for (index, item), answer in zip(round_, answers, strict=True):
                if ops[index].kind is OpKind.CREATE and _unsure(answer):
                    unsure.append((index, item))
                else:
                    results[index] = await self._resolve(binding, ops[index], answer)
            if unsure:
                results.update(await self._recover_creates(binding, ops, unsure))
        done = [result for result in results.values() if result is not None]
        assert len(done) == len(ops), "every op has its result"
        return done

    def _plan(
        self,
        binding: OutlookBinding,
        folder_id: str,
        op: Operation,
        existing: Mapping[str, Mapping[str, Any]],
        current: Mapping[str, ContactRecord],
    ) -> BatchItem | OpResult:
        if op.system != SYSTEM:
            raise ValueError(f"operation is for {op.system!r}, not {SYSTEM!r}")
        headers = {"If-Match": op.expected_version} if op.expected_version else {}
        if op.kind is OpKind.CREATE:
            made = existing.get(op.link_id)
            if made is not None:  # a replay: the contact is there already
                return _applied(op, made)
            body = create_body(op.values)
            body[EXTENDED] = [{"id": LINK_PROPERTY, "value": op.link_id}]
            url = "/" + self.folders.contacts_url(binding, folder_id)
            return BatchItem(method="POST", url=url, body=body, idempotent=False)
        if not op.external_id:
            raise ValueError(f"{op.kind.value} needs the external_id")
        url = f"{user_path(binding.mailbox)}/contacts/{segment(op.external_id)}"
        if op.kind is OpKind.UPDATE:
            body = update_body(op.values, current.get(op.external_id))
            return BatchItem(method="PATCH", url=url, body=body, headers=headers)
        if op.kind is OpKind.DELETE:
            return BatchItem(method="DELETE", url=url, headers=headers)
        raise ValueError(f"unknown operation kind {op.kind!r}")

    async def _renamed(
        self, binding: OutlookBinding, ops: Sequence[Operation]
    ) -> dict[str, ContactRecord]:
        """The contacts whose names an UPDATE changes, as they are now.

        A display name left empty is composed from the names; for that the names the
        update leaves alone are needed too.
        """
        wanted = {
            op.external_id
            for op in ops
            if op.kind is OpKind.UPDATE and op.external_id and NAME_FIELDS & set(op.values)
        }

        async def one(contact_id: str) -> tuple[str, ContactRecord | None]:
            response = await self.graph.request(
                binding.scope,
                "GET",
                f"{user_path(binding.mailbox)}/contacts/{segment(contact_id)}".lstrip("/"),
                what="read contact before update",
                params={"$select": SELECT},
                accept_errors=True,
            )
            item = (
                from_contact(response_json(response, "a contact"))
                if response.status_code == 200
                else None
            )
            return contact_id, item if isinstance(item, ContactRecord) else None

        found = await run_all([functools.partial(one, contact_id) for contact_id in sorted(wanted)])
        return {contact_id: record for contact_id, record in found if record is not None}

    async def _made_by_link(
        self, binding: OutlookBinding, links: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The contacts in the folder that carry one of `links`, by link id.

        A few links: one filtered query each (in $batch); more than a $batch holds:
        one listing of the folder with the property expanded.
        """
        wanted = set(links)
        if len(wanted) > self.graph.settings.batch_size:
            contacts = await self._list(binding, select=SELECT, expand=EXPAND_LINK)
            found = ((_property_link(c), c) for c in contacts.values())
            return {link: c for link, c in found if link in wanted}
        folder_id = await self.folders.resolve(binding)
        assert folder_id is not None
        url = "/" + self.folders.contacts_url(binding, folder_id)
        ordered = sorted(wanted)
        queries = [
            BatchItem(
                method="GET",
                url=url
                + "?"
                + urlencode(
                    {
                        "$filter": f"{EXTENDED}/Any(ep: ep/id eq {odata_string(LINK_PROPERTY)} "
                        f"and ep/value eq {odata_string(link)})",
                        "$select": SELECT,
                    },
                    quote_via=quote,
                ),
            )
            for link in ordered
        ]
        answers = await self.graph.execute(binding.scope, queries, what="find contacts by link")
        made: dict[str, dict[str, Any]] = {}
        for link, answer in zip(ordered, answers, strict=True):
            if not answer.ok:
                code = answer.error_code or "no answer"
                raise FatalError(
                    f"outlook: find contacts by link answered HTTP {answer.status} ({code})",
                    system=SYSTEM,
                )
            value = answer.body.get("value") if isinstance(answer.body, Mapping) else None
            hits = [c for c in value or () if isinstance(c, dict)]
            if hits:
                made[link] = hits[0]
        return made

    def _sweep_key(self, binding: OutlookBinding) -> tuple[str, str]:
        return (binding.scope, binding.contact_folder.casefold())

    async def _sweep(self, binding: OutlookBinding) -> None:
        """Once per process and folder: migrate the contacts still carrying a category
        marker (found by listing their categories; the folder is small)."""
        key = self._sweep_key(binding)
        if key in self._swept:
            return
        contacts = await self._list(binding, select="categories")
        await self._migrate(binding, contacts.values())
        self._swept.add(key)

    async def _migrate(
        self, binding: OutlookBinding, contacts: Iterable[Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Replace the category marker of `contacts` by the property; the contacts as
        they are now, by id (only those changed; one the user changed meanwhile is
        left for the next time)."""
        planned: list[tuple[str, BatchItem]] = []
        user = user_path(binding.mailbox)
        for contact in contacts:
            link = link_of(contact)
            contact_id = contact.get("id")
            if link is None or not isinstance(contact_id, str):
                continue
            kept = [c for c in contact.get("categories") or () if not str(c).startswith(MARKER)]
            etag = version_of(contact)
            body = {"categories": kept, EXTENDED: [{"id": LINK_PROPERTY, "value": link}]}
            item = BatchItem(
                method="PATCH",
                url=f"{user}/contacts/{segment(contact_id)}",
                body=body,
                headers={"If-Match": etag} if etag else {},
            )
            planned.append((contact_id, item))
        if not planned:
            return {}
        answers = await self.graph.execute(
            binding.scope, [item for _, item in planned], what="migrate link markers"
        )
        done: dict[str, dict[str, Any]] = {}
        for (contact_id, _), answer in zip(planned, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict):
                done[contact_id] = answer.body
        self.migrated += len(done)
        self.graph.log.info("link markers migrated", contacts=len(done), of=len(planned))
        return done

    async def _resolve(
        self, binding: OutlookBinding, op: Operation, answer: ItemResponse
    ) -> OpResult:
        status = answer.status
        if op.kind is OpKind.CREATE:
            if status == 201 and isinstance(answer.body, Mapping):
                return _applied(op, answer.body)
        elif op.kind is OpKind.UPDATE:
            if answer.ok and isinstance(answer.body, Mapping):
                return _applied(op, answer.body)
            if status == 412:
                return await self._update_conflict(binding, op)
            if status == 404:
                return _result(op, OpStatus.NOT_FOUND, error="ErrorItemNotFound")
        elif op.kind is OpKind.DELETE:
            if answer.ok or status == 404:
                return _result(op, OpStatus.APPLIED)  # gone now or gone already
            if status == 412:
                return _result(op, OpStatus.CONFLICT, error="the contact changed")
        code = answer.error_code or "no answer"
        return _result(op, OpStatus.FAILED, error=f"HTTP {status} ({code})")

    async def _recover_creates(
        self, binding: OutlookBinding, ops: Sequence[Operation], unsure: list[tuple[int, BatchItem]]
    ) -> dict[int, OpResult]:
        """Creates whose answer was lost or refused for now: look before making them again.

        One listing of the folder per round tells which were made after all; only the
        others are sent again.
        """
        resolved: dict[int, OpResult] = {}
        pending = unsure
        for _ in range(self.graph.retry_policy.attempts):
            made = await self._made_by_link(binding, [ops[index].link_id for index, _ in pending])
            missing: list[tuple[int, BatchItem]] = []
            for index, item in pending:
                found = made.get(ops[index].link_id)
                if found is not None:
                    resolved[index] = _applied(ops[index], found)
                else:
                    missing.append((index, item))
            if not missing:
                return resolved
            answers = await self.graph.execute(
                binding.scope, [item for _, item in missing], what="create contacts"
            )
            pending = []
            for (index, item), answer in zip(missing, answers, strict=True):
                if _unsure(answer):
                    pending.append((index, item))
                else:
                    resolved[index] = await self._resolve(binding, ops[index], answer)
            if not pending:
                return resolved
        for index, _ in pending:
            resolved[index] = _result(ops[index], OpStatus.FAILED, error="create: no answer")
        return resolved

    async def _update_conflict(self, binding: OutlookBinding, op: Operation) -> OpResult:
        assert op.external_id is not None
        response = await self.graph.request(
            binding.scope,
            "GET",
            f"{user_path(binding.mailbox)}/contacts/{segment(op.external_id)}".lstrip("/"),
            what="read contact after 412",
            params={"$select": SELECT},
            accept_errors=True,
        )
        if response.status_code == 404:
            return _result(op, OpStatus.NOT_FOUND, error="ErrorItemNotFound")
        current = (
            from_contact(response_json(response, "a contact"))
            if response.status_code == 200
            else None
        )
        if not isinstance(current, ContactRecord):
            return _result(op, OpStatus.CONFLICT, error="the contact changed")
        wanted = project(current.with_values(op.values))
        if all(getattr(wanted, name) == getattr(current, name) for name in op.values):
            return _applied(op, response_json(response, "a contact"))  # a replay of it
        return OpResult(
            op_id=op.op_id,
            status=OpStatus.CONFLICT,
            external_id=op.external_id,
            version=current.version,
            record=current,
            error="the contact changed since expected_version",
        )

    # -- erasure --------------------------------------------------------------------------

    async def locate(
        self, binding: OutlookBinding, matcher: SubjectMatcher | None
    ) -> list[ItemRef]:
        """The contacts in the customer's folder that hold an identifier of the subject,
        each with what it matched (None: every contact, matching nothing)."""
        if await self.folders.resolve(binding, create=False) is None:
            return []
        contacts = await self._list(binding, select=SELECT)
        refs = []
        for contact_id, contact in contacts.items():
            matched: tuple[tuple[str, int], ...] = ()
            if matcher is not None:
                item = from_contact(contact)
                if not isinstance(item, ContactRecord):
                    continue
                matched = matcher.contact_matches(item)
                if not matched:
                    continue
            refs.append(
                ItemRef(
                    system=SYSTEM,
                    kind="contact",
                    id=contact_id,
                    scope=binding.mailbox,
                    matched=matched,
                )
            )
        return refs


def _applied(op: Operation, contact: Mapping[str, Any]) -> OpResult:
    item = from_contact(contact)
    record = item if isinstance(item, ContactRecord) else None
    return OpResult(
        op_id=op.op_id,
        status=OpStatus.APPLIED,
        external_id=str(contact.get("id")) if contact.get("id") else op.external_id,
        version=record.version if record else None,
        record=record,
    )


def _property_link(contact: Mapping[str, Any]) -> str | None:
    """The link id in a contact's expanded LINK_PROPERTY (Graph may spell the id in
    its own case)."""
    for prop in contact.get(EXTENDED) or ():
        if (
            isinstance(prop, Mapping)
            and str(prop.get("id", "")).casefold() == LINK_PROPERTY.casefold()
            and isinstance(prop.get("value"), str)
        ):
            return str(prop["value"])
    return None


def _unsure(answer: ItemResponse) -> bool:
    """Whether a create may or may not have happened (or was refused for now)."""
    return answer.status in (UNKNOWN, 429) or answer.status >= 500


def _result(op: Operation, status: OpStatus, *, error: str | None = None) -> OpResult:
    return OpResult(op_id=op.op_id, status=status, external_id=op.external_id, error=error)


def _rounds(
    planned: list[tuple[int, BatchItem]], ops: Sequence[Operation]
) -> list[list[tuple[int, BatchItem]]]:
    """Consecutive groups with at most one op per contact: a $batch runs its items in
    no particular order, so two ops on one contact go into successive rounds."""
    rounds: list[list[tuple[int, BatchItem]]] = []
    current: list[tuple[int, BatchItem]] = []
    seen: set[str] = set()
    for index, item in planned:
        op = ops[index]
        key = f"link:{op.link_id}" if op.kind is OpKind.CREATE else f"id:{op.external_id}"
        if key in seen:
            rounds.append(current)
            current, seen = [], set()
        current.append((index, item))
        seen.add(key)
    if current:
        rounds.append(current)
    return rounds
