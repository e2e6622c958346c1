"""Whole-customer purge, and the counts behind status output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from daemon.store import KeyDestroyed, Store
from daemon.store.history import HistoryCutoffs
from daemon.store.schema import customer_keys, customers, fingerprints, metadata


def fill(store: Store, customer_id: str) -> list[str]:
    """Something in every table for the customer; returns its link ids."""
    link = store.create_link(customer_id)
    store.set_member(customer_id, link, "zisson", "z-1", "v1", {"given_name": "a"})
    store.set_member(customer_id, link, "outlook", "o-1", "ck", {"given_name": "a"})
    empty = store.create_link(customer_id)
    store.add_tombstones(customer_id, ["t1"])
    store.set_cursor(customer_id, "outlook", "mailbox", "delta")
    run = store.start_run("sync", customer_id=customer_id, trigger="schedule")
    store.add_event(run, "read", detail={"records": 2})
    store.quarantine(customer_id, "zisson", "z-9", "phones: unparseable", "<Contact/>")
    store.open_dispute(customer_id, link, "emails", {"zisson": "a", "outlook": "b"})
    store.open_task(customer_id, "zisson", link, "update", "fp", "Endre tittel")
    store.approve_deletions(customer_id, 10, by="admin", reason="ticket")
    store.journal_begin(
        f"op-{customer_id}",
        run_id=run,
        customer_id=customer_id,
        link_id=link,
        system="zisson",
        kind="update",
    )
    store.finish_run(run, "completed", {})
    quiet = store.start_run("sync", customer_id=customer_id, trigger="schedule")
    store.finish_run(quiet, "completed", {}, quiet=True)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    store.prune_history(  # the quiet run, now counted in its day's tally
        HistoryCutoffs(
            runs=long_ago,
            quiet_runs=datetime.now(UTC) + timedelta(seconds=1),
            journal=long_ago,
            work=long_ago,
            quarantine=long_ago,
            instances=long_ago,
        )
    )
    store.append_ledger("sync.completed", customer_id, {})
    request = store.create_erasure(
        customer_id,
        scope="subject",
        identifiers="{}",
        masked={},
        requested_by="admin",
        reason="ticket",
        deadline=timedelta(days=30),
    )
    store.add_erasure_items(request, [("zisson", "contact", "z-1", customer_id)], phase="plan")
    return [link, empty]


def rows_of(store: Store, customer_id: str, link_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with store._engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table is customers:
                where = customers.c.id == customer_id
            elif table is fingerprints:
                where = fingerprints.c.link_id.in_(link_ids)
            elif "customer_id" in table.c:
                where = table.c.customer_id == customer_id
            else:
                continue
            n = conn.scalar(sa.select(sa.func.count()).select_from(table).where(where))
            if n:
                counts[table.name] = n
    return counts


def test_purge_leaves_only_runs_events_and_the_shredded_key(store: Store) -> None:
    c1_links = fill(store, "c1")
    c2_links = fill(store, "c2")
    c2_before = rows_of(store, "c2", c2_links)
    assert set(rows_of(store, "c1", c1_links)) == {t.name for t in metadata.sorted_tables} - {
        "store_meta",
        "ledger_checkpoints",  # not any one customer's
        "erasure_items",  # belong to a request, not directly to a customer
        "api_tokens",  # people's access, not customers' data
        "api_audit",
        "api_sessions",  # dashboard sign-ins: people's access, like api_tokens
        "work_items",  # the daemons' queue, keyed by customer id but holding nothing of it
        "instances",
        "connector_secrets",  # a Zisson account's token, keyed by account, not customer
    }

    counted = store.customer_rows("c1")
    deleted = store.purge_customer("c1")
    assert counted == deleted  # counted beforehand, for a certificate that survives a crash

    # What stays is the proof: runs (and the tallies of quiet ones), the ledger, the
    # erasure request; no personal data.
    assert rows_of(store, "c1", c1_links) == {
        "customers": 1,
        "customer_keys": 1,
        "runs": 1,
        "run_events": 1,
        "run_tallies": 1,
        "ledger_entries": 1,
        "erasure_requests": 1,
    }
    assert deleted == {
        "fingerprints": 2,
        "link_members": 2,
        "links": 2,
        "tombstones": 1,
        "cursors": 1,
        "quarantine": 1,
        "disputes": 1,
        "manual_tasks": 1,
        "approvals": 1,
        "op_journal": 1,
    }
    with store._engine.connect() as conn:
        marker = conn.execute(
            sa.select(customer_keys).where(customer_keys.c.customer_id == "c1")
        ).one()
    assert marker.wrapped_key is None and marker.destroyed_at is not None
    with pytest.raises(KeyDestroyed):
        store.customer_key("c1")
    assert rows_of(store, "c2", c2_links) == c2_before
    assert store.purge_customer("c1") == dict.fromkeys(deleted, 0)  # idempotent


def test_counts(store: Store) -> None:
    assert store.counts("c1") == {
        "links": 0,
        "members": {},
        "open_disputes": 0,
        "open_tasks": 0,
        "quarantined": 0,
        "pending_ops": 0,
    }
    fill(store, "c1")
    store.quarantine("c1", "zisson", "z-8", "bad", "p")
    store.release_quarantine("c1", "zisson", ["z-8"])
    assert store.counts("c1") == {
        "links": 2,
        "members": {"outlook": 1, "zisson": 1},
        "open_disputes": 1,
        "open_tasks": 1,
        "quarantined": 1,
        "pending_ops": 1,
    }
