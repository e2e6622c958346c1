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
from collections.abc import Iterable
from typing import Any

from connectors.base import FatalError, RetriableError
from connectors.outlook.graph import GraphClient
from connectors.outlook.settings import OutlookBinding
from connectors.outlook.tasks import run_all
from connectors.outlook.wire import SYSTEM, odata_string, segment, user_path


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
            return str(response.json()["id"])
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


class MailFolders:
    """Mail folders of a mailbox by well-known or display name."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph

    async def ids(self, binding: OutlookBinding, names: Iterable[str]) -> list[str]:
        """Folder ids by well-known name ("inbox") or display name, anywhere in the tree."""
        ids: list[str] = []
        tree: list[dict[str, Any]] | None = None
        for name in names:
            user = user_path(binding.mailbox).lstrip("/")
            response = await self.graph.request(
                binding.scope,
                "GET",
                f"{user}/mailFolders/{segment(name)}",
                what="get mail folder",
                params={"$select": "id,displayName"},
                accept_errors=True,
            )
            if response.status_code == 200:
                ids.append(str(response.json()["id"]))
                continue
            if tree is None:
                tree = await self._all(binding)
            matches = [
                f for f in tree if str(f.get("displayName", "")).casefold() == name.casefold()
            ]
            if len(matches) != 1:
                problem = "is not" if not matches else "names several folders"
                raise FatalError(
                    f"outlook: mail folder {name!r} {problem} in the customer's mailbox",
                    system=SYSTEM,
                )
            ids.append(str(matches[0]["id"]))
        return ids

    async def trees(self, binding: OutlookBinding, names: Iterable[str]) -> list[str]:
        """The named folders and every folder below them."""
        roots = await self.ids(binding, names)
        if not roots:
            return []
        tree = await self._all(binding)
        children: dict[str, list[str]] = {}
        for folder in tree:
            children.setdefault(str(folder.get("parentFolderId")), []).append(str(folder["id"]))
        found, pending = [], list(roots)
        while pending:
            folder_id = pending.pop()
            found.append(folder_id)
            pending += children.get(folder_id, [])
        return found

    async def _all(self, binding: OutlookBinding) -> list[dict[str, Any]]:
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
        return folders
