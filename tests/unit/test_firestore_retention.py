"""Which documents of a subcollection retention deletes, from their paths and update times
(connector._expired), and which refs the connector takes to delete (_retention_path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.firestore.connector import _expired, _retention_path
from connectors.firestore.settings import FirestoreBinding
from daemon.domain import ItemRef

BINDING = FirestoreBinding(customer_id="kunde-1", retention_days={"notes": 90})
CUTOFF = datetime(2026, 1, 1, tzinfo=UTC)
OLD, NEW = CUTOFF - timedelta(seconds=1), CUTOFF + timedelta(seconds=1)


def kinds(found: list[tuple[str, datetime]]) -> dict[str, str]:
    return {ref.id: ref.kind for ref in _expired(BINDING, found, CUTOFF)}


def test_an_expired_document_takes_everything_below_it_along_whatever_its_age() -> None:
    assert kinds(
        [
            ("notes/a", OLD),
            ("notes/a/comments/c", NEW),
            ("notes/a/comments/c/likes/l", OLD),
            ("notes/b", NEW),
            ("notes/b/comments/c", OLD),
        ]
    ) == {
        "notes/a": "document",
        "notes/a/comments/c": "nested",
        "notes/a/comments/c/likes/l": "nested",
    }


def test_below_a_document_that_is_gone_each_is_judged_by_its_own_age() -> None:
    assert kinds([("notes/gone/comments/x", OLD), ("notes/gone/comments/y", NEW)]) == {
        "notes/gone/comments/x": "orphaned"
    }


def test_each_ref_carries_the_version_it_was_found_at_and_the_customer() -> None:
    [ref] = _expired(BINDING, [("notes/a", OLD)], CUTOFF)

    assert (ref.system, ref.scope, ref.version) == (
        "firestore",
        "kunde-1",
        "2025-12-31T23:59:59.000000000Z",
    )


@pytest.mark.parametrize(
    ("kind", "path", "system", "scope", "taken"),
    [
        ("document", "notes/a", "firestore", "kunde-1", True),
        ("nested", "notes/a/comments/c", "firestore", "kunde-1", True),
        ("orphaned", "notes/a/comments/c/likes/l", "firestore", "kunde-1", True),
        ("document", "archive/a", "firestore", "kunde-1", False),  # no rule there
        ("document", "notes/a/comments/c", "firestore", "kunde-1", False),  # not a document
        ("nested", "notes/a", "firestore", "kunde-1", False),
        ("nested", "notes/a/comments", "firestore", "kunde-1", False),  # a collection
        ("document", "notes//a", "firestore", "kunde-1", False),
        ("document", "notes/a", "firestore", "kunde-2", False),  # another customer's
        ("document", "notes/a", "zisson", "kunde-1", False),
        ("card", "notes/a", "firestore", "kunde-1", False),
    ],
)
def test_a_ref_is_taken_only_if_it_is_this_customer_s_retention_s(
    kind: str, path: str, system: str, scope: str, taken: bool
) -> None:
    ref = ItemRef(system=system, kind=kind, id=path, scope=scope)

    assert (_retention_path(BINDING, ref) is not None) is taken
