"""The simulated Graph's HTTPS side: TLS, routing to Entra, Graph, $batch and /_sim/."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from sandbox.graph import h2serve
from sandbox.graph.batch import run_batch
from sandbox.graph.entra import Entra
from sandbox.graph.errors import (
    EntraError,
    GraphError,
    bad_request,
    entra_error_response,
    graph_error_response,
)
from sandbox.graph.service import Call, GraphService
from sandbox.httpserver import SimulatorHandler, TrackingHTTPServer
from sandbox.zisson.store import Response, json_response

AdminHandler = Callable[[str, str, dict[str, list[str]], bytes], Response]
_OIDC = re.compile(r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration")
_JWKS = re.compile(r"/(?P<tenant>[^/]+)/discovery/v2\.0/keys")
_TOKEN = re.compile(r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")


class GraphHttpServer(TrackingHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        *,
        context: ssl.SSLContext,
        entra: Entra,
        service: GraphService,
        admin: AdminHandler,
    ) -> None:
        self.context = context
        self.entra = entra
        self.service = service
        self.admin = admin
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        # The handshake happens in the handler thread (see _Handler.setup), so a slow or
        # failing client never blocks the accept loop.
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # TLS failures and resets are the client's business; counters tell the story


class _Handler(SimulatorHandler):
    server_version = "GraphSimulator/1"
    server: GraphHttpServer

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.server.service.state.count("tls_failures")
            raise
        self.http2 = self.request.selected_alpn_protocol() == "h2"
        super().setup()

    def handle(self) -> None:
        if self.http2:
            self.server.service.state.count("http2_connections")
            h2serve.serve(self.request, self._serve_h2, idle_timeout=self.timeout)
        else:
            super().handle()

    def _serve_h2(self, request: h2serve.Request) -> Response | None:
        return self._serve(
            request.method, request.path, request.query, request.headers, request.body
        )

    def _dispatch(self, method: str) -> None:
        response = self._serve(method, *self._read())
        if response is None:  # a dropped connection, as the fault plan says
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(response.status, response.headers, response.body)

    def _serve(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Response | None:
        """One request, over HTTP/1.1 or an HTTP/2 stream; None: drop it unanswered."""
        if path.startswith("/_sim/"):
            response: Response | None = self.server.admin(method, path, query, body)
        else:
            state = self.server.service.state
            state.count("requests")
            if path.startswith("/v1.0/"):
                response = self._graph(method, path[len("/v1.0") :], query, headers, body)
            else:
                response = self._entra(method, path, headers, body)
        if response is None:
            return None
        request_id = str(uuid.uuid4())
        ids = {
            "request-id": request_id,
            "client-request-id": headers.get("client-request-id") or request_id,
        }
        return Response(response.status, response.body, {**ids, **response.headers})

    def _entra(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        entra, state = self.server.entra, self.server.service.state
        for pattern, wanted in ((_OIDC, "GET"), (_JWKS, "GET"), (_TOKEN, "POST")):
            found = pattern.fullmatch(path)
            if found is None or method != wanted:
                continue
            if found["tenant"] != entra.tenant_id:
                error = EntraError(
                    400,
                    "invalid_tenant",
                    90002,
                    f"Tenant '{found['tenant']}' not found. Check to make sure you have the "
                    "correct tenant ID and are signing into the correct cloud.",
                )
                return entra_error_response(error, entra.base_url, headers.get("client-request-id"))
            if pattern is _OIDC:
                state.count("GET openid-configuration")
                return json_response(200, entra.openid_configuration())
            if pattern is _JWKS:
                return json_response(200, entra.jwks())
            state.count("POST token")
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            try:
                token = entra.issue(form, headers.get("authorization"))
            except EntraError as error:
                state.count("auth_failures")
                return entra_error_response(error, entra.base_url, headers.get("client-request-id"))
            state.count("tokens")
            return json_response(200, token, {"Cache-Control": "no-store, no-cache"})
        return json_response(
            404, {"error": "not_found", "error_description": f"No endpoint {path}"}
        )

    def _graph(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Response | None:
        service = self.server.service
        client_request_id = headers.get("client-request-id")
        try:
            client_id = self.server.entra.authenticate(headers.get("authorization"))
            parsed = _parse_json(body) if body else None
        except GraphError as error:
            if error.status == 401:
                service.state.count("auth_failures")
            return graph_error_response(error, client_request_id)
        if unquote(path) == "/$batch" and method == "POST":
            try:
                return run_batch(service, parsed, client_id)
            except GraphError as error:
                return graph_error_response(error, client_request_id)
        call = Call(method, path, query, headers, parsed)
        response, drop = service.dispatch(call, client_id)
        if drop is not None:
            service.state.count("drops")
            return None
        return response


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad_request("Unable to read JSON request payload.", "BadRequest") from None
