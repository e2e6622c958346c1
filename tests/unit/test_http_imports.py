"""The HTTP stack under the connectors looks for no module on disk once it is running.

httpcore asks `sniffio` which event loop it runs on, on every request; were sniffio not
installed, each of those imports would search sys.path on disk and fail (a tenth of a
busy daemon's event loop). Requests go to a real loopback server through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

import httpx

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Searches(MetaPathFinder):
    """Notes every module name the import system goes looking for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        self.names.append(fullname)
        return None  # the real finders after this one do the finding


class Server:
    """Answers every request on a connection with RESPONSE, until the client hangs up."""

    def __init__(self) -> None:
        self.connections: list[asyncio.Task[None]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.append(task)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_requests_after_the_first_look_for_no_module() -> None:
    handler = Server()
    server = await asyncio.start_server(handler.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    searches = Searches()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/")).text == "ok"  # what a first request imports
            sys.meta_path.insert(0, searches)
            try:
                for _ in range(20):
                    assert (await client.get("/")).status_code == 200
            finally:
                sys.meta_path.remove(searches)
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handler.connections)  # each closed its side
    assert searches.names == []
