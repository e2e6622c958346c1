"""Alembic environment of the store.

Store.open runs the migrations programmatically and hands over its connection (inside
its transaction) in `config.attributes["connection"]`. The alembic CLI works too
(`revision --autogenerate` to draft a new revision) with an ini file whose
script_location is this directory and whose sqlalchemy.url names a database.

A new revision: add versions/NNNN_<what>.py with down_revision set to the newest one,
change schema.py to match, and run tests/integration/test_store_schema.py, which
compares the migrated database with schema.py on both backends.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from daemon.store import _db
from daemon.store.schema import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; autogenerate then writes batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("the store's migrations run online only (no --sql)")
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url, or open the store with Store.open")
    engine = _db.make_engine(url)
    try:
        with _db.write_transaction(engine) as conn:
            run_migrations(conn)
    finally:
        engine.dispose()


main()
