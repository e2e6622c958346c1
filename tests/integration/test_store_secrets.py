"""Connector secrets in the store, on SQLite and PostgreSQL: encrypted, and held by one
exchange at a time across Store objects (as instances would hold them)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from daemon.store import Store, StoreUnavailable, WrongMasterKey
from daemon.store._db import utcnow
from daemon.store.schema import connector_secrets
from tests.fixtures.store import OpenStore, raw_bytes

ACCOUNT = "json:00000000-0000-0000-0000-00000000abcd"


def test_a_secret_is_stored_encrypted_and_versioned(open_store: OpenStore, store_url: str) -> None:
    first, second = open_store(), open_store()
    assert first.connector_secret("zisson", ACCOUNT) is None

    assert first.set_connector_secret("zisson", ACCOUNT, "rt-første-verdi") == 1
    assert second.set_connector_secret("zisson", ACCOUNT, "rt-second-value") == 2

    stored = first.connector_secret("zisson", ACCOUNT)
    assert stored is not None and (stored.value, stored.version) == ("rt-second-value", 2)
    assert "rt-second" not in repr(stored)
    assert first.connector_secret("outlook", ACCOUNT) is None  # per system
    held = raw_bytes(first, store_url, connector_secrets, "value")
    assert b"rt-f" not in held and b"rt-second-value" not in held


def test_a_secret_moved_to_another_account_does_not_open(store: Store) -> None:
    store.set_connector_secret("zisson", ACCOUNT, "rt-1")
    other = "json:11111111-1111-1111-1111-111111111111"
    with store._write() as conn:  # a damaged or tampered row
        value = conn.execute(connector_secrets.select()).one().value
        conn.execute(
            connector_secrets.insert().values(
                system="zisson", account=other, value=value, version=1, updated_at=utcnow()
            )
        )
    with pytest.raises(WrongMasterKey):
        store.connector_secret("zisson", other)


def test_an_exchange_stores_what_it_staged_and_nothing_after_an_error(store: Store) -> None:
    with store.secret_exchange("zisson", ACCOUNT) as slot:
        assert (slot.value, slot.version) == (None, 0)
        slot.stage("rt-1")
    with pytest.raises(RuntimeError), store.secret_exchange("zisson", ACCOUNT) as slot:
        assert slot.value == "rt-1"
        slot.stage("rt-2")
        raise RuntimeError("the server refused it")
    with store.secret_exchange("zisson", ACCOUNT) as slot:
        pass  # nothing staged: nothing written
    stored = store.connector_secret("zisson", ACCOUNT)
    assert stored is not None and (stored.value, stored.version) == ("rt-1", 1)


def test_a_second_holder_waits_and_then_sees_the_first_ones_value(
    open_store: OpenStore,
) -> None:
    first, second = open_store(), open_store()
    first.set_connector_secret("zisson", ACCOUNT, "rt-1")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.secret_exchange("zisson", ACCOUNT) as slot:
            holding.set()
            release.wait(10)
            slot.stage("rt-2")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with (
            pytest.raises(StoreUnavailable, match="held its secret"),
            second.secret_exchange("zisson", ACCOUNT, wait=timedelta(seconds=0.2)),
        ):
            pass
        # Another account is not held up.
        second.set_connector_secret("zisson", "json:other", "rt-x", wait=timedelta(seconds=2))
    finally:
        release.set()
        holder.join()
    with second.secret_exchange("zisson", ACCOUNT, wait=timedelta(seconds=5)) as slot:
        assert (slot.value, slot.version) == ("rt-2", 2)


def test_exchanges_from_many_threads_and_stores_never_overlap(open_store: OpenStore) -> None:
    stores = [open_store(), open_store()]
    rounds, threads_per_store = 10, 3
    errors: list[BaseException] = []
    inside = threading.Semaphore(1)

    def work(store: Store) -> None:
        try:
            for _ in range(rounds):
                with store.secret_exchange("zisson", ACCOUNT) as slot:
                    assert inside.acquire(blocking=False), "two holders at once"
                    try:
                        slot.stage(str(int(slot.value or "0") + 1))  # lost if overlapped
                    finally:
                        inside.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(store,))
        for store in stores
        for _ in range(threads_per_store)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    total = rounds * threads_per_store * len(stores)
    stored = stores[0].connector_secret("zisson", ACCOUNT)
    assert stored is not None and (stored.value, stored.version) == (str(total), total)
