"""Folders by name: the customer's contact folder, and mail folders for rules and erasure.

The contact folder is found by display name among the mailbox's contact folders and made
when missing; its id is kept for the life of the connector (and looked up again when
Graph says it is gone). Mail folders are named in configuration by well-known name
("inbox", "sentitems") or by display name anywhere in the folder tree; a display name
that is missing or names several folders is a configuration error.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Collection, Iterable
from typing import Any, Literal

from connectors.base import FatalError, RetriableError
from connectors.outlook.graph import GraphClient
from connectors.outlook.settings import OutlookBinding
from connectors.outlook.tasks import run_all
from connectors.outlook.wire import SYSTEM, odata_string, response_json, segment, user_path


class FolderNameError(FatalError):
    """A configured mail folder name that names no one folder of the mailbox.

    `reason`: "missing" (no such folder), "several" (display name not unique) or
    "shared" (the folder another configured name names already).
    """

    def __init__(self, name: str, reason: Literal["missing", "several", "shared"]) -> None:
        problem = {
            "missing": "is not in the customer's mailbox",
            "several": "names several folders in the customer's mailbox",
            "shared": "is a folder another rule names already",
        }[reason]
        super().__init__(f"outlook: mail folder {name!r} {problem}", system=SYSTEM)
        self.name = name
        self.reason = reason


class ContactFolders:
    """The customer's contact folder in its service mailbox, by display name."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph
        self._folders: dict[tuple[str, str], str] = {}
        self._folder_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def resolve(self, binding: OutlookBinding, *, create: bool = True) -> str | None:
        """The id of the customer's contact folder, made when missing (if `create`)."""
        key = (binding.scope, binding.contact_folder.casefold())
        if key in self._folders:
            return self._folders[key]
        lock = self._folder_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._folders:
                return self._folders[key]
            found = await self._find(binding)
            if found is None and create:
                found = await self._create(binding)
            if found is not None:
                self._folders[key] = found
            return found

    async def _create(self, binding: OutlookBinding) -> str:
        try:
            response = await self.graph.request(
                binding.scope,
                "POST",
                f"{user_path(binding.mailbox)}/contactFolders".lstrip("/"),
                what="create contact folder",
                json={"displayName": binding.contact_folder},
                accept_errors=True,
                idempotent=False,
            )
        except RetriableError:
            response = None  # the answer was lost: it may exist now
        if response is not None and response.status_code == 201:
            return str(response_json(response, "a new folder")["id"])
        # 409 (made meanwhile by another instance) or no answer: look again.
        found = await self._find(binding)
        if found is not None:
            return found
        if response is None or response.status_code in (409, 429) or response.status_code >= 500:
            raise RetriableError("outlook: the contact folder was not made", system=SYSTEM)
        raise FatalError(
            f"outlook: the contact folder cannot be created (HTTP {response.status_code})",
            system=SYSTEM,
        )

    async def _find(self, binding: OutlookBinding) -> str | None:
        wanted = binding.contact_folder.casefold()
        items, _ = await self.graph.collect(
            binding.scope,
            f"{user_path(binding.mailbox)}/contactFolders".lstrip("/"),
            what="find contact folder",
            params={"$filter": f"displayName eq {odata_string(binding.contact_folder)}"},
        )
        for item in items:
            if str(item.get("displayName", "")).casefold() == wanted:
                return str(item["id"])
        return None

    def forget(self, binding: OutlookBinding) -> None:
        self._folders.pop((binding.scope, binding.contact_folder.casefold()), None)

    def contacts_url(self, binding: OutlookBinding, folder_id: str) -> str:
        path = f"{user_path(binding.mailbox)}/contactFolders/{segment(folder_id)}/contacts"
        return path.lstrip("/")


# Graph's well-known folder names, valid in place of a folder id in any locale
# (mailFolder resource, "Well-known folder names":
# https://learn.microsoft.com/en-us/graph/api/resources/mailfolder). Any other name is
# a display name, looked up in the folder tree.
WELL_KNOWN = frozenset(
    {
        "archive",
        "clutter",
        "conflicts",
        "conversationhistory",
        "deleteditems",
        "drafts",
        "inbox",
        "junkemail",
        "localfailures",
        "msgfolderroot",
        "outbox",
        "recoverableitemsdeletions",
        "scheduled",
        "searchfolders",
        "sentitems",
        "serverfailures",
        "syncissues",
    }
)


