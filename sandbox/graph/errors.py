"""Errors the simulated Graph and Entra ID answer with, in their real JSON shapes.

Graph:  `{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}`.
Entra:  `{"error", "error_description": "AADSTS…", "error_codes", "timestamp",
"trace_id", "correlation_id", "error_uri"}`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

from sandbox.zisson.store import Response

GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
NOT_FOUND_MESSAGE = "The specified object was not found in the store."


class GraphError(Exception):
    """A Graph error response: HTTP status, error code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class EntraError(Exception):
    """An AADSTS error from the token endpoint."""

    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(f"AADSTS{aadsts}: {description}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description


def not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", NOT_FOUND_MESSAGE)


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def graph_json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(status, body, {"Content-Type": GRAPH_JSON, **(headers or {})})


def graph_error_payload(error: GraphError, client_request_id: str | None) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    return {
        "error": {
            "code": error.code,
            "message": error.message,
            "innerError": {
                "date": utc_now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }


def graph_error_response(error: GraphError, client_request_id: str | None = None) -> Response:
    return graph_json(error.status, graph_error_payload(error, client_request_id), error.headers)


def entra_error_response(error: EntraError, base_url: str, correlation_id: str | None) -> Response:
    trace_id, correlation = str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
    now = utc_now()
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS{error.aadsts}: {error.description}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
    )
    payload = {
        "error": error.error,
        "error_description": description,
        "error_codes": [error.aadsts],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation,
        "error_uri": f"{base_url}/error?code={error.aadsts}",
    }
    body = json.dumps(payload).encode("utf-8")
    return Response(error.status, body, {"Content-Type": "application/json; charset=utf-8"})
