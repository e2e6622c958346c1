"""Read responses kept while the store is unchanged: exactly, not for a while.

    reads = CachedReads(store)
    body = await reads.get(("runs", params), render)   # render() -> bytes, in a thread

A response is kept with a marker of the store's committed state, taken *before* the
response is rendered, and handed out again only while a new marker, taken as the
request comes in, is equal to it. Any commit, by any connection of any process, changes
the marker, so a run written anywhere shows in the next request; a commit that lands
between the marker and the rendering only makes the next request render again.

The markers, both read on the event loop, so that a hit costs no thread hand-off:

- SQLite: `PRAGMA data_version` on a connection of our own that never writes: its
  value changes whenever another connection (of this process or another) commits.
  Reading it takes a few microseconds and never waits (a WAL reader, busy timeout 0).
- PostgreSQL: `pg_current_snapshot()`, on an asynchronous connection of our own in
  autocommit mode (one round trip). Two equal snapshots (xmin, xmax and the
  transactions in progress) see exactly the same committed transactions, and every
  commit or abort changes it. It is the whole cluster's, so other databases' writes
  change it too: they cost a render, never a stale answer.

When no marker can be had (SQLite busy, PostgreSQL unreachable), the response is
rendered and not kept; after a failed connection the next try waits RECONNECT_SECONDS.
At most RENDER_THREADS renderings run at a time, in worker threads, so that a burst of
requests does not open a store connection each; requests that missed with the same
marker share one rendering instead of each handing work to a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import structlog

from daemon.store import Store

if TYPE_CHECKING:
    import psycopg  # imported where used: a SQLite daemon never loads the driver

log = structlog.get_logger("pdsync.api")

RENDER_THREADS = 4  # the store's pool keeps 5 connections: stay within it
CACHE_SIZE = 64  # responses kept (one per distinct query)
MARKER_TIMEOUT_SECONDS = 5.0  # PostgreSQL: connecting, or one marker query
RECONNECT_SECONDS = 1.0  # PostgreSQL: after a failure, uncached answers until then

Marker = Hashable


class _SqliteMarker:
    """PRAGMA data_version on a private, read-only connection, guarded by a lock."""

    def __init__(self, database: str, *, uri: bool = False) -> None:
        self._database = database
        self._uri = uri
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def read(self) -> Marker | None:
        with self._lock:
            try:
                if self._conn is None:
                    # mode=rw: never create a database where the store's should be.
                    # check_same_thread off: the lock keeps it to one thread at a time.
                    database, uri = self._database, self._uri
                    if not uri:
                        database, uri = f"file:{urllib.parse.quote(database)}?mode=rw", True
                    conn = sqlite3.connect(
                        database, isolation_level=None, check_same_thread=False, timeout=0, uri=uri
                    )
                    conn.execute("PRAGMA query_only = ON")
                    self._conn = conn
                [row] = self._conn.execute("PRAGMA data_version").fetchall()
            except sqlite3.Error as exc:
                # Busy or gone: answer uncached this time, and open afresh next time.
                log.debug("api_cache_marker_unavailable", error=type(exc).__name__)
                self.close_locked()
                return None
        return int(row[0])

    def close_locked(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def _hang_up(box: list[psycopg.AsyncConnection[Any] | None]) -> None:
    conn, box[0] = box[0], None
    if conn is not None:
        conn.pgconn.finish()  # synchronous: no event loop may be left


class _PostgresMarker:
    """pg_current_snapshot() on a private asynchronous connection (autocommit)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._connecting: asyncio.Lock | None = None
        self._retry_at = 0.0
        self._waiting: asyncio.Future[Marker | None] | None = None
        self._reader: asyncio.Task[None] | None = None
        # The connection, in a box the finalizer shares: an app dropped without close()
        # (an ASGI test client, say) hangs up at once rather than when psycopg's own
        # finalizer complains of a connection left open.
        self._box: list[psycopg.AsyncConnection[Any] | None] = [None]
        weakref.finalize(self, _hang_up, self._box)

    @property
    def _conn(self) -> psycopg.AsyncConnection[Any] | None:
        return self._box[0]

    @_conn.setter
    def _conn(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        self._box[0] = conn

    async def _connection(self) -> psycopg.AsyncConnection[Any] | None:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            if time.monotonic() < self._retry_at:
                return None
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=max(1, int(MARKER_TIMEOUT_SECONDS)),
                    application_name="pdsync-api",
                )
            except psycopg.Error as exc:
                log.debug("api_cache_marker_unavailable", error=type(exc).__name__)
                self._retry_at = time.monotonic() + RECONNECT_SECONDS
                return None
        return self._conn

    async def read(self) -> Marker | None:
        """A marker read that started after this call did (so as good as its own), shared
        with every other caller that came while the previous read was under way."""
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_for_waiting(), name="api-marker")
        return await asyncio.shield(self._waiting)

    async def _read_for_waiting(self) -> None:
        while self._waiting is not None:
            # Who waits on `waiting` came before this read starts; later callers wait
            # for the next one.
            waiting, self._waiting = self._waiting, None
            try:
                marker = await self._query()
            except Exception as exc:  # whatever it is, those waiting answer uncached
                log.warning("api_cache_marker_failed", error=type(exc).__name__)
                marker = None
            except BaseException:  # cancelled (close): nobody may be left waiting
                for future in (waiting, self._waiting):
                    if future is not None and not future.done():
                        future.set_result(None)
                self._waiting = None
                raise
            waiting.set_result(marker)

    async def _query(self) -> Marker | None:
        import psycopg

        conn = await self._connection()
        if conn is None:
            return None
        try:
            async with asyncio.timeout(MARKER_TIMEOUT_SECONDS):
                cursor = await conn.execute("SELECT pg_current_snapshot()::text")
                row = await cursor.fetchone()
        except (psycopg.Error, TimeoutError) as exc:
            log.debug("api_cache_marker_unavailable", error=type(exc).__name__)
            self._retry_at = time.monotonic() + RECONNECT_SECONDS
            await self.close()
            return None
        return None if row is None else str(row[0])

    async def close(self) -> None:
        import psycopg

        if self._reader is not None and asyncio.current_task() is not self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


