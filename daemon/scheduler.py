"""The only module that knows APScheduler: moving to 4.x touches this file alone.

All durable state lives in the store; the scheduler is rebuilt from config at start.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

Job = Callable[[], Awaitable[object]]


class Schedule:
    """Interval jobs on the running event loop; a job never overlaps itself."""

    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def every(
        self, job_id: str, seconds: float, job: Job, *, first_in: float | None = None
    ) -> None:
        """Run `job` every `seconds`; the first run after `first_in` seconds (default: a
        random point within the first interval, so customers spread out)."""
        delay = random.uniform(0, min(seconds, 30)) if first_in is None else first_in
        self._scheduler.add_job(
            job,
            IntervalTrigger(seconds=seconds, jitter=min(seconds * 0.1, 30)),
            id=job_id,
            name=job_id,
            next_run_time=datetime.now(UTC) + timedelta(seconds=delay),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(seconds),
            replace_existing=True,
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop scheduling; running jobs are awaited by the caller (see service)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @property
    def job_ids(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]
