"""Store work off the event loop, in threads that are never left behind.

The daemon's syncs, erasures, mailbox turns and API share one event loop; a store call
that reads or writes thousands of rows would hold all of them up. `in_thread` runs such
a call in a thread, in the calling task's context (its log fields). A thread cannot be
stopped: when the task is cancelled meanwhile (a stop past the drain, an API request
gone), it waits for the thread before it ends, so that nothing is written on behalf of
a run, or an erasure step, after the task that owns it is over.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(executor: Executor, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)` in one of `executor`'s threads, in this task's context."""
    context = contextvars.copy_context()
    done = asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(context.run, call, *args, **kwargs)
    )
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        await outlast(done)
        raise


async def outlast(future: asyncio.Future[Any]) -> None:
    """Wait until `future` is done, whatever cancellations come meanwhile (its outcome
    is dropped: the caller goes on with its own cancellation)."""
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # looked at, so asyncio does not report it as never retrieved
