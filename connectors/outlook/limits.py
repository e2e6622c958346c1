"""Per-mailbox limits: requests in flight (weighted) and a request budget per time window.

In flight: Graph allows 4 concurrent requests per app and mailbox, and a $batch is not
one request there: Graph hands its items to Exchange up to four at a time, each one
counting against the mailbox. So a request holds `weight` slots (a $batch of n items
holds min(n, 4)), and the base class's Limiter is replaced by `WeightedLimiter`.

Budget: at most N request units in any sliding window of W seconds.

Graph allows 10,000 requests per 10 minutes per app and mailbox (each $batch item is a
request). A token bucket with that rate would still allow a burst of a full bucket on
top of a full window's worth, so the budget is kept as a sliding log: a request is sent
only when the units spent in the last W seconds leave room for it, each request counted
from when its answer arrived (the server counted it before that). That never exceeds
the server's window, whether the server counts in fixed or sliding windows, and over
time runs at the budget's full rate.

A 429 pauses the whole mailbox until its Retry-After has passed, so the requests
already queued do not each spend a throttled attempt.

Across instances (`MailboxTurns`): both limits are the mailbox's, not a process's, so
several daemons on one store take turns at a mailbox. An instance sends to a mailbox
only while it holds the mailbox's lease (`MailboxLease`, daemon/affinity.py on
PostgreSQL); it gives the lease back when it has nothing more to send or, when another
instance is waiting, after a turn of `turn_seconds`, once its requests in flight are
answered. An instance waits for the lease in the lease itself (on PostgreSQL, in line
for the lock in the server), so the next instance has it as soon as it is given back,
and waiting costs no polling. The budget's window travels with the lease
(`RequestBudget.handoff` and `take_over`), so the next holder counts what the last one
spent. Why turns rather than shared slots: a $batch holds all four of a mailbox's slots
(see above), so two instances could rarely overlap anyway, while slots kept in the
store would cost a round trip to it per request and wake waiters only by polling; a
turn costs one hand-over (a few milliseconds: two commits and the server waking the
next in line) and each holder runs the in-process limiter at full speed. Turns are
short (a quarter of a second while others wait): a sync's every step on the mailbox
waits for the turns of the instances in line before it, so long turns make every sync
slow while the mailbox sits idle between one holder's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from connectors.base import Limiter

T = TypeVar("T")

# How many slots the request about to be sent needs; set around `with_retry` by the
# Graph client, read by WeightedLimiter.slot (with_retry cannot pass it through).
slot_weight: contextvars.ContextVar[int] = contextvars.ContextVar("slot_weight", default=1)


class WeightedLimiter(Limiter):
    """At most `concurrency` slots in use per scope; a request takes `slot_weight` slots.

    Waiters are served first come, first served, so a $batch waiting for four free slots
    is not overtaken forever by single requests.
    """

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self.concurrency = concurrency
        self._used: dict[str, int] = {}
        self._queues: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self.max_in_use = 0  # the most slots ever held at once in one scope

        self.turns: MailboxTurns | None = None  # set when instances share the mailbox

    @contextlib.asynccontextmanager
    async def slot(self, scope: str) -> AsyncIterator[None]:
        weight = max(1, min(slot_weight.get(), self.concurrency))
        await self._acquire(scope, weight)
        try:
            if self.turns is None:
                yield
            else:
                async with self.turns.turn(scope):
                    yield
        finally:
            self._release(scope, weight)

    async def _acquire(self, scope: str, weight: int) -> None:
        queue = self._queues.setdefault(scope, deque())
        used = self._used.get(scope, 0)
        if not queue and used + weight <= self.concurrency:
            self._take(scope, weight)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (weight, waiter)
        queue.append(entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(scope, weight)  # granted just as we were cancelled
            else:
                # _wake drops a waiter that was cancelled before it got its turn: then
                # the entry is no longer queued (Ctrl-C during an erasure hit this).
                with contextlib.suppress(ValueError):
                    queue.remove(entry)
                self._wake(scope)
            raise

    def _take(self, scope: str, weight: int) -> None:
        used = self._used.get(scope, 0) + weight
        self._used[scope] = used
        self.max_in_use = max(self.max_in_use, used)

    def _release(self, scope: str, weight: int) -> None:
        self._used[scope] = self._used.get(scope, 0) - weight
        self._wake(scope)

    def _wake(self, scope: str) -> None:
        queue = self._queues.get(scope)
        while queue:
            weight, waiter = queue[0]
            if self._used.get(scope, 0) + weight > self.concurrency:
                return
            queue.popleft()
            if not waiter.done():
                self._take(scope, weight)
                waiter.set_result(None)


class Spending:
    """Units reserved for one request; stamped when its answer is in."""

    __slots__ = ("settled_at", "units", "wall_second")

    def __init__(self, units: int) -> None:
        self.units = units
        self.settled_at = math.inf  # in flight: cannot leave the window yet
        # Its answer's time on the wall clock, rounded up to the second, once handed over
        # (see RequestBudget.handoff).
        self.wall_second: int | None = None


@dataclass
class _Scope:
    spent: deque[Spending] = field(default_factory=deque)
    total: int = 0
    paused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class RequestBudget:
    """At most `budget` units per `window` seconds for each quota scope (a mailbox).

    A request counts from when its answer arrives, not from when it was sent: the
    server counted it somewhere in between (a $batch's last items are admitted well
    after the envelope left), so only the answer's time is sure not to be too early.
    Until then its units stay in the window.
    """

    def __init__(
        self,
        budget: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget < 1 or window <= 0:
            raise ValueError("budget must be at least 1 and window positive")
        self.budget = budget
        self.window = window
        self.margin = min(0.5, window * 0.01)  # clock granularity, rounding on the server
        self._clock = clock
        self._scopes: dict[str, _Scope] = {}
        self.waited = 0.0  # seconds spent waiting for the budget, for tests and metrics

    def _scope(self, scope: str) -> _Scope:
        state = self._scopes.get(scope)
        if state is None:
            state = self._scopes[scope] = _Scope()
        return state

    def spent(self, scope: str) -> int:
        """Units in the current window (in flight included)."""
        state = self._scope(scope)
        self._expire(state, self._clock())
        return state.total

    @contextlib.asynccontextmanager
    async def spending(self, scope: str, units: int = 1) -> AsyncIterator[Spending]:
        """Reserve `units` (waiting for room), then stamp them when the block ends."""
        spending = await self.reserve(scope, units)
        try:
            yield spending
        finally:
            self.settle(scope, spending)

    async def reserve(self, scope: str, units: int = 1) -> Spending:
        """Wait until `units` fit into the scope's window, then hold them.

        Waiters are served in order (a lock per scope), so a large $batch is not starved
        by single requests. More units than the whole budget are held as the whole
        budget, so a too-large batch waits for an empty window instead of forever.
        """
        spending = Spending(max(1, min(units, self.budget)))
        state = self._scope(scope)
        async with state.lock:
            while True:
                now = self._clock()
                if now < state.paused_until:
                    await self._sleep(state.paused_until - now)
                    continue
                self._expire(state, now)
                if state.total + spending.units <= self.budget:
                    state.spent.append(spending)
                    state.total += spending.units
                    return spending
                room_at = self._room_at(state, spending.units)
                if math.isinf(room_at):
                    state.settled.clear()
                    started = self._clock()
                    await state.settled.wait()  # room only once an answer is in
                    self.waited += self._clock() - started
                else:
                    await self._sleep(room_at - now)

    def settle(self, scope: str, spending: Spending) -> None:
        spending.settled_at = self._clock()
        self._scope(scope).settled.set()

    def pause(self, scope: str, seconds: float) -> None:
        """Hold every request of the scope for `seconds` (the server said Retry-After)."""
        state = self._scope(scope)
        state.paused_until = max(state.paused_until, self._clock() + max(0.0, seconds))

    def paused_for(self, scope: str) -> float:
        return max(0.0, self._scope(scope).paused_until - self._clock())

    def handoff(self, scope: str) -> str:
        """The scope's window as it stands (what is spent in it, any pause), for the next
        holder of the mailbox's lease: JSON with wall-clock times, rounded up to the
        second (later leaves the window later: the safe side).

        Each answer's second is worked out once and then handed on as it is: worked out
        again from the monotonic clock at every hand-over, the rounding up (and the
        microseconds by which the two clocks' offset differs between readings) would
        move it a second later at almost every hand-over, and after some hundred turns
        the whole window would lie minutes in the future and hold the mailbox back."""
        state = self._scope(scope)
        now = self._clock()
        self._expire(state, now)
        offset = time.time() - now
        spent: dict[int, int] = {}
        for spending in state.spent:
            if spending.wall_second is not None:
                second = spending.wall_second
            elif math.isinf(spending.settled_at):  # in flight: counted from now
                second = math.ceil(now + offset)
            else:
                second = spending.wall_second = math.ceil(spending.settled_at + offset)
            spent[second] = spent.get(second, 0) + spending.units
        return json.dumps(
            {
                "spent": sorted(spent.items()),
                "paused_until": state.paused_until + offset if state.paused_until else 0.0,
            }
        )

    def take_over(self, scope: str, handoff: str) -> None:
        """Replace the scope's window with the one the last holder handed over: it holds
        this instance's earlier spending too (every holder took over the one before)."""
        data = json.loads(handoff)
        state = self._scope(scope)
        now = self._clock()
        offset = time.time() - now
        state.spent.clear()
        state.total = 0
        for second, units in data["spent"]:
            spending = Spending(int(units))
            spending.wall_second = int(second)
            spending.settled_at = float(second) - offset
            state.spent.append(spending)
            state.total += spending.units
        paused = float(data["paused_until"])
        if paused:
            state.paused_until = max(state.paused_until, paused - offset)
        self._expire(state, now)
        state.settled.set()

    def _expire(self, state: _Scope, now: float) -> None:
        # In answer order, roughly: one slow request holds back those behind it, which
        # errs on the safe side.
        horizon = now - self.window - self.margin
        while state.spent and state.spent[0].settled_at <= horizon:
            state.total -= state.spent.popleft().units

    def _room_at(self, state: _Scope, units: int) -> float:
        """When enough of the oldest entries will have left the window (inf: in flight)."""
        needed = state.total + units - self.budget
        freed, latest = 0, 0.0
        for spending in state.spent:
            freed += spending.units
            latest = max(latest, spending.settled_at)
            if freed >= needed:
                break
        return latest + self.window + self.margin + 1e-6

    async def _sleep(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.waited += seconds
        await asyncio.sleep(seconds)


class MailboxLease(Protocol):
    """One holder at a time per mailbox, across instances (daemon/affinity.py).

    Blocking calls (the caller runs them in a thread of its own). A holder that dies
    loses the lease at once (on PostgreSQL: with its session)."""

    def take(self, scope: str, wait: float = 0.0) -> str | None:
        """Take the lease, waiting for it up to `wait` seconds (in line behind the other
        instances that wait, and seen by the holder as waiting meanwhile): the last
        holder's budget hand-over ("" when there was none), or None when another
        instance still holds it. Not called while this instance holds it."""
        ...

    def others_waiting(self, scope: str) -> bool:
        """Whether another instance waits for the lease this one holds."""
        ...

    def give_back(self, scope: str, handoff: str) -> None:
        """Store `handoff` for the next holder and let the lease go."""
        ...


@dataclass
class _Turn:
    held: bool = False
    users: int = 0  # requests of this instance inside the turn
    wanted: int = 0  # requests of this instance waiting for a turn
    since: float = 0.0
    ending: bool = False  # no new request enters; the lease goes once `users` is 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # held and not ending
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the keeper has news
    keeper: asyncio.Task[None] | None = None


class MailboxTurns:
    """Instances take turns at each mailbox (see the module docstring).

    A request enters a turn (the lease is taken first when this instance does not hold
    it) and leaves it when answered. The lease is given back when no request of this
    instance wanted the mailbox for `linger_seconds`, or when another instance waits
    and this one has held it for `turn_seconds` (looked at as the turn is up, then
    after `check_seconds`, less and less often while nobody waits).
    Waiting for the lease is done by the lease itself, `wait_seconds` at a time, so a
    turn passes to the next instance as soon as it ends, without polling. That wait is
    long (many turns): a waiter that gave up and asked again would join the line at its
    end, behind instances that had their turn already, and could wait for ever.
    """

    def __init__(
        self,
        lease: MailboxLease,
        budget: RequestBudget,
        *,
        turn_seconds: float = 0.25,
        linger_seconds: float = 0.1,
        check_seconds: float = 0.02,
        wait_seconds: float = 30.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self.lease = lease
        self.budget = budget
        self.turn_seconds = turn_seconds
        self.linger_seconds = linger_seconds
        self.check_seconds = check_seconds
        self.wait_seconds = wait_seconds
        self.retry_seconds = retry_seconds  # after the lease failed (the store away)
        self._turns: dict[str, _Turn] = {}
        # The lease's calls block (a wait for the lease up to wait_seconds): threads of
        # their own, so they never hold up the store calls in the default executor.
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mailbox-turns")
        self.handovers = 0  # leases given back, for tests and metrics
        self.lease_errors = 0  # calls to the lease that failed (the store away)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(function, *args))

    @contextlib.asynccontextmanager
    async def turn(self, scope: str) -> AsyncIterator[None]:
        state = self._turns.setdefault(scope, _Turn())
        state.wanted += 1
        try:
            while not state.opened.is_set():
                if state.keeper is None or state.keeper.done():
                    state.keeper = asyncio.create_task(self._keep(scope, state))
                with contextlib.suppress(TimeoutError):  # a keeper that failed is replaced
                    await asyncio.wait_for(state.opened.wait(), 1.0)
        finally:
            state.wanted -= 1
        state.users += 1
        try:
            yield
        finally:
            state.users -= 1
            state.wake.set()

    async def close(self) -> None:
        """Give back every lease held (the daemon stops)."""
        for scope, state in self._turns.items():
            if state.keeper is not None:
                state.keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.keeper
            if state.held:
                await self._give_back(scope, state)
        # A wait for a lease still under way ends within wait_seconds; a lease it took
        # then goes with the lease's sessions, which their owner closes.
        self._threads.shutdown(wait=False)

    async def _keep(self, scope: str, state: _Turn) -> None:
        """Take the lease for this instance's waiting requests, hold it while they come,
        give it back when they stop or another instance has waited out a turn."""
        while state.wanted:
            try:
                handoff = await self._call(self.lease.take, scope, self.wait_seconds)
            except Exception:  # the store is away: wait, as for a busy lease
                self.lease_errors += 1
                await asyncio.sleep(self.retry_seconds)
                continue
            if handoff is None:
                continue  # another instance holds it still: wait again, if still wanted
            if handoff:
                try:
                    self.budget.take_over(scope, handoff)
                except (ValueError, KeyError, TypeError):  # unreadable: 429s will tell
                    self.lease_errors += 1
            state.held, state.ending, state.since = True, False, time.monotonic()
            state.opened.set()
            await self._hold(scope, state)
            # Round again if requests still want the mailbox: an instance that waited
            # meanwhile was first in line at the lock and has it now.

    async def _hold(self, scope: str, state: _Turn) -> None:
        idle_since = time.monotonic()
        check_at = state.since + self.turn_seconds
        every = self.check_seconds
        while True:
            others = False
            now = time.monotonic()
            if not state.ending and now >= check_at:
                try:
                    others = await self._call(self.lease.others_waiting, scope)
                except Exception:  # the store is away: end the turn, to be safe
                    self.lease_errors += 1
                    others = True
                # Nobody waiting: look less often (up to 12 times check_seconds), as an
                # instance alone at the mailbox would otherwise ask many times a second.
                every = min(every * 2, self.check_seconds * 12)
                check_at = time.monotonic() + every
            # From here to the wait nothing awaits, so no news is missed.
            now = time.monotonic()
            if state.users or state.wanted:
                idle_since = now
            if not state.ending and (others or now - idle_since >= self.linger_seconds):
                state.ending = True
                state.opened.clear()
            if state.ending and not state.users:
                await self._give_back(scope, state)
                return
            state.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    state.wake.wait(),
                    min(self.linger_seconds, max(self.check_seconds, check_at - now)),
                )

    async def _give_back(self, scope: str, state: _Turn) -> None:
        state.opened.clear()
        try:
            await self._call(self.lease.give_back, scope, self.budget.handoff(scope))
        except Exception:  # a lease lost with its session is given back already
            self.lease_errors += 1
        state.held, state.ending = False, False
        self.handovers += 1
