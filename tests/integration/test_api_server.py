"""The API inside the daemon: uvicorn on the running loop, on a real loopback socket."""

from __future__ import annotations

import signal
import socket
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from daemon.api.server import start_api
from daemon.api.settings import ApiConfig
from daemon.api.testing import api_world
from daemon.store import Store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_api_serves_on_the_daemons_loop_and_stops_with_it(
    store: Store, master_key: bytes, tmp_path: Path
) -> None:
    world = api_world(store, master_key, tmp_path)
    port = free_port()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    async with AsyncExitStack() as stack:
        server = await start_api(
            world.settings,
            store,
            stack,
            sync_service=world.sync_service,
            config=ApiConfig(listen=f"127.0.0.1:{port}"),
        )
        assert server is not None and server.port == port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "alive"}
            synced = await client.post("/api/v1/sync", headers=world.auth("olga"), json={})
            assert synced.status_code == 202
            assert "server" not in synced.headers  # no version banner
        # The daemon keeps its own SIGTERM handling.
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_without_listen_there_is_no_server(
    store: Store, master_key: bytes, tmp_path: Path
) -> None:
    world = api_world(store, master_key, tmp_path)
    async with AsyncExitStack() as stack:
        assert await start_api(world.settings, store, stack) is None


async def test_a_port_in_use_is_a_clear_error(
    store: Store, master_key: bytes, tmp_path: Path
) -> None:
    world = api_world(store, master_key, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        async with AsyncExitStack() as stack:
            with pytest.raises(OSError, match=r"api\.listen 127\.0\.0\.1:"):
                await start_api(world.settings, store, stack, config=ApiConfig(listen=listen))
