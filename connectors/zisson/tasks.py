"""Running calls concurrently so that one failure cancels the rest and surfaces alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from connectors.base import ConnectorError

T = TypeVar("T")


async def run_all(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Results in order. On failure the others are cancelled (asyncio.gather would leave
    them running) and one error is raised, not an ExceptionGroup, so callers keep the
    connector's exception tree: a bug if there is one, else the first ConnectorError.
    """
    if not calls:
        return []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_run(call)) for call in calls]
    except BaseExceptionGroup as failures:
        raise _first(failures) from None
    return [task.result() for task in tasks]


async def _run(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    flat: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            flat.append(error)
    for error in flat:
        if not isinstance(error, ConnectorError):
            return error
    return flat[0]
