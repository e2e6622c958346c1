"""Mail of one customer in the service mailbox: locate, erase, retention.

Where messages are looked for: `/messages` (every folder a user sees, Deleted Items
included) and Recoverable Items/Deletions (what was deleted from Deleted Items, still
recoverable by users and reachable by Graph as `recoverableitemsdeletions`).

The service mailbox holds every customer's mail: what is one customer's is scope.py's
rule (its folder trees; mail from or to its domains or the subject's personal
addresses; names alone count only inside its folders). Nothing outside it is returned,
whatever it names.

locate          the union of one `$search` per identifier (kql.py) and the exact
                `$filter` on the sender's address, each paged to its end, over the
                whole mailbox; a search that returns `search_cap` hits may have been
                cut short, so then the whole area is scanned instead. Recoverable
                Items/Deletions is always scanned (it is small, and search there is not
                to be relied on). Every hit is re-checked (matching.py), kept only if it
                is in the customer's scope (scope.py), and becomes an ItemRef carrying
                which of the subject's identifiers it holds (`matched`).
customer mail   every message in the customer's `mail_folders` (and their subfolders)
                and every message from or to an address in one of its domains (or
                their subdomains). This is a full scan: search could miss mail the
                index has not caught up with, and a domain easily has 1000 hits.
                What another customer of the mailbox holds too (its folders, its
                domains) is marked `held_by_others`: left alone unless included.
expired         per retention rule, the messages in that folder and the folders below
                it (a subfolder with a rule of its own keeps that rule) received before
                now minus the rule's days (`$filter=receivedDateTime lt ...`,
                re-checked), and only the customer's (scope.py: its folder trees, or
                from or to its domains).
erase           `POST .../permanentDelete` per message or contact ($batch): the item
                goes to Recoverable Items/Purges, out of every client's and Graph's
                reach; 404 (already gone) counts as done. Where Graph has no
                permanentDelete (national clouds), DELETE instead (see `erase`).

Locating always reads to the end before anything is deleted: Graph pages by offset,
so deleting while paging would skip messages.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from connectors.base import AuthError, ConnectorError, NotFoundError
from connectors.outlook import kql
from connectors.outlook.folders import FolderTree, MailFolders
from connectors.outlook.graph import GraphClient
from connectors.outlook.matching import (
    MESSAGE_SELECT,
    PARTICIPANT_FIELDS,
    Matched,
    SubjectMatcher,
    ordered,
    participants,
)
from connectors.outlook.scope import FOLDER_FIELD, MailScope, domain_suffixes
from connectors.outlook.settings import OutlookBinding
from connectors.outlook.tasks import run_all
from connectors.outlook.wire import SYSTEM, BatchItem, ItemResponse, segment, user_path
from daemon.domain import ItemRef, OpStatus, RetentionScan

DELETIONS = "recoverableitemsdeletions"
# What locating needs of a message: the re-check's fields and the folder (the scope).
LOCATE_SELECT = f"{MESSAGE_SELECT},{FOLDER_FIELD}"
# What retention needs: the age, and what the scope decides by (folder, participants).
RETENTION_SELECT = ",".join(("id", "receivedDateTime", FOLDER_FIELD, *PARTICIPANT_FIELDS))
Message = dict[str, Any]


class MailStore:
    """The mail side of the Outlook connector (capabilities: erasable, retention)."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph
        self.folders = MailFolders(graph)
        self.searches = 0  # $search queries sent, for tests
        self.scans = 0  # full scans made because a search reached the cap
        # Mailboxes (scopes) whose Graph has no contact permanentDelete (national clouds):
        # their contacts go straight to DELETE instead of costing a refused call each.
        self.no_contact_purge: set[str] = set()
        # Mailboxes whose Graph has no message permanentDelete either (US Gov L4/L5,
        # 21Vianet): their messages are deleted down into Purges (erase), a residual.
        self.no_message_purge: set[str] = set()

    def _areas(self, binding: OutlookBinding) -> list[str]:
        user = user_path(binding.mailbox).lstrip("/")
        return [f"{user}/messages", f"{user}/mailFolders/{DELETIONS}/messages"]

    # -- locating -------------------------------------------------------------------------

    async def scope(
        self,
        binding: OutlookBinding,
        personal_emails: Collection[str] = (),
        *,
        tree: FolderTree | None = None,
    ) -> MailScope:
        """The customer's part of the mailbox: its folder trees (looked up now, or in
        `tree`), its domains and, for a subject, the subject's personal addresses."""
        folder_ids = await self.folders.trees(binding, binding.mail_folders, tree)
        return MailScope.of(folder_ids, binding.domains, personal_emails)

    async def locate(
        self,
        binding: OutlookBinding,
        matcher: SubjectMatcher,
        *,
        personal_emails: Collection[str] = (),
    ) -> list[ItemRef]:
        """The customer's messages that name the subject, each re-checked client-side
        and carrying what it matched; nothing outside the customer's scope."""
        scope = await self.scope(binding, personal_emails)
        queries = kql.subject_queries(matcher.emails, matcher.phones, matcher.names)
        found = await run_all(
            [
                functools.partial(self._locate_in, binding, area, queries, matcher, scope)
                for area in self._areas(binding)
            ]
        )
        return _refs(binding, (hit for hits in found for hit in hits))

    async def _locate_in(
        self,
        binding: OutlookBinding,
        area: str,
        queries: Sequence[str],
        matcher: SubjectMatcher,
        scope: MailScope,
    ) -> list[tuple[Message, Matched]]:
        if area.endswith(f"{DELETIONS}/messages"):
            # Small, and not every Exchange searches it: read it all and re-check. No
            # customer folder is here, whatever parentFolderId says: addresses only.
            scanned = await self._list(binding, area, select=LOCATE_SELECT)
            return _kept(scanned, matcher, scope.without_folders())
        searches = [functools.partial(self._search, binding, area, query) for query in queries]
        filters = [
            functools.partial(
                self._list, binding, area, select=LOCATE_SELECT, filter=kql.sender_filter(email)
            )
            for email in matcher.emails
        ]
        results = await run_all([*searches, *filters])
        cap = self.graph.settings.search_cap
        capped = any(len(messages) >= cap for messages in results[: len(searches)])
        hits: dict[str, Message] = {}
        for messages in results:
            for message in messages:
                hits.setdefault(str(message.get("id")), message)
        if capped:
            # Some search may have been cut off at the cap: trust none of them, look at all.
            self.scans += 1
            scanned = await self._list(binding, area, select=LOCATE_SELECT)
            hits = {str(m.get("id")): m for m in scanned}
        return _kept(hits.values(), matcher, scope)

    async def _search(self, binding: OutlookBinding, area: str, query: str) -> list[Message]:
        self.searches += 1
        return await self._list(binding, area, select=LOCATE_SELECT, search=query)

    async def _list(
        self,
        binding: OutlookBinding,
        area: str,
        *,
        select: str,
        filter: str | None = None,
        search: str | None = None,
    ) -> list[Message]:
        params = {"$select": select, "$top": str(self.graph.settings.page_size)}
        if filter is not None:
            params["$filter"] = filter
        if search is not None:
            params["$search"] = kql.search_value(search)
        try:
            items, _ = await self.graph.collect(
                binding.scope, area, what="list messages", params=params
            )
        except NotFoundError:
            if area.endswith(f"{DELETIONS}/messages"):
                return []  # a mailbox without Recoverable Items access
            raise
        return items

    async def locate_customer_mail(
        self, binding: OutlookBinding, *, neighbours: Iterable[OutlookBinding] = ()
    ) -> list[ItemRef]:
        """Everything of the customer: its folders whole, and mail from or to its domains.

        A message that one of `neighbours` (the other customers) served from this
        mailbox holds too (its folder trees, its domains; see `expired`) is that
        customer's as much: its ref says so (`held_by_others`), and the erasure leaves
        it alone unless an admin includes it. The customer's own folders are its alone.
        """
        others = [n for n in neighbours if n.scope == binding.scope and n != binding]
        tree = await self.folders.tree(binding) if others else None
        scope = await self.scope(binding, tree=tree)
        select = ",".join(f for f in LOCATE_SELECT.split(",") if f != "body")
        listed = await run_all(
            [
                functools.partial(self._list, binding, area, select=select)
                for area in self._areas(binding)
            ]
        )
        mine = [m for messages in listed for m in messages if scope.holds(m)]
        refs = _refs(binding, ((m, ()) for m in mine))
        if not (others and mine):
            return refs
        assert tree is not None
        holders = await self._holders(others, scope, tree)
        shared = {str(m.get("id")) for m in mine if holders.of(m)}
        return [replace(r, held_by_others=True) if r.id in shared else r for r in refs]

    async def expired(
        self,
        binding: OutlookBinding,
        now: dt.datetime,
        *,
        neighbours: Iterable[OutlookBinding] = (),
    ) -> RetentionScan:
        """The customer's messages past its retention rules at `now`.

        A rule names a folder; it governs that folder and every folder below it, except
        a subtree whose root another rule names (the nearer rule wins). Within those
        folders only the customer's mail counts (scope.py): anything in its own folder
        trees, and elsewhere (a shared inbox) mail from or to its domains. Another
        customer's mail in a shared folder is that customer's to keep or delete.

        A message can be two customers' (mail between them in a shared folder, or one's
        mail in the other's folder). `neighbours` are the other customers' bindings: a
        message that one of them served from this mailbox also holds goes only when its
        rules let it go too; else it is kept, and counted (`kept_shared`). Where that
        customer has no rule, or its rule cannot be applied now, its rules keep it. A
        customer's own folders are its alone (`mail_folders`): another customer's
        address on a message there does not make it that customer's.

        A rule whose folder cannot be found, or whose folder cannot be listed, fails on
        its own (in `failed`, by the rule's key); the other rules are applied. Raises
        for what stops every rule: credentials refused, the customer's own folders
        not to be found.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not binding.retention_days:
            return RetentionScan()
        tree = await self.folders.tree(binding)
        scope = await self.scope(binding, tree=tree)
        governed, failures = await self.folders.governed(binding, binding.retention_days, tree)
        failed: dict[str, Exception] = dict(failures)
        user = user_path(binding.mailbox).lstrip("/")

        async def rule(name: str, folder_ids: list[str]) -> list[Message]:
            days = binding.retention_days[name]
            cutoff = (now - dt.timedelta(days=days)).astimezone(dt.UTC).replace(microsecond=0)
            stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                listed = await run_all(
                    [
                        functools.partial(
                            self._list,
                            binding,
                            f"{user}/mailFolders/{segment(folder_id)}/messages",
                            select=RETENTION_SELECT,
                            filter=kql.received_before(stamp),
                        )
                        for folder_id in folder_ids
                    ]
                )
            except AuthError:
                raise  # every rule would be refused: the whole system's failure
            except ConnectorError as exc:
                failed[name] = exc
                return []
            return [m for messages in listed for m in messages if _before(m, cutoff)]

        names = sorted(governed)
        found = await run_all([functools.partial(rule, n, governed[n]) for n in names])
        mine = [m for messages in found for m in messages if scope.holds(m)]
        others = [n for n in neighbours if n.scope == binding.scope and n != binding]
        kept = await self._kept_by(others, mine, scope, tree, now) if others and mine else set()
        refs = _refs(binding, ((m, ()) for m in mine if str(m.get("id")) not in kept))
        return RetentionScan(refs=tuple(refs), failed=failed, kept_shared=len(kept))

    async def _holders(
        self, others: Sequence[OutlookBinding], own: MailScope, tree: FolderTree
    ) -> _Holders:
        """Who of `others` may hold a message of the customer whose scope is `own`."""
        holders = _Holders(own=own)
        for i, other in enumerate(others):
            # Its folders as far as they can be told: a name that names several folders
            # may be any of them (a missing one holds nothing). Its mistake is its own
            # run's error, not this customer's.
            roots: list[str] = []
            resolved = await self.folders.resolve(other, other.mail_folders, tree)
            for name, found in resolved.items():
                if isinstance(found, str):
                    roots.append(found)
                elif found.reason == "several":
                    roots += tree.named(name)
            for folder_id in tree.below(roots):
                holders.by_folder.setdefault(folder_id, []).append(i)
            for domain in MailScope.of((), other.domains).domains:
                holders.by_domain.setdefault(domain, []).append(i)
        return holders

    async def _kept_by(
        self,
        others: Sequence[OutlookBinding],
        messages: Sequence[Message],
        own: MailScope,
        tree: FolderTree,
        now: dt.datetime,
    ) -> set[str]:
        """The ids of `messages` that one of `others` holds (`_Holders`) and its own
        retention rules keep at `now` (see `expired`)."""
        holders = await self._holders(others, own, tree)
        cutoffs: dict[int, dict[str, dt.datetime]] = {}  # per other: folder -> its cutoff
        kept: set[str] = set()
        for message in messages:
            folder = str(message.get(FOLDER_FIELD))
            for i in sorted(holders.of(message)):
                if i not in cutoffs:
                    other = others[i]
                    governed, _ = await self.folders.governed(other, other.retention_days, tree)
                    cutoffs[i] = {
                        folder_id: now - dt.timedelta(days=other.retention_days[name])
                        for name, folder_ids in governed.items()
                        for folder_id in folder_ids
                    }
                until = cutoffs[i].get(folder)
                if until is None or not _before(message, until):
                    kept.add(str(message.get("id")))
                    break
        return kept

    # -- erasing --------------------------------------------------------------------------

    async def erase(
        self, binding: OutlookBinding, refs: Sequence[ItemRef]
    ) -> list[tuple[ItemRef, OpStatus]]:
        """Delete every ref for good; one status per ref, in order.

        Messages and contacts: permanentDelete, to Recoverable Items/Purges. Graph
        offers it in the global service only (message-permanentdelete,
        contact-permanentdelete: not US Gov L4/L5 nor 21Vianet); elsewhere it answers as
        for an unknown segment (`_unsupported`). The mailbox is then remembered, so
        later items skip the refused call, and:
        - a contact is deleted with DELETE, a soft delete (see residuals);
        - a message goes down Exchange's deletion ladder with DELETE: to Deleted
          Items, then Recoverable Items/Deletions, then Purges, one DELETE a step, until
          Graph answers 404 (out of its reach) or it reached Purges. What Purges holds
          stays until the mailbox's deleted item retention ends (residuals).
        404 is APPLIED: gone is gone. A ref of another system or mailbox is refused
        (FAILED), never followed.
        """
        statuses: list[OpStatus] = [OpStatus.FAILED] * len(refs)
        items: list[tuple[int, BatchItem]] = []
        soft: list[tuple[int, BatchItem]] = []
        ladder: list[int] = []
        user = user_path(binding.mailbox)
        purge = {
            "contact": binding.scope not in self.no_contact_purge,
            "message": binding.scope not in self.no_message_purge,
        }
        for index, ref in enumerate(refs):
            if ref.system != SYSTEM or ref.scope.casefold() != binding.scope:
                continue
            if ref.kind not in purge:
                continue
            if not purge[ref.kind]:
                (
                    soft.append((index, _soft_delete(user, ref)))
                    if ref.kind == "contact"
                    else ladder.append(index)
                )
            else:
                url = f"{user}/{ref.kind}s/{segment(ref.id)}/permanentDelete"
                items.append((index, BatchItem(method="POST", url=url)))
        answers = await self.graph.execute(binding.scope, [item for _, item in items], what="erase")
        for (index, _), answer in zip(items, answers, strict=True):
            if answer.ok or (answer.status == 404 and not _unsupported(answer)):
                statuses[index] = OpStatus.APPLIED
            elif _unsupported(answer) and refs[index].kind == "contact":
                self.no_contact_purge.add(binding.scope)
                soft.append((index, _soft_delete(user, refs[index])))
            elif _unsupported(answer):
                self.no_message_purge.add(binding.scope)
                ladder.append(index)
        if soft:
            answers = await self.graph.execute(
                binding.scope, [item for _, item in soft], what="erase contacts"
            )
            for (index, _), answer in zip(soft, answers, strict=True):
                if answer.ok or answer.status == 404:
                    statuses[index] = OpStatus.APPLIED
        if ladder:
            statuses = await self._delete_down(binding, refs, sorted(ladder), statuses)
        failed = sum(1 for status in statuses if status is OpStatus.FAILED)
        self.graph.log.info(
            "erased", items=len(refs), failed=failed, soft=len(soft), deleted_down=len(ladder)
        )
        return list(zip(refs, statuses, strict=True))

    async def _delete_down(
        self,
        binding: OutlookBinding,
        refs: Sequence[ItemRef],
        pending: list[int],
        statuses: list[OpStatus],
    ) -> list[OpStatus]:
        """Messages without permanentDelete: DELETE, step by step, into Purges."""
        statuses = list(statuses)
        user = user_path(binding.mailbox)
        for _ in range(LADDER_STEPS):
            if not pending:
                break
            batch = [
                BatchItem(method="DELETE", url=f"{user}/messages/{segment(refs[i].id)}")
                for i in pending
            ]
            answers = await self.graph.execute(binding.scope, batch, what="erase messages")
            following = []
            for index, answer in zip(pending, answers, strict=True):
                if answer.status == 404:
                    statuses[index] = OpStatus.APPLIED  # out of Graph's reach: in Purges
                elif answer.ok:
                    statuses[index] = OpStatus.APPLIED  # one step down; the next one follows
                    following.append(index)
                else:
                    statuses[index] = OpStatus.FAILED
            pending = following
        return statuses


# Inbox (or any folder) -> Deleted Items -> Recoverable Items/Deletions -> Purges.
LADDER_STEPS = 3
# The codes of a permanentDelete refused because the item is not there or not valid,
# as opposed to the action not existing in this cloud.
_ITEM_CODES = frozenset({"erroritemnotfound", "errorinvalididmalformed", "errorinvalidid"})


@dataclass(kw_only=True, slots=True)
class _Holders:
    """Which other customers served from a mailbox hold a message (scope.py): those
    whose folder trees it lies in, and, outside the folders of `own` (the customer
    whose run this is: its folders are its alone), those whose domains a participant's
    address is in.

    Looked up by the message's folder and its participants' domains, not asked of
    every customer for every message: a first run on an old mailbox can find
    thousands, and one mailbox can serve hundreds of customers.
    """

    own: MailScope
    by_folder: dict[str, list[int]] = field(default_factory=dict)
    by_domain: dict[str, list[int]] = field(default_factory=dict)

    def of(self, message: Mapping[str, Any]) -> set[int]:
        """The indexes (in the `others` given) of the customers that hold `message`."""
        holders = set(self.by_folder.get(str(message.get(FOLDER_FIELD)), ()))
        if not self.own.in_folders(message):
            for address, _ in participants(message):
                for domain in domain_suffixes(address):
                    holders.update(self.by_domain.get(domain, ()))
        return holders


def _unsupported(answer: ItemResponse) -> bool:
    """Whether a permanentDelete was refused as an action this Graph does not have.

    Where it does not exist, Graph answers as for any unknown segment: 400 BadRequest
    "Resource not found for the segment 'permanentDelete'" (or 404/405/501 from a
    gateway); a 404 ErrorItemNotFound is the item being gone, not the action.
    """
    if answer.status in (405, 501):
        return True
    return answer.status in (400, 404) and answer.error_code.casefold() not in _ITEM_CODES


def _soft_delete(user: str, ref: ItemRef) -> BatchItem:
    return BatchItem(method="DELETE", url=f"{user}/contacts/{segment(ref.id)}")


def _kept(
    messages: Iterable[Message], matcher: SubjectMatcher, scope: MailScope
) -> list[tuple[Message, Matched]]:
    """The messages that name the subject and are the customer's, with what matched."""
    kept = []
    for message in messages:
        matched = matcher.message_matches(message)
        if scope.holds_match(message, matched):
            kept.append((message, matched))
    return kept


def _before(message: Mapping[str, Any], cutoff: dt.datetime) -> bool:
    received = _received(message)
    return received is not None and received < cutoff


def _received(message: Mapping[str, Any]) -> dt.datetime | None:
    value = message.get("receivedDateTime")
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _refs(
    binding: OutlookBinding, messages: Iterable[tuple[Mapping[str, Any], Matched]]
) -> list[ItemRef]:
    """One ref per message id (an area may list a message twice while it moves)."""
    found: dict[str, set[tuple[str, int]]] = {}
    for message, matched in messages:
        if message.get("id"):
            found.setdefault(str(message["id"]), set()).update(matched)
    return [
        ItemRef(system=SYSTEM, kind="message", id=i, scope=binding.mailbox, matched=ordered(m))
        for i, m in found.items()
    ]
