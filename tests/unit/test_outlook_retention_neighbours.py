"""Retention in a mailbox several customers share: what one customer's run keeps as
another customer's (connectors/outlook/mail.py `_kept_by`), and who else holds a message
(`_holders`, which also marks a whole-customer erasure's shared mail), on random
mailboxes.

The run looks the other customers up by a message's folder and its participants'
domains; the property is that this is exactly what asking each customer's scope
(scope.py `MailScope.holds`) and rules message by message gives. Mailboxes are drawn
with overlapping domains and subdomains, customer folders under the inbox and under
each other, a folder name two folders share, a name no folder has, and rules on the
inbox, on a customer's folder, on both or on neither.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.outlook.folders import FolderTree, MailFolders
from connectors.outlook.mail import MailStore
from connectors.outlook.scope import MailScope
from connectors.outlook.settings import OutlookBinding

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
MAILBOX = "sentralbord@we4you.no"
DOMAINS = ("kunde-a.no", "avd.kunde-a.no", "kunde-b.no", "kunde-c.no", "annen.no")
ADDRESSES = (
    *(f"{who}@{d}" for who in ("per", "ola") for d in DOMAINS),
    "x@kunde-a.no.evil.com",
    "",
)
# Display names (a well-known name such as "inbox" would be asked of Graph).
FOLDER_NAMES = ("Innboks", "Kunde A", "Kunde B", "Kunde C", "Arkiv", "Arkiv")


class NoSuchFolderId:
    """Graph as far as resolving a name is concerned: a name not found once in the tree
    is tried as a folder id, and none of them is one (Graph answers 400,
    ErrorInvalidIdMalformed)."""

    async def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": "ErrorInvalidIdMalformed"}})


@st.composite
def mailboxes(
    draw: st.DrawFn,
) -> tuple[FolderTree, OutlookBinding, list[OutlookBinding], list[dict[str, Any]]]:
    # Folder i's parent is an earlier folder (or the root): a tree, names may repeat.
    folders = [{"id": "root", "displayName": "Øverste nivå"}]
    for i, name in enumerate(FOLDER_NAMES):
        parent = draw(st.sampled_from([f["id"] for f in folders]))
        folders.append({"id": f"f{i}", "displayName": name, "parentFolderId": parent})
    names = st.sampled_from((*FOLDER_NAMES, "Finnes ikke"))
    customers = [
        OutlookBinding(
            mailbox=MAILBOX,
            contact_folder=f"Kontakter {i}",
            mail_folders=tuple(draw(st.lists(names, max_size=2, unique=True))),
            domains=tuple(draw(st.lists(st.sampled_from(DOMAINS), max_size=2, unique=True))),
            retention_days=draw(
                st.dictionaries(names, st.integers(min_value=1, max_value=400), max_size=3)
            ),
        )
        for i in range(draw(st.integers(min_value=1, max_value=5)))
    ]
    own, others = customers[0], customers[1:]  # whose run it is, and the other customers
    messages = [
        {
            "id": f"m{i}",
            "parentFolderId": draw(st.sampled_from([f["id"] for f in folders])),
            "receivedDateTime": (NOW - dt.timedelta(days=draw(st.integers(0, 500)))).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "from": {"emailAddress": {"address": draw(st.sampled_from(ADDRESSES)), "name": ""}},
            "toRecipients": [
                {"emailAddress": {"address": a, "name": ""}}
                for a in draw(st.lists(st.sampled_from(ADDRESSES), max_size=2))
            ],
        }
        for i in range(draw(st.integers(min_value=1, max_value=12)))
    ]
    return FolderTree(folders), own, others, messages


async def folder_trees(
    folders: MailFolders, tree: FolderTree, binding: OutlookBinding
) -> list[str]:
    """A customer's folder trees, a name two folders share counting as both."""
    roots: list[str] = []
    for name, found in (await folders.resolve(binding, binding.mail_folders, tree)).items():
        roots += [found] if isinstance(found, str) else tree.named(name)
    return tree.below(roots)


def holds(scope: MailScope, own: MailScope, message: dict[str, Any]) -> bool:
    """Whether the customer whose scope is `scope` holds `message` too: in its folders,
    or by address outside the folders of `own` (the customer whose run it is)."""
    return scope.in_folders(message) or (not own.in_folders(message) and scope.holds(message))


async def one_by_one(
    folders: MailFolders,
    tree: FolderTree,
    own: MailScope,
    others: list[OutlookBinding],
    messages: list[dict[str, Any]],
) -> set[str]:
    """Each message asked of each customer's scope and rules in turn (by address only
    outside the folders of `own`)."""
    kept: set[str] = set()
    for other in others:
        scope = MailScope.of(await folder_trees(folders, tree, other), other.domains)
        governed, _ = await folders.governed(other, other.retention_days, tree)
        for message in messages:
            if not holds(scope, own, message):
                continue
            days = [
                other.retention_days[n]
                for n, ids in governed.items()
                if message["parentFolderId"] in ids
            ]
            received = dt.datetime.fromisoformat(message["receivedDateTime"].replace("Z", "+00:00"))
            if not days or received >= NOW - dt.timedelta(days=days[0]):
                kept.add(message["id"])
    return kept


@settings(max_examples=300, deadline=None)
@given(mailboxes())
def test_a_message_is_kept_exactly_when_another_customer_holds_it_and_its_rules_keep_it(
    mailbox: tuple[FolderTree, OutlookBinding, list[OutlookBinding], list[dict[str, Any]]],
) -> None:
    tree, binding, others, messages = mailbox
    store = MailStore(NoSuchFolderId())  # type: ignore[arg-type]
    own = MailScope.of(asyncio.run(folder_trees(store.folders, tree, binding)), binding.domains)

    kept = asyncio.run(store._kept_by(others, messages, own, tree, NOW))

    assert kept == asyncio.run(one_by_one(store.folders, tree, own, others, messages))


@settings(max_examples=300, deadline=None)
@given(mailboxes())
def test_a_customers_mail_is_marked_exactly_when_another_customer_holds_it(
    mailbox: tuple[FolderTree, OutlookBinding, list[OutlookBinding], list[dict[str, Any]]],
) -> None:
    """The whole-customer erasure's mark (`held_by_others`) and retention ask the same
    index: it names the customers that hold a message, no more and no fewer."""
    tree, binding, others, messages = mailbox
    store = MailStore(NoSuchFolderId())  # type: ignore[arg-type]
    own = MailScope.of(asyncio.run(folder_trees(store.folders, tree, binding)), binding.domains)

    holders = asyncio.run(store._holders(others, own, tree))

    for message in messages:
        expected = set()
        for i, other in enumerate(others):
            scope = MailScope.of(
                asyncio.run(folder_trees(store.folders, tree, other)), other.domains
            )
            if holds(scope, own, message):
                expected.add(i)
        assert holders.of(message) == expected, message["id"]
