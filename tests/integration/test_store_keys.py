"""Per-customer keys: created once, shared by racing callers, shredded for good."""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa

from daemon import crypto
from daemon.crypto import CryptoError
from daemon.store import KeyDestroyed, Store, WrongMasterKey
from daemon.store.schema import customer_keys
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
