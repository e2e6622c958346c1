"""Per-customer keys: created once, shared by racing callers, shredded for good; the
master key changed (rekey), resumably; the SQLite files private."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon import crypto
from daemon.crypto import CryptoError
from daemon.store import KeyDestroyed, RekeyInterrupted, Store, WrongMasterKey
from daemon.store.schema import connector_secrets, customer_keys
from tests.fixtures.store import OpenStore, raw_bytes


def test_key_is_created_once_and_kept(store: Store, open_store: OpenStore) -> None:
    key = store.customer_key("c1")
    assert len(key) == 32
    assert store.customer_key("c1") == key
    assert store.customer_key("c2") != key
    assert open_store().customer_key("c1") == key  # another process, same key


def test_racing_first_calls_get_one_key(store: Store, open_store: OpenStore) -> None:
    stores = [store, open_store()]  # two engines: two "processes"
    customers = [f"race-{i}" for i in range(10)]
    results: dict[int, list[bytes]] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def fetch(index: int) -> None:
        for customer in customers:
            barrier.wait()
            results[index].append(stores[index].customer_key(customer))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results[0]) == len(customers)
    assert results[0] == results[1]
    with store._engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(customer_keys)) == 10


def test_destroyed_key_raises_instead_of_being_recreated(store: Store) -> None:
    store.customer_key("c1")
    store.destroy_customer_key("c1")
    with pytest.raises(KeyDestroyed, match="c1"):
        store.customer_key("c1")
    with pytest.raises(CryptoError):  # also catchable as the crypto module's error
        store.customer_key("c1")
    store.destroy_customer_key("c1")  # idempotent


def test_a_customer_can_be_shredded_before_it_ever_had_a_key(store: Store) -> None:
    store.destroy_customer_key("never-seen")
    with pytest.raises(KeyDestroyed):
        store.customer_key("never-seen")


def test_shredded_key_is_gone_from_the_database(store: Store, store_url: str) -> None:
    store.customer_key("c1")
    with store._engine.connect() as conn:
        wrapped = conn.scalar(sa.select(customer_keys.c.wrapped_key))
    assert wrapped is not None
    assert wrapped in raw_bytes(store, store_url, customer_keys, "wrapped_key")

    store.destroy_customer_key("c1")

    assert wrapped not in raw_bytes(store, store_url, customer_keys, "wrapped_key")


def test_wrong_master_key_is_refused_at_open(open_store: OpenStore, store: Store) -> None:
    store.customer_key("c1")
    with pytest.raises(WrongMasterKey, match="another"):
        open_store(master_key=os.urandom(32))


def test_wrong_master_key_on_a_key_row_is_a_clear_error(store: Store, master_key: bytes) -> None:
    store.customer_key("c1")
    # A key row wrapped under another master key (restored from elsewhere, damaged).
    other = crypto.encrypt(os.urandom(32), os.urandom(32), context="pdsync/customer-key/c1")
    with store._engine.begin() as conn:
        conn.execute(sa.update(customer_keys).values(wrapped_key=other))
    with pytest.raises(WrongMasterKey, match="c1"):
        store.customer_key("c1")


def test_rekey_rewraps_everything_and_only_the_new_key_opens_the_store(
    store: Store, store_url: str, master_key: bytes
) -> None:
    keys = {c: store.customer_key(c) for c in ("c1", "c2")}
    store.customer_key("gone")
    store.destroy_customer_key("gone")
    store.set_connector_secret("zisson", "acct-1", "token-1")
    token = store.create_token("ops", "admin", created_by="test")
    new = os.urandom(32)

    result = store.rekey(new)
    assert (result.customer_keys, result.connector_secrets, result.resumed) == (2, 1, False)
    store.close()

    with pytest.raises(WrongMasterKey):
        Store.open(store_url, master_key=master_key)
    with Store.open(store_url, master_key=new) as again:
        assert {c: again.customer_key(c) for c in keys} == keys
        secret = again.connector_secret("zisson", "acct-1")
        assert secret is not None and secret.value == "token-1"
        assert again.authenticate_token(token) is not None
        with pytest.raises(KeyDestroyed):
            again.customer_key("gone")


def test_an_interrupted_rekey_leaves_every_row_readable_and_a_rerun_finishes(
    store: Store, store_url: str, master_key: bytes
) -> None:
    keys = {c: store.customer_key(c) for c in ("c1", "c2")}
    store.set_connector_secret("zisson", "a", "token-a")
    store.set_connector_secret("zisson", "b", "token-b")
    # A row that neither key opens stops the change half-way, as a crash would.
    damaged = crypto.encrypt(os.urandom(32), b"x", context="pdsync/connector-secret/zisson/b")
    with store._engine.begin() as conn:
        conn.execute(
            sa.update(connector_secrets)
            .where(connector_secrets.c.account == "b")
            .values(value=damaged)
        )
    new = os.urandom(32)
    with pytest.raises(WrongMasterKey, match="zisson b"):
        store.rekey(new)
    store.close()

    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        wrapped = conn.execute(sa.select(customer_keys.c.customer_id, customer_keys.c.wrapped_key))
        for customer_id, blob in wrapped:
            context = f"pdsync/customer-key/{customer_id}"
            assert _opens(new, blob, context) or _opens(master_key, blob, context)
        secret_a = conn.scalar(
            sa.select(connector_secrets.c.value).where(connector_secrets.c.account == "a")
        )
        assert secret_a is not None and _opens(new, secret_a, "pdsync/connector-secret/zisson/a")
    for key in (master_key, new):  # no instance works on a half-changed store
        with pytest.raises(RekeyInterrupted, match="rekey"):
            Store.open(store_url, master_key=key)

    with engine.begin() as conn:  # the operator gives up the damaged token
        conn.execute(sa.delete(connector_secrets).where(connector_secrets.c.account == "b"))
    engine.dispose()
    with Store.open(store_url, master_key=master_key, finishing_rekey=True) as resumed:
        assert resumed.rekey(new).resumed
    with Store.open(store_url, master_key=new) as done:
        assert {c: done.customer_key(c) for c in keys} == keys
        secret = done.connector_secret("zisson", "a")
        assert secret is not None and secret.value == "token-a"


def _opens(key: bytes, blob: bytes, context: str) -> bool:
    try:
        crypto.decrypt(key, blob, context=context)
    except CryptoError:
        return False
    return True


def test_a_new_sqlite_store_and_its_wal_are_readable_by_the_owner_only(
    tmp_path: Path, master_key: bytes
) -> None:
    umask = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path / 'new' / 's.db'}"  # its directory made too
        with Store.open(url, master_key=master_key) as store:
            store.customer_key("c1")
            modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("new/s.db*")}
    finally:
        os.umask(umask)
    assert {"s.db", "s.db-wal", "s.db-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}
