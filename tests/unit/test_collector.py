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
    BUSY_COLLECTION_SECONDS,
    FULL_COLLECTION_SECONDS,
    GC_THRESHOLDS,
    YOUNG_PER_QUIET_COLLECTION,
    CycleCollector,
    WorkInHand,
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
    assert collector.due(ten_minutes + 30, busy=False)  # no work in hand: now
    collector.collect(ten_minutes + 30)
    assert not collector.due(ten_minutes + 60, busy=False)  # idle: nothing to do
    gc.collect()  # CPython's own full collection counts as one, from the next look
    assert not collector.due(2 * ten_minutes + 30, busy=False)


@pytest.mark.usefixtures("explicit_collections_only")
def test_while_work_is_in_hand_it_collects_once_a_minute_whatever_the_young_collections() -> None:
    """Many small syncs made no young collection for minutes while cyclic garbage piled
    up in the old generation: work in hand is what counts, not young collections."""
    minute = BUSY_COLLECTION_SECONDS
    collector = CycleCollector(now=0.0)
    assert not collector.due(30.0, busy=True)
    assert collector.due(minute, busy=True)  # no young collection at all: still due
    collector.collect(minute)
    assert not collector.due(minute + 30, busy=True)
    assert collector.due(2 * minute, busy=True)
    collector.collect(2 * minute)
    assert not collector.due(2 * minute + 30, busy=True)  # more work after it
    # Then quiet with no young collection since: once, ten minutes on; then nothing.
    assert not collector.due(2 * minute + 60, busy=False)
    assert collector.due(2 * minute + FULL_COLLECTION_SECONDS, busy=False)
    collector.collect(2 * minute + FULL_COLLECTION_SECONDS)
    assert not collector.due(2 * minute + 2 * FULL_COLLECTION_SECONDS, busy=False)


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


def test_work_taken_between_two_looks_counts_as_busy() -> None:
    in_hand = WorkInHand()
    assert not in_hand.busy_since_asked()
    in_hand.add(1)
    assert in_hand.busy_since_asked()  # in hand now
    in_hand.discard(1)
    assert not in_hand.busy_since_asked()  # nothing taken since the last look
    in_hand.add(2)
    in_hand.discard(2)  # a short item, begun and done between two looks
    assert in_hand.busy_since_asked()
    assert not in_hand.busy_since_asked()
