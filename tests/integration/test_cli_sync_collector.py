"""`pdsync sync` runs its syncs under the daemon's collector thresholds (daemon/collector.py
GC_THRESHOLDS), and gives the process back its own: under CPython's, a 5,000-contact
first sync made 13 full collections of the whole heap and took 13.6 s against 12.6 s.
Against the Firestore emulator and the Zisson simulator."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.collector import GC_THRESHOLDS
from tests.integration.sync_world import SyncWorld
from tests.integration.test_cli_output import pdsync
from tests.integration.test_sync import person

CONTACTS = 200  # enough for a few young collections at 10,000 new objects each

pytestmark = [pytest.mark.emulator, pytest.mark.usefixtures("cli_logging_restored")]


@pytest.fixture
def thresholds_seen() -> Iterator[list[tuple[int, int, int]]]:
    """The thresholds in force at each collection in a sync's threads (where the
    command's syncs plan and write; the test's own loop runs the simulator)."""
    seen: list[tuple[int, int, int]] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and threading.current_thread().name.startswith("sync"):
            seen.append(gc.get_threshold())

    gc.callbacks.append(note)
    yield seen
    gc.callbacks.remove(note)


async def test_a_cli_sync_runs_under_the_daemons_thresholds(
    world: SyncWorld, world_config: Path, thresholds_seen: list[tuple[int, int, int]]
) -> None:
    await world.put_card([person(i) for i in range(CONTACTS)])
    own = gc.get_threshold()
    assert own != GC_THRESHOLDS
    result = await pdsync(world_config, "sync")
    assert result.exit_code == 0, result.output
    assert len(world.users()) == CONTACTS
    assert thresholds_seen, "no collection in a sync thread"
    assert set(thresholds_seen) == {GC_THRESHOLDS}
    assert gc.get_threshold() == own
