"""The store's schema: migrations, re-opening, and agreement with schema.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from daemon.store import Store, StoreError, StoreUnavailable
from daemon.store.schema import metadata
from tests.fixtures.store import OpenStore

TABLES = {table.name for table in metadata.sorted_tables}


@contextmanager
def statements_seen(url: str) -> Iterator[list[str]]:
    """Every SQL statement sent to the database at `url` while the block runs."""
    database = sa.make_url(url).database
    seen: list[str] = []

    def record(conn: sa.Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.engine.url.database == database:  # not the fixtures' CREATE DATABASE
            seen.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)


# The newest migration: every test that opens a store expects to find it applied.
HEAD = "0012"


def inspect_db(url: str) -> tuple[set[str], str | None]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            return set(sa.inspect(conn).get_table_names()), revision
    finally:
        engine.dispose()


def test_open_migrates_an_empty_database_to_head(store_url: str, master_key: bytes) -> None:
    assert inspect_db(store_url) == (set(), None)

    with Store.open(store_url, master_key=master_key):
        pass

    tables, revision = inspect_db(store_url)
    assert tables == TABLES | {"alembic_version"}
    assert revision == HEAD


def test_reopening_changes_nothing(open_store: OpenStore, store_url: str) -> None:
    first = open_store()
    link = first.create_link("c1")
    first.close()

    with statements_seen(store_url) as seen:
        again = open_store()
    changing = {"INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP"}
    writes = [s for s in seen if s.split()[0].upper() in changing]
    assert writes == []
    assert any("alembic_version" in s for s in seen)  # it did look
    assert link in again.load_state("c1").links


def test_migrated_database_matches_schema_py(store: Store, store_url: str) -> None:
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_instances_starting_together_migrate_once(store_url: str, master_key: bytes) -> None:
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []
    stores: list[Store] = []

    def start() -> None:
        barrier.wait()
        try:
            stores.append(Store.open(store_url, master_key=master_key))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in stores:
        opened.close()
    assert errors == []
    assert inspect_db(store_url)[1] == HEAD


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'sub' / 'store.db'}", master_key=bytes(32))
    # The store's own engine, so its connect hook has run.
    with store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_closed_store_refuses_work(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.create_link("c1")


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "mysql://x/y", "postgresql+psycopg2://x/y"],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Store.open(url, master_key=bytes(32))


def test_short_master_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Store.open(f"sqlite:///{tmp_path / 's.db'}", master_key=b"short")


def test_unreachable_database_is_reported_as_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        Store.open("postgresql+psycopg://postgres@127.0.0.1:1/none", master_key=bytes(32))
