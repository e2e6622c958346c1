"""The API inside the daemon: uvicorn on the daemon's own event loop.

    api = await start_api(settings, store, stack, sync_service=sync, ...)  # None when off

One event loop for everything means POST /api/v1/sync runs on the same SyncService
(and its per-customer locks) as the schedule. The daemon owns the signals: uvicorn's
own handlers are not installed, and the server stops when the daemon's exit stack
closes (before the store does, as it was opened after it). The socket is bound here,
before uvicorn starts, so a port in use is an OSError with a clear message instead of
uvicorn's sys.exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import structlog
import uvicorn
from fastapi import FastAPI

from daemon.api.app import create_app
from daemon.api.context import SyncRunner
from daemon.api.settings import ApiConfig, api_config
from daemon.config import Settings
from daemon.store import Store

if TYPE_CHECKING:
    from daemon.erasure import ErasureService
    from daemon.ledger import Ledger

log = structlog.get_logger("pdsync.api")
STARTUP_SECONDS = 10.0
SHUTDOWN_SECONDS = 10.0


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopping = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon handles SIGTERM and SIGINT and tells us to stop

    async def main_loop(self) -> None:
        """uvicorn's loop, ticking once a second instead of ten times: its tick only
        refreshes the Date header (at every tenth count) and asks whether to exit, and
        ten wake-ups a second were the idle daemon's largest cost. `stop()` wakes it at
        once."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # a count of tenths, as uvicorn's
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            should_exit = await self.on_tick(counter)


class ApiServer:
    """uvicorn serving one app on one bound socket, as a task on the running loop."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, trusted_proxies: Sequence[str] = ()
    ) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.socket.listen(128)
        self.socket.setblocking(False)
        config = uvicorn.Config(
            app,
            lifespan="off",
            # httptools when installed (a fifth less CPU per request than h11 under the
            # service bench's load), else h11.
            http="auto",
            log_config=None,  # our structlog set-up, with its redaction
            access_log=False,  # raw paths and queries may hold personal data; see the audit log
            server_header=False,
            # uvicorn believes X-Forwarded-For from loopback (or FORWARDED_ALLOW_IPS) by
            # default: a caller on this host could then name a new address on every
            # request and never meet the failure limit. Only the configured proxies.
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
            timeout_graceful_shutdown=int(SHUTDOWN_SECONDS),
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    async def start(self) -> None:
        """Serve in the background; returns once accepting connections."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self.socket]), name="api")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_SECONDS
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the API server stopped while starting")
            if loop.time() > deadline:
                raise RuntimeError("the API server did not start in time")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Finish the requests in flight (bounded), stop the syncs the API started (they
        record themselves as interrupted while the store is still open), close the socket."""
        self._server.should_exit = True
        self._server.stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, SHUTDOWN_SECONDS + 5)
            except TimeoutError:
                log.warning("api_stop_timeout")
        background: set[asyncio.Task[object]] = self.app.state.ctx.background
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.app.state.ctx.reads.close()
        self.socket.close()


async def start_api(
    settings: Settings,
    store: Store,
    stack: AsyncExitStack,
    *,
    sync_service: SyncRunner | None = None,
    erasure_service: ErasureService | None = None,
    ledger: Ledger | None = None,
    config: ApiConfig | None = None,
    connectors: Mapping[str, object] | None = None,
) -> ApiServer | None:
    """Start the API when `[api] listen` is set (None otherwise); stopped by `stack`.

    `config` defaults to the settings' [api] section. Raises OSError naming
    api.listen when the address cannot be bound.
    """
    config = config or api_config(settings)
    if config.listen is None:
        return None
    app = create_app(
        settings,
        store,
        sync_service=sync_service,
        erasure_service=erasure_service,
        ledger=ledger,
        config=config,
        connectors=connectors,
    )
    try:
        server = ApiServer(app, config.host, config.port, trusted_proxies=config.trusted_proxies)
    except OSError as exc:
        raise OSError(f"api.listen {config.listen}: cannot listen: {exc.strerror}") from exc
    await server.start()
    stack.push_async_callback(server.stop)
    log.info("api_listening", listen=config.listen)
    return server