class CachedReads:
    """Rendered responses of read endpoints, each with the store marker it was made at."""

    def __init__(self, store: Store, *, size: int = CACHE_SIZE) -> None:
        self.store = store
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Marker, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._sqlite: _SqliteMarker | None = None
        self._postgres: _PostgresMarker | None = None
        self._rendering: dict[tuple[Hashable, Marker], asyncio.Future[bytes | None]] = {}
        # The store's database, as daemon/service.py's Leadership uses its engine: the
        # marker is about the database, not one of the Store's records.
        url = store._engine.url
        if store.dialect == "sqlite" and url.database:
            self._sqlite = _SqliteMarker(url.database, uri=bool(url.query.get("uri")))
        elif store.dialect == "postgresql":
            conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._postgres = _PostgresMarker(conninfo)

    # -- the cache ------------------------------------------------------------------

    def _hit(self, key: Hashable, marker: Marker | None) -> bytes | None:
        if marker is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != marker:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def _keep(self, key: Hashable, marker: Marker | None, body: bytes) -> None:
        if marker is None:
            return
        with self._lock:
            self._entries[key] = (marker, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    # -- serving --------------------------------------------------------------------

    async def _marker(self) -> Marker | None:
        if self._sqlite is not None:
            return self._sqlite.read()
        if self._postgres is not None:
            return await self._postgres.read()
        return None

    async def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The response for `key`: the kept one while the store is unchanged since it
        was rendered, else `render()` (run in a worker thread; its errors propagate)."""
        marker = await self._marker()  # before rendering: see the module docstring
        found = self._hit(key, marker)
        if found is not None:
            return found
        if marker is None:
            return await self._render(key, marker, render)
        # Requests that missed with the same marker share one rendering: equal markers
        # mean nothing was committed between the first one's marker and theirs, and
        # the rendering started after the first one's, so it shows all they must see.
        pending = self._rendering.get((key, marker))
        if pending is not None:
            body = await asyncio.shield(pending)
            if body is not None:
                return body
            return await self._render(key, marker, render)  # it failed: try on our own
        pending = asyncio.get_running_loop().create_future()
        self._rendering[(key, marker)] = pending
        try:
            body = await self._render(key, marker, render)
            pending.set_result(body)
        finally:
            del self._rendering[(key, marker)]
            if not pending.done():
                pending.set_result(None)  # failed or cancelled
        return body

    async def _render(
        self, key: Hashable, marker: Marker | None, render: Callable[[], bytes]
    ) -> bytes:
        def work() -> bytes:
            body = render()
            self._keep(key, marker, body)
            return body

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(RENDER_THREADS)
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    async def close(self) -> None:
        """Drop what is kept and close the markers' connections (the app stops)."""
        self.clear()
        if self._sqlite is not None:
            self._sqlite.close()
        if self._postgres is not None:
            await self._postgres.close()


def json_body(adapter: Any, value: Any) -> bytes:
    """What FastAPI sends for a response model (its dump_json fast path), byte for byte."""
    return bytes(adapter.dump_json(value, by_alias=True))
