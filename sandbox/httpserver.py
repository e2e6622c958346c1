"""What both simulators stand on: the HTTP server (threaded, stoppable without leftovers),
the request handler's plumbing, and their lifecycle (start on a thread, stop, `with`)."""

from __future__ import annotations

import abc
import contextlib
import socket
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


class TrackingHTTPServer(ThreadingHTTPServer):
    """Keeps the open connections, so stop() can wake threads idling on keep-alive."""

    # Handler threads are joined on close, so stop() leaves nothing running.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SimulatorHandler(BaseHTTPRequestHandler, abc.ABC):
    """HTTP/1.1 with keep-alive, quiet, every method to `_dispatch`; `_read` and `_write`
    are the request and response as the simulators deal in them."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end, so no thread waits forever
    keep_blank_values = True  # "?a=&b=1" keeps a

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and `make run` stay quiet; counters and /_sim/ tell what happened

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @abc.abstractmethod
    def _dispatch(self, method: str) -> None:
        """Serve the request (each simulator routes its own)."""

    def _read(self) -> tuple[str, dict[str, list[str]], dict[str, str], bytes]:
        """(path, query, headers with lower-case names, body) of the request."""
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = parse_qs(split.query, keep_blank_values=self.keep_blank_values)
        return split.path, query, headers, body

    def _write(
        self, status: int, headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes
    ) -> None:
        self.send_response(status)
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class ServedSimulator(abc.ABC):
    """start()/stop() and `with` for a simulator served by a TrackingHTTPServer on its
    own thread. A subclass says how to make its server (`_make_server`), may prepare
    before it (`_before_start`) and tidy after it (`_after_stop`)."""

    scheme = "http"
    thread_name = "simulator"

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address
        self._server: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def _make_server(self) -> TrackingHTTPServer:
        """The simulator's server, bound to `_address` (not yet serving)."""

    def _before_start(self) -> None:
        """Called before the server is made (nothing by default)."""
        return None

    def _after_start(self) -> None:
        """Called once the server listens (nothing by default)."""
        return None

    def _after_stop(self) -> None:
        """Called once the server and its threads are gone (nothing by default)."""
        return None

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._before_start()
        self._server = self._make_server()
        self._after_start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the handler threads
        thread.join()
        self._server = self._thread = None
        self._after_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """SCHEME://HOST:PORT of the running server."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return f"{self.scheme}://{self._address[0]}:{self._server.server_port}"
