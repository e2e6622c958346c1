"""The daemon serves under its own cyclic-collector thresholds (daemon/service.py
GC_THRESHOLDS: a full collection of a large heap held the event loop, and so every sync
and API request, for up to a quarter second), and gives the process back its own when it
stops, however it stops: the CLI and the tests serve in-process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemon.service import GC_THRESHOLDS, collector_thresholds


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
