"""Erasure items with their evidence, ambiguous items an admin includes, and the plan's
weights (revision 0008), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from daemon.store import Store
from daemon.store.rows import ErasureState, NewErasureItem
from daemon.store.schema import erasure_items
from tests.integration.test_ledger_migration import _migrate

SHARED = ({"kind": "phone", "position": 0, "strength": "shared"},)
PERSONAL = (
    {"kind": "email", "position": 0, "strength": "personal"},
    {"kind": "phone", "position": 0, "strength": "shared"},
)


def _item(
    item_id: str, evidence: tuple[dict[str, object], ...], *, status: str = "pending"
) -> NewErasureItem:
    """A Zisson contact of customer acme found for an erasure."""
    return NewErasureItem(
        system="zisson",
        kind="contact",
        item_id=item_id,
        scope="acme",
        status=status,
        evidence=evidence,
    )


def _request(store: Store, **extra: object) -> str:
    return store.create_erasure(
        "acme",
        scope="subject",
        identifiers='{"emails": ["ola@firma.no"], "phones": ["+4722334455"], "names": []}',
        masked={"emails": ["o***@f***.no"], "phones": ["+47 ** ** ** 55"], "names": []},
        requested_by="anne",
        reason="ticket 1",
        deadline=timedelta(hours=72),
        **extra,  # type: ignore[arg-type]
    )


def test_items_keep_their_status_and_evidence(store: Store) -> None:
    request = _request(store)
    new = store.add_erasure_items(
        request,
        [
            _item("z-1", PERSONAL),
            _item("z-2", SHARED, status="ambiguous"),
            ("firestore", "contact", "f-1", "acme"),  # a tuple: pending, no evidence
        ],
        phase="plan",
    )
    assert new == 3
    items = {i.item_id: i for i in store.erasure_items(request)}
    assert items["z-1"].status == "pending" and items["z-1"].evidence == PERSONAL
    assert items["z-2"].status == "ambiguous" and items["z-2"].evidence == SHARED
    assert items["f-1"].evidence is None and items["f-1"].included_by is None
    assert [i.item_id for i in store.erasure_items(request, status="ambiguous")] == ["z-2"]

    # Found again in the sweep, now with other evidence: the plan's row stays as it was.
    again = store.add_erasure_items(
        request,
        [
            _item("z-2", PERSONAL),
            _item("z-3", SHARED, status="ambiguous"),
        ],
        phase="sweep",
    )
    assert again == 1
    items = {i.item_id: i for i in store.erasure_items(request)}
    assert items["z-2"].status == "ambiguous" and items["z-2"].phase == "plan"
    assert items["z-3"].phase == "sweep" and items["z-3"].evidence == SHARED


def test_an_admin_includes_ambiguous_items_only(store: Store) -> None:
    request = _request(store)
    store.add_erasure_items(
        request,
        [
            NewErasureItem(system="zisson", kind="contact", item_id="z-1", scope="acme"),
            _item("z-2", SHARED, status="ambiguous"),
            _item("z-3", SHARED, status="ambiguous"),
        ],
        phase="plan",
    )
    changed = store.include_erasure_items(
        request, [("zisson", "contact", "z-1"), ("zisson", "contact", "z-2")], by="bjørn"
    )
    assert changed == 1  # z-1 was to be erased anyway
    items = {i.item_id: i for i in store.erasure_items(request)}
    assert items["z-2"].status == "pending" and items["z-2"].included_by == "bjørn"
    assert items["z-2"].included_at is not None and items["z-2"].evidence == SHARED
    assert items["z-1"].included_by is None and items["z-3"].status == "ambiguous"
    # Again: nothing more changes.
    assert store.include_erasure_items(request, [("zisson", "contact", "z-2")], by="x") == 0
    assert store.erasure_items(request, status="ambiguous")[0].item_id == "z-3"


def test_the_plans_weights_and_early_includes_are_kept_without_identifiers(
    store: Store, store_url: str
) -> None:
    includes = [{"item": "zisson:k3f7q2ma", "by": "anne", "at": "2026-12-04T10:00:00+00:00"}]
    request = _request(store, includes=includes)
    row = store.get_erasure(request)
    assert list(row.includes) == includes and row.strengths == ()
    weights = [
        {"kind": "email", "position": 0, "strength": "personal"},
        {"kind": "phone", "position": 0, "strength": "shared"},
    ]
    assert store.update_erasure(request, strengths=weights)
    row = store.get_erasure(request)
    assert list(row.strengths) == weights
    # What is stored of the evidence names kinds and positions, never a value.
    store.add_erasure_items(
        request,
        [_item("z-9", SHARED, status="ambiguous")],
        phase="plan",
    )
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            stored = " ".join(
                conn.execute(sa.select(sa.cast(erasure_items.c.evidence, sa.Text))).scalars()
            )
    finally:
        engine.dispose()
    assert "position" in stored and "22334455" not in stored and "ola@" not in stored


def test_a_0007_store_gains_the_columns_and_keeps_its_items(
    store_url: str, master_key: bytes
) -> None:
    _migrate(store_url, "0007")
    with Store.open(store_url, master_key=master_key) as store:  # migrates to head
        request = _request(store)
        store.add_erasure_items(request, [("zisson", "contact", "z-1", "acme")], phase="plan")
    _migrate(store_url, "0007", down=True)
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("erasure_items")}
    finally:
        engine.dispose()
    assert "evidence" not in columns and "included_by" not in columns
    _migrate(store_url, "head")
    with Store.open(store_url, master_key=master_key) as store:
        [item] = store.erasure_items(request)
        assert item.status == "pending" and item.evidence is None
        assert store.get_erasure(request).strengths == ()


def test_only_a_request_that_can_be_moved_on_asks_for_the_erasure_worker(store: Store) -> None:
    assert not store.erasures_to_advance()
    request = _request(store)
    assert store.erasures_to_advance()  # received: to be planned
    store.update_erasure(request, state=ErasureState.AWAITING_APPROVAL)
    assert not store.erasures_to_advance()  # a person's turn, not the daemon's
    store.update_erasure(request, state=ErasureState.EXECUTING)
    assert store.erasures_to_advance()
    store.update_erasure(request, state=ErasureState.COMPLETED)
    assert not store.erasures_to_advance()
