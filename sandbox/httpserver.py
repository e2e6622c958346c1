"""The HTTP server both simulators stand on (threaded, stoppable without leftovers), and
their shared lifecycle: start on a thread, stop, use as a context manager."""

from __future__ import annotations

import abc
import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


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
