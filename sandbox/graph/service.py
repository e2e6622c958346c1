"""Graph v1.0 calls: routing, faults, throttling, and the context handlers get.

One `GraphService.dispatch` serves both a plain HTTP request and each item of a
$batch, so both are throttled, faulted and counted the same way.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from sandbox.graph.delta import DeltaTracker
from sandbox.graph.errors import GraphError, bad_request, graph_error_response, graph_json
from sandbox.graph.odata import parse_prefer, wants_immutable_ids
from sandbox.graph.store import GraphState, Mailbox
from sandbox.graph.throttle import Throttle, retry_after_header
from sandbox.zisson.faults import DROP, FaultPlan
from sandbox.zisson.store import Response

Drop = Literal["before", "after"] | None


@dataclass(frozen=True, slots=True)
class Call:
    """One Graph request, from HTTP or from a $batch item."""

    method: str
    path: str  # below /v1.0, e.g. "/users/kari@firma.no/messages"
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: Any = None  # parsed JSON


@dataclass
class Ctx:
    """What a handler gets: the call, its path parameters and its mailbox."""

    call: Call
    params: dict[str, str]
    mailbox: Mailbox
    state: GraphState
    delta: DeltaTracker
    base: str  # the Graph root, "https://127.0.0.1:PORT/v1.0"
    search_cap: int
    prefer: dict[str, str] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)  # for Preference-Applied

    @property
    def immutable(self) -> bool:
        return wants_immutable_ids(self.prefer)

    def json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        extra = dict(headers or {})
        if self.applied:
            extra["Preference-Applied"] = ", ".join(self.applied)
        return graph_json(status, payload, extra)


Handler = Callable[[Ctx], Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # counter key, "GET /users/{user}/messages"
    handler: Handler
    write: bool
    outlook: bool  # subject to Exchange's per-mailbox throttling (the user object is not)


def route(method: str, template: str, handler: Handler, *, outlook: bool = True) -> Route:
    pattern = re.escape(template)
    for param in ("user", "folder", "message", "cfolder", "contact"):
        pattern = pattern.replace(r"\{" + param + r"\}", f"(?P<{param}>[^/]+)")
    return Route(
        method,
        re.compile(pattern, re.IGNORECASE),
        f"{method} {template}",
        handler,
        method != "GET",
        outlook,
    )


class GraphService:
    def __init__(
        self,
        state: GraphState,
        throttle: Throttle,
        faults: FaultPlan,
        delta: DeltaTracker,
        routes: list[Route],
        *,
        seed: int,
        search_cap: int,
    ) -> None:
        self.state = state
        self.throttle = throttle
        self.faults = faults
        self.delta = delta
        self.routes = routes
        self.search_cap = search_cap
        self.base = ""  # set once the server has its port
        self._rng = random.Random(seed ^ 0x5EED)

    def match(self, call: Call) -> tuple[Route, dict[str, str]]:
        if call.path.lower() == "/me" or call.path.lower().startswith("/me/"):
            raise bad_request("/me request is only valid with delegated authentication flow.")
        for candidate in self.routes:
            if candidate.method != call.method:
                continue
            found = candidate.pattern.fullmatch(call.path)
            if found:
                return candidate, {k: unquote(v) for k, v in found.groupdict().items()}
        raise bad_request(f"Resource not found for the segment '{call.path.rsplit('/', 1)[-1]}'.")

    def dispatch(
        self, call: Call, client_id: str, *, can_drop: bool = True
    ) -> tuple[Response, Drop]:
        """Serve one authenticated call; the Drop says whether to lose the connection."""
        client_request_id = call.headers.get("client-request-id")
        try:
            matched, params = self.match(call)
            self.state.count(matched.name)
            fault = self.faults.decide()
            latency = self.faults.faults.latency_ms / 1000
            lost = False  # a batch item's "dropped connection": Graph answers it 504
            if fault is not None and fault.kind == DROP:
                if not can_drop:
                    fault, lost = None, True
                if not matched.write:
                    time.sleep(latency)
                    if lost:
                        raise self._injected(504, None)
                    return Response(0), "before"
            if fault is not None and fault.kind == "status":
                time.sleep(latency)
                raise self._injected(fault.status, fault.retry_after)
            mailbox = self.state.mailbox(params["user"])
            admission = (
                self.throttle.admit((client_id, mailbox.id))
                if matched.outlook
                else contextlib.nullcontext()
            )
            with admission:
                time.sleep(latency)  # service time: holds the concurrency slot, as in Exchange
                ctx = Ctx(
                    call,
                    params,
                    mailbox,
                    self.state,
                    self.delta,
                    self.base,
                    self.search_cap,
                    parse_prefer(call.headers),
                )
                response = matched.handler(ctx)
            if lost:  # the write happened; only its answer is lost
                raise self._injected(504, None)
            return response, ("after" if fault is not None else None)
        except GraphError as error:
            return graph_error_response(error, client_request_id), None

    def _injected(self, status: int, retry_after: float | None) -> GraphError:
        if status == 429:
            self.state.count("429")
            return GraphError(
                429,
                "TooManyRequests",
                "Too many requests.",
                headers={"Retry-After": retry_after_header(self.throttle.scaled(retry_after or 0))},
            )
        self.state.count("5xx")
        headers: dict[str, str] = {}
        # Graph sends Retry-After with some 503s; clients must cope with and without.
        if status == 503 and self._rng.random() < 0.5:
            retry = self.faults.faults.retry_after
            headers["Retry-After"] = retry_after_header(self.throttle.scaled(retry))
        code = {503: "ServiceNotAvailable", 502: "BadGateway", 504: "GatewayTimeout"}.get(
            status, "UnknownError"
        )
        return GraphError(status, code, "The service is temporarily unavailable.", headers=headers)
