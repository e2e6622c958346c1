"""Running calls side by side so that one failure cancels the rest and surfaces alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from connectors.base import ConnectorError

T = TypeVar("T")


async def run_all(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Results in order. On a failure the other calls are cancelled (asyncio.gather
    would leave them running) and one error is raised, a ConnectorError where there is
    one, never an ExceptionGroup, so callers keep the connector's exception tree."""
    if not calls:
        return []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_call(call)) for call in calls]
    except BaseExceptionGroup as failures:
        flat = _leaves(failures)
        bugs = [e for e in flat if not isinstance(e, ConnectorError)]
        raise (bugs or flat)[0] from None
    return [task.result() for task in tasks]


async def _call(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves += _leaves(error)
        else:
            leaves.append(error)
    return leaves
