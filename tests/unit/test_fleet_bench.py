"""The fleet bench's own arithmetic: how busy the mailbox was over the cycle."""

from __future__ import annotations

import pytest

from bench.fleet_bench import mailbox_use

A = ("app", "mailbox")
B = ("app", "other")


def test_mailbox_use_counts_only_the_cycle_and_the_busiest_mailbox() -> None:
    timeline = [
        (A, 0.0, 2.0),  # half inside the cycle [1, 5]
        (A, 1.0, 3.0),
        (A, 2.0, 3.0),
        (A, 6.0, 7.0),  # after the cycle
        (B, 1.0, 5.0),  # another mailbox, less used
    ]
    mean, levels = mailbox_use(timeline, 1.0, 5.0)
    # In flight: 2 over [1, 2], 2 over [2, 3], 0 over [3, 5].
    assert mean == pytest.approx((2 * 1 + 2 * 1) / 4)
    assert levels == pytest.approx({0: 0.5, 2: 0.5})


def test_mailbox_use_of_an_idle_cycle() -> None:
    assert mailbox_use([], 0.0, 1.0) == (0.0, {})
