"""Revision 0002 (the ledger) upgrades a store made by revision 0001, and downgrades."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from daemon.ledger import Ledger, Signer
from daemon.store import Store, _db


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(_db.MIGRATIONS_DIR).replace("%", "%%"))
    engine = _db.make_engine(url)
    try:
        with _db.write_transaction(engine) as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_a_0001_store_gains_the_ledger_and_keeps_its_data(
    store_url: str, master_key: bytes
) -> None:
    _migrate(store_url, "0001")
    assert "ledger_entries" not in _tables(store_url)
    with Store.open(store_url, master_key=master_key) as store:  # migrates to head
        link = store.create_link("acme")
        entry = Ledger(store, Signer.generate()).record("sync.completed", customer_id="acme")
        assert entry.seq == 0
    assert {"ledger_entries", "ledger_checkpoints"} <= _tables(store_url)

    _migrate(store_url, "0001", down=True)
    assert not {"ledger_entries", "ledger_checkpoints"} & _tables(store_url)
    _migrate(store_url, "head")
    with Store.open(store_url, master_key=master_key) as store:
        assert link in store.load_state("acme").links
        assert store.ledger_size() == 0
