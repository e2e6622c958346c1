"""What the benchmarks measure of the event loop itself."""

from __future__ import annotations

import asyncio
import time


class LoopStalls:
    """How long the event loop went without running a task that asked to wake every
    `tick` s: while it is held, every other customer's sync and the API wait."""

    def __init__(self, tick: float = 0.01) -> None:
        self.tick = tick
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.longest = max(self.longest, time.perf_counter() - asked - self.tick)

    def __enter__(self) -> LoopStalls:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
