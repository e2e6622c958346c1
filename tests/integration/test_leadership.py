"""Leadership on PostgreSQL: the advisory lock goes with the leadership let go of."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.store import Store
from daemon.store.work import Leadership
from tests.fixtures.store import OpenStore

postgres_only = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


@postgres_only
def test_a_released_leadership_is_free_for_another_instance_at_once(
    store: Store, open_store: OpenStore
) -> None:
    # The leader's store stays open (its engine's pool with it), as in a daemon that
    # steps down and goes on: the lock must not stay behind in a pooled session.
    leader = Leadership(store._engine, store.dialect)
    other = open_store()
    follower = Leadership(other._engine, other.dialect)
    try:
        assert leader.try_acquire()
        assert not follower.try_acquire()
        leader.release()
        assert follower.try_acquire()
        assert not leader.try_acquire()
    finally:
        leader.release()
        follower.release()


@postgres_only
def test_leadership_lost_to_a_failed_check_is_not_kept_in_the_pool(
    store: Store, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = Leadership(store._engine, store.dialect)
    other = open_store()
    follower = Leadership(other._engine, other.dialect)
    try:
        assert leader.try_acquire()
        conn = leader._conn
        assert conn is not None

        def cancelled(*args: Any, **kwargs: Any) -> object:
            # The check fails while the session lives on (a statement cancelled).
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("canceling statement"))

        monkeypatch.setattr(conn, "scalar", cancelled)
        assert not leader.still_leading()
        # The session is ended rather than pooled: the server frees the lock as it
        # notices, a moment later.
        deadline = time.monotonic() + 5
        while not follower.try_acquire() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.is_leader
    finally:
        leader.release()
        follower.release()
