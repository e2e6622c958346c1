"""The daemon serves under its own cyclic-collector thresholds (daemon/collector.py
GC_THRESHOLDS: a full collection of a large heap held the event loop, and so every sync
and API request, for up to a quarter second), and gives the process back its own when it
stops, however it stops: the CLI and the tests serve in-process. The cycles syncs leave
behind are then collected by the daemon itself, when no work is in hand (CycleCollector),
and at least every ten minutes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemon.collector import (
    FULL_COLLECTION_SECONDS,
    GC_THRESHOLDS,
    YOUNG_PER_QUIET_COLLECTION,
    CycleCollector,
    collector_thresholds,
)


@pytest.fixture
def own_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(123, 4, 5)
    yield (123, 4, 5)
    gc.set_threshold(*before)


def test_the_thresholds_hold_while_serving_and_the_process_gets_its_own_back(
    own_thresholds: tuple[int, int, int],
) -> None:
    with collector_thresholds():
        assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_threshold() == own_thresholds
    with pytest.raises(RuntimeError), collector_thresholds():
        raise RuntimeError("a config error at start")
    assert gc.get_threshold() == own_thresholds
    # Young collections stay automatic: only how often they run changes.
    assert gc.isenabled() and GC_THRESHOLDS[0] > 700


@pytest.fixture
def explicit_collections_only() -> Iterator[None]:
    """No automatic collection: the test says when one happens."""
    gc.disable()
    yield
    gc.enable()


def young_collections(n: int) -> None:
    """As if n * 10,000 new objects had been made."""
    for _ in range(n):
        gc.collect(0)


@pytest.mark.usefixtures("explicit_collections_only")
def test_the_daemon_collects_cycles_after_much_work_when_quiet_and_else_every_ten_minutes() -> None:
    ten_minutes = FULL_COLLECTION_SECONDS
    collector = CycleCollector(now=0.0)
    assert not collector.due(ten_minutes, busy=False)  # nothing allocated: an idle daemon
    young_collections(1)
    assert not collector.due(30.0, busy=False)  # a little: it waits
    assert collector.due(ten_minutes, busy=False)  # but not for ever
    collector.collect(ten_minutes)
    young_collections(YOUNG_PER_QUIET_COLLECTION)  # a large sync or two
    assert not collector.due(ten_minutes + 30, busy=True)  # work in hand: it waits
    assert collector.due(ten_minutes + 60, busy=False)  # none: now
    assert not collector.due(2 * ten_minutes - 1, busy=True)
    assert collector.due(2 * ten_minutes, busy=True)  # always busy: every ten minutes
    gc.collect()  # CPython's own full collection counts as one, from the next look
    assert not collector.due(2 * ten_minutes + 30, busy=True)
    young_collections(1)
    assert not collector.due(3 * ten_minutes, busy=True)
    assert collector.due(3 * ten_minutes + 30, busy=True)


@pytest.mark.usefixtures("explicit_collections_only")
def test_a_full_collection_frees_the_cycles_a_sync_leaves() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    gc.collect()
    before = len(gc.get_objects())
    for _ in range(5_000):
        Node()
    assert len(gc.get_objects()) >= before + 5_000
    assert CycleCollector(now=0.0).collect(1.0) >= 5_000