class MailFolders:
    """Mail folders of a mailbox by well-known or display name, and the trees below them.

    Graph lists only one level at a time (`/mailFolders` is the children of the root,
    each folder's `/childFolders` its own), so the tree is read level by level:
    https://learn.microsoft.com/en-us/graph/api/user-list-mailfolders
    """

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph

    async def ids(self, binding: OutlookBinding, names: Iterable[str]) -> list[str]:
        """Folder ids by well-known name ("inbox") or display name, anywhere in the tree;
        raises FatalError for the first name that is missing or names several folders."""
        resolved = await self.resolve(binding, names)
        ids: list[str] = []
        for found in resolved.values():
            if isinstance(found, FatalError):
                raise found
            ids.append(found)
        return ids

    async def resolve(
        self, binding: OutlookBinding, names: Iterable[str], tree: FolderTree | None = None
    ) -> dict[str, str | FolderNameError]:
        """Each name's folder id, or the FatalError saying why it names no one folder;
        a bad name does not stop the others. Other connector errors are raised."""
        found: dict[str, str | FolderNameError] = {}
        user = user_path(binding.mailbox).lstrip("/")
        for name in dict.fromkeys(names):
            if tree is not None:
                known = tree.resolved.get(name)
                if known is None and name.casefold() not in WELL_KNOWN:
                    # A display name is no folder id: Graph would answer the GET with an
                    # error. Only a folder id given as a name needs the request below.
                    by_name = tree.by_name(name)
                    known = None if isinstance(by_name, FolderNameError) else by_name
                if known is not None:
                    found[name] = tree.resolved[name] = known
                    continue
            response = await self.graph.request(
                binding.scope,
                "GET",
                f"{user}/mailFolders/{segment(name)}",
                what="get mail folder",
                params={"$select": "id,displayName"},
                accept_errors=True,
            )
            if response.status_code == 200:
                found[name] = str(response_json(response, "a folder")["id"])
            else:
                if tree is None:
                    tree = await self.tree(binding)
                found[name] = tree.by_name(name)
            if tree is not None:
                tree.resolved[name] = found[name]
        return found

    async def trees(
        self, binding: OutlookBinding, names: Iterable[str], tree: FolderTree | None = None
    ) -> list[str]:
        """The named folders and every folder below them."""
        names = list(names)
        if not names:
            return []
        if tree is None:
            tree = await self.tree(binding)
        roots = []
        for found in (await self.resolve(binding, names, tree)).values():
            if isinstance(found, FatalError):
                raise found
            roots.append(found)
        return tree.below(roots)

    async def governed(
        self, binding: OutlookBinding, names: Iterable[str], tree: FolderTree | None = None
    ) -> tuple[dict[str, list[str]], dict[str, FolderNameError]]:
        """The folders each named folder governs (for rules per folder, such as
        retention): the folder and every folder below it, except a subtree whose root
        is named itself, which its own name governs. Returns those, by name, and the
        names that name no one folder (or the folder another name names), with why."""
        names = list(dict.fromkeys(names))
        if not names:
            return {}, {}
        if tree is None:
            tree = await self.tree(binding)
        resolved = await self.resolve(binding, names, tree)
        failed: dict[str, FolderNameError] = {}
        roots: dict[str, str] = {}  # folder id -> the name that governs it
        for name in names:
            found = resolved[name]
            if isinstance(found, FatalError):
                failed[name] = found
            elif found in roots:
                failed[name] = FolderNameError(name, "shared")
            else:
                roots[found] = name
        governed = {
            name: tree.below([root], stop=set(roots) - {root}) for root, name in roots.items()
        }
        return governed, failed

    async def tree(self, binding: OutlookBinding) -> FolderTree:
        """Every mail folder of the mailbox, read level by level."""
        user = user_path(binding.mailbox).lstrip("/")
        params = {"$select": "id,displayName,parentFolderId,childFolderCount", "$top": "250"}
        level, _ = await self.graph.collect(
            binding.scope, f"{user}/mailFolders", what="list mail folders", params=params
        )
        folders = list(level)
        while level:
            parents = [f for f in level if int(f.get("childFolderCount") or 0) > 0]
            nested = await run_all(
                [
                    functools.partial(
                        self.graph.collect,
                        binding.scope,
                        f"{user}/mailFolders/{segment(str(f['id']))}/childFolders",
                        what="list mail folders",
                        params=params,
                    )
                    for f in parents
                ]
            )
            level = [folder for items, _ in nested for folder in items]
            folders += level
        return FolderTree(folders)


class FolderTree:
    """A mailbox's mail folders as Graph listed them (id, displayName, parentFolderId),
    and what names were found to name in it (`resolved`: one tree, one moment, so a
    run that asks about many customers' folders asks Graph once per name)."""

    def __init__(self, folders: Iterable[dict[str, Any]]) -> None:
        self.folders = [f for f in folders if f.get("id")]
        self.resolved: dict[str, str | FolderNameError] = {}
        self._by_name: dict[str, list[str]] | None = None
        self.children: dict[str, list[str]] = {}
        for folder in self.folders:
            parent = str(folder.get("parentFolderId"))
            self.children.setdefault(parent, []).append(str(folder["id"]))

    def by_name(self, name: str) -> str | FolderNameError:
        """The one folder with this display name (case-insensitive), or why not."""
        matches = self.named(name)
        if len(matches) == 1:
            return matches[0]
        return FolderNameError(name, "missing" if not matches else "several")

    def named(self, name: str) -> list[str]:
        """Every folder with this display name (case-insensitive)."""
        if self._by_name is None:  # built on first use: a run may ask for hundreds
            self._by_name = {}
            for folder in self.folders:
                key = str(folder.get("displayName", "")).casefold()
                self._by_name.setdefault(key, []).append(str(folder["id"]))
        return list(self._by_name.get(name.casefold(), ()))

    def below(self, roots: Iterable[str], stop: Collection[str] = ()) -> list[str]:
        """The roots and every folder below them, not descending into `stop`."""
        found: list[str] = []
        pending = list(roots)
        seen: set[str] = set()
        while pending:
            folder_id = pending.pop()
            if folder_id in seen:
                continue
            seen.add(folder_id)
            found.append(folder_id)
            pending += [c for c in self.children.get(folder_id, []) if c not in stop]
        return found
