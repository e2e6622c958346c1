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


BAD = {"Authorization": "Bearer pds_" + "x" * 43}


async def guesses(port: int, forwarded_for: list[str]) -> list[int]:
    """A wrong token from each of `forwarded_for` in turn (as X-Forwarded-For)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        return [
            (await client.get("/api/v1/runs", headers={**BAD, "X-Forwarded-For": sent})).status_code
            for sent in forwarded_for
        ]


async def test_a_forwarded_for_header_does_not_get_a_guesser_past_the_limit(
    store: Store, master_key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `trusted_proxies`, the client is the TCP peer whatever it claims: a
    guesser on the daemon's own host (loopback, which uvicorn trusts by default) cannot
    get a fresh allowance per request by naming another address each time; not even
    with uvicorn's FORWARDED_ALLOW_IPS set in the daemon's environment."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    world = api_world(store, master_key, tmp_path)
    port = free_port()
    async with AsyncExitStack() as stack:
        config = ApiConfig(listen=f"127.0.0.1:{port}", auth_failures_burst=3)
        await start_api(world.settings, store, stack, config=config)
        statuses = await guesses(port, [f"198.51.100.{i}" for i in range(6)])
    assert statuses == [401, 401, 401, 429, 429, 429]


async def test_behind_a_trusted_proxy_each_client_has_its_own_allowance(
    store: Store, master_key: bytes, tmp_path: Path
) -> None:
    """With the proxy's address in `trusted_proxies`, the client is the address the
    proxy forwarded for (the right-most one not itself a trusted proxy: what a client
    puts before it in the header is not believed): a guesser is stopped, and the
    other people behind the same proxy are not held up by it."""
    world = api_world(store, master_key, tmp_path)
    port = free_port()
    async with AsyncExitStack() as stack:
        config = ApiConfig(
            listen=f"127.0.0.1:{port}", auth_failures_burst=3, trusted_proxies=["127.0.0.0/8"]
        )
        await start_api(world.settings, store, stack, config=config)
        # The guesser sends a made-up address of its own each time; the proxy appends
        # the real one.
        spoofed = [f"192.0.2.{i}, 203.0.113.7" for i in range(5)]
        assert await guesses(port, spoofed) == [401, 401, 401, 429, 429]
        assert await guesses(port, ["198.51.100.1"]) == [401]  # someone else, still let try
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ops = await client.get(
                "/api/v1/runs", headers={**world.auth("aud"), "X-Forwarded-For": "198.51.100.2"}
            )
        assert ops.status_code == 200
