"""HTTP/2 for the simulated Graph, on a TLS connection whose ALPN chose "h2".

Graph serves HTTP/2 (and HTTP/1.1) to clients that offer it; httpx with `http2=True`
does. One thread owns the connection: it reads frames, starts one worker thread per
request (so concurrent streams are concurrent requests, throttled and counted as over
HTTP/1.1), and writes the answers the workers hand back, within the peer's flow-control
windows. Only that thread touches the socket and the h2 state machine (an SSL socket
is not to be read and written from two threads at once).

A handler answering None (a dropped connection, in the fault plan) resets its stream:
the client sees a failed request, as with a dropped HTTP/1.1 connection.
"""

from __future__ import annotations

import queue
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from sandbox.zisson.store import Response

# HTTP/1.1 hop-by-hop headers have no place in HTTP/2 (RFC 9113, section 8.2.2).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


Handle = Callable[[Request], Response | None]


@dataclass
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


def serve(sock: ssl.SSLSocket, handle: Handle, *, idle_timeout: float) -> None:
    """Serve HTTP/2 on `sock` until the peer closes it, goes idle, or the server stops."""
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams: dict[int, _Stream] = {}
    answers: queue.SimpleQueue[tuple[int, Response | None]] = queue.SimpleQueue()
    outgoing: dict[int, memoryview] = {}  # bodies still to send, within the windows
    workers: list[threading.Thread] = []
    busy = 0  # requests handed to workers and not yet answered
    last_activity = time.monotonic()
    try:
        while True:
            while not answers.empty():
                stream_id, response = answers.get()
                busy -= 1
                _answer(conn, stream_id, response, outgoing)
            _send_bodies(conn, outgoing)
            data = conn.data_to_send()
            if data:
                sock.sendall(data)
            waiting = busy > 0 or bool(outgoing)
            if not sock.pending():
                readable, _, _ = select.select([sock], [], [], 0.002 if waiting else 0.05)
                if not readable:
                    if not waiting and time.monotonic() - last_activity > idle_timeout:
                        conn.close_connection()
                        sock.sendall(conn.data_to_send())
                        return
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                return
            last_activity = time.monotonic()
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.RequestReceived):
                    headers = {str(k).lower(): str(v) for k, v in event.headers or ()}
                    streams[event.stream_id] = _Stream(headers)
                elif isinstance(event, h2.events.DataReceived):
                    if event.stream_id in streams:
                        streams[event.stream_id].body += event.data or b""
                    conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    stream = streams.pop(event.stream_id, None)
                    if stream is None:
                        continue
                    busy += 1
                    worker = threading.Thread(
                        target=_work,
                        args=(handle, event.stream_id, stream, answers),
                        name="graph-sim-h2",
                    )
                    worker.start()
                    workers.append(worker)
                    workers = [w for w in workers if w.is_alive()]
                elif isinstance(event, h2.events.StreamReset):
                    streams.pop(event.stream_id, None)
                    outgoing.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
    except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
        return  # the peer went away or spoke nonsense; its requests are its business
    finally:
        for worker in workers:
            worker.join(timeout=30)


def _work(
    handle: Handle,
    stream_id: int,
    stream: _Stream,
    answers: queue.SimpleQueue[tuple[int, Response | None]],
) -> None:
    headers = stream.headers
    split = urlsplit(headers.get(":path", "/"))
    request = Request(
        method=headers.get(":method", "GET").upper(),
        path=split.path,
        query=parse_qs(split.query, keep_blank_values=True),
        headers={k: v for k, v in headers.items() if not k.startswith(":")},
        body=bytes(stream.body),
    )
    try:
        response = handle(request)
    except Exception:  # a simulator bug must not hang the client: answer 500
        response = Response(500, b"", {})
    answers.put((stream_id, response))


def _answer(
    conn: h2.connection.H2Connection,
    stream_id: int,
    response: Response | None,
    outgoing: dict[int, memoryview],
) -> None:
    try:
        if response is None:
            conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        headers = [(":status", str(response.status))]
        headers += [
            (name.lower(), str(value))
            for name, value in response.headers.items()
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length"
        ]
        headers.append(("content-length", str(len(response.body))))
        conn.send_headers(stream_id, headers, end_stream=not response.body)
        if response.body:
            outgoing[stream_id] = memoryview(response.body)
    except h2.exceptions.StreamClosedError:
        outgoing.pop(stream_id, None)  # the client gave up on it meanwhile


def _send_bodies(conn: h2.connection.H2Connection, outgoing: dict[int, memoryview]) -> None:
    for stream_id in list(outgoing):
        remaining = outgoing[stream_id]
        try:
            while remaining:
                window = min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                )
                if window <= 0:
                    break
                chunk, remaining = remaining[:window], remaining[window:]
                conn.send_data(stream_id, chunk.tobytes(), end_stream=not remaining)
        except h2.exceptions.StreamClosedError:
            remaining = memoryview(b"")
        if remaining:
            outgoing[stream_id] = remaining
        else:
            del outgoing[stream_id]
