"""The simulated mailboxes: the two id formats, Exchange's deletion ladder, folders."""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox.graph.errors import GraphError
from sandbox.graph.store import Address, GraphState, Mailbox


@pytest.fixture
def mailbox() -> Mailbox:
    return GraphState(seed=0).add_mailbox("kari@firma.no")


def deliver(mailbox: Mailbox, folder: str = "inbox") -> str:
    return mailbox.add_message(
        folder,
        subject="s",
        body="b",
        sender=Address("", "a@b.no"),
        to=[],
        cc=[],
        received=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    ).immutable_id


def test_mailboxes_are_deterministic_per_seed() -> None:
    first = GraphState(seed=3).add_mailbox("a@b.no")
    second = GraphState(seed=3).add_mailbox("a@b.no")
    assert first.id == second.id
    assert deliver(first) == deliver(second)
    assert GraphState(seed=4).add_mailbox("a@b.no").id != first.id


def test_a_move_changes_the_regular_id_only(mailbox: Mailbox) -> None:
    message = mailbox.message(deliver(mailbox))
    immutable, regular = message.immutable_id, message.regular_id

    mailbox.delete(message)

    assert message.immutable_id == immutable and message.regular_id != regular
    assert mailbox.message(immutable) is mailbox.message(message.regular_id)
    with pytest.raises(GraphError):
        mailbox.message(regular)


def test_the_deletion_ladder(mailbox: Mailbox) -> None:
    message = mailbox.message(deliver(mailbox))
    steps = []
    for _ in range(3):
        mailbox.delete(message)
        steps.append(mailbox.folders[message.folder_id].well_known)

    assert steps == ["deleteditems", "recoverableitemsdeletions", "recoverableitemspurges"]
    assert mailbox.purged == [message] and message.immutable_id not in mailbox.messages


def test_graph_cannot_reach_recoverable_items_except_deletions(mailbox: Mailbox) -> None:
    assert mailbox.folder("RecoverableItemsDeletions").well_known == "recoverableitemsdeletions"
    for name in ("recoverableitemsroot", "recoverableitemspurges"):
        with pytest.raises(GraphError):
            mailbox.folder(name)
        hidden = mailbox.folder(name, graph=False)
        with pytest.raises(GraphError):
            mailbox.folder(hidden.id)


def test_folder_names_are_unique_per_parent(mailbox: Mailbox) -> None:
    mailbox.add_folder("Kunde", "msgfolderroot")
    mailbox.add_folder("Kunde", "inbox")
    with pytest.raises(GraphError) as raised:
        mailbox.add_folder("kunde", "msgfolderroot")
    assert raised.value.status == 409
