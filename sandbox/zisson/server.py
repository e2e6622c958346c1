"""The simulated Zisson's HTTP side: routing, the three APIs, /_sim/ and fault injection."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sandbox.httpserver import SimulatorHandler, TrackingHTTPServer
from sandbox.zisson.faults import DROP, FaultPlan, ListingFault, Shift, XmlEncoding
from sandbox.zisson.render import contacts_document
from sandbox.zisson.store import (
    EMPTY_USER,
    Account,
    Response,
    SimError,
    ZissonState,
    json_response,
    validate_user_fields,
)

USERS = "/external-api/v1/entities/users"
DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SimError(400, "body: not UTF-8 JSON") from None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # counter key: "METHOD /path/{param}"
    handler: Handler
    is_write: bool = False  # drops happen after processing: the client loses the answer


class ZissonHttpServer(TrackingHTTPServer):
    def __init__(self, address: tuple[str, int], state: ZissonState, faults: FaultPlan) -> None:
        self.state = state
        self.faults = faults
        self.routes = _routes(state, faults)
        self.admin_routes = _admin_routes(state, faults)
        super().__init__(address, _RequestHandler)


class _RequestHandler(SimulatorHandler):
    server_version = "ZissonSimulator/1"
    keep_blank_values = False
    server: ZissonHttpServer

    def _dispatch(self, method: str) -> None:
        path, query, headers, body = self._read()
        request = Request(
            method=method, path=path, query=query, headers=headers, body=body, params={}
        )
        if path.startswith("/_sim/"):
            self._respond(self._route(self.server.admin_routes, request))
            return
        self._serve_with_faults(request)

    def _serve_with_faults(self, request: Request) -> None:
        state = self.server.state
        state.count("requests")
        fault = self.server.faults.decide()
        latency = self.server.faults.faults.latency_ms
        if latency:
            time.sleep(latency / 1000)
        route = _match(self.server.routes, request)
        if route is not None:
            state.count(route[0].name)
        if fault is not None and fault.kind == "status":
            state.count("429" if fault.status == 429 else "5xx")
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _seconds(fault.retry_after)
            self._respond(json_response(fault.status, {"error": "injected fault"}, headers))
            return
        dropped = fault is not None and fault.kind == DROP
        if dropped and (route is None or not route[0].is_write):
            self._drop()
            return
        response = self._route(self.server.routes, request)
        if dropped:
            self._drop()
            return
        self._respond(response)

    def _route(self, routes: list[Route], request: Request) -> Response:
        found = _match(routes, request)
        try:
            if found is None:
                raise SimError(404, "no such endpoint")
            route, params = found
            return route.handler(
                Request(
                    request.method,
                    request.path,
                    request.query,
                    request.headers,
                    request.body,
                    params,
                )
            )
        except SimError as error:
            return json_response(error.status, {"error": error.message}, error.headers)

    def _drop(self) -> None:
        self.server.state.count("drops")
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _respond(self, response: Response) -> None:
        self._write(response.status, response.headers, response.body)


def _match(routes: list[Route], request: Request) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        if route.method != request.method:
            continue
        matched = route.pattern.fullmatch(request.path)
        if matched:
            return route, {k: unquote(v) for k, v in matched.groupdict().items()}
    return None


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _make_route(method: str, template: str, handler: Handler, *, write: bool = False) -> Route:
    pattern = (
        re.escape(template)
        .replace(r"\{id\}", "(?P<id>[^/]+)")
        .replace(r"\{guid\}", "(?P<guid>[^/]+)")
    )
    return Route(method, re.compile(pattern, re.IGNORECASE), f"{method} {template}", handler, write)


def _etag(user: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{user["version"]}"'}


def _if_match(request: Request, user: dict[str, Any]) -> None:
    wanted = request.header("If-Match")
    if wanted is None or wanted.strip() == "*":
        return
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in wanted.split(",")}
    if str(user["version"]) not in tags:
        raise SimError(412, "version does not match If-Match")


def _fingerprint(request: Request) -> str:
    return hashlib.sha256(
        b"\x1f".join([request.method.encode(), request.path.encode(), request.body])
    ).hexdigest()


def _truncated(response: Response) -> Response:
    """The answer cut in half, its HTTP framing intact (Content-Length says the short
    length), as a server or proxy that gives up half-way through its own body might."""
    return Response(response.status, response.body[: len(response.body) // 2], response.headers)


def _routes(state: ZissonState, faults: FaultPlan) -> list[Route]:
    def get_contacts(request: Request) -> Response:
        account = state.authenticate(request.header("Authorization"))
        listing = faults.served_listing(account.guid, state.listing(account.guid))
        how = faults.xml_encoding(account.guid)
        content_type = "application/xml"
        if how.charset is not None:
            content_type += f"; charset={how.charset}"
        document = contacts_document(listing, encoding=how.encoding, declaration=how.declaration)
        response = Response(200, document, {"Content-Type": content_type})
        return _truncated(response) if faults.take_truncation(account.guid) else response

    def refresh_token(request: Request) -> Response:
        jwt, refresh = state.exchange_refresh_token(request.json())
        return json_response(200, {"jwt": jwt, "refreshToken": refresh})

    def list_users(request: Request) -> Response:
        account = state.authenticate(request.header("Authorization"))
        try:
            page = int(request.query.get("page", ["1"])[0])
            size = int(request.query.get("pageSize", [str(DEFAULT_PAGE_SIZE)])[0])
        except ValueError:
            raise SimError(400, "page and pageSize must be integers") from None
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise SimError(400, f"page >= 1 and 1 <= pageSize <= {MAX_PAGE_SIZE}")
        listing = faults.served_listing(
            account.guid, [entry for _, entry in state.listing(account.guid)]
        )
        items = listing[(page - 1) * size : page * size]
        more = page * size < len(listing)
        response = json_response(
            200,
            {
                "items": items,
                "page": page,
                "pageSize": size,
                "total": len(listing),
                "next": page + 1 if more else None,
            },
        )
        # Between this page and the next one the client asks for, the directory moves.
        shift = faults.take_shift(account.guid)
        if shift is not None:
            state.shift_listing(account.guid, shift.how, shift.at)
        return _truncated(response) if faults.take_truncation(account.guid) else response

    def get_user(request: Request) -> Response:
        account = state.authenticate(request.header("Authorization"))
        user = state.user(account.guid, request.params["id"])
        return json_response(200, user, _etag(user))

    def idempotently(request: Request, account: Account, apply: Callable[[], Response]) -> Response:
        def guarded() -> Response:
            try:
                return apply()
            except SimError as error:  # a refusal is an answer too, and is replayed as such
                return json_response(error.status, {"error": error.message}, error.headers)

        return state.once(
            account,
            request.header("Idempotency-Key"),
            _fingerprint(request),
            guarded,
            match=faults.replay_match,
        )

    def version_check(request: Request, user: dict[str, Any]) -> None:
        if faults.take_precondition(request.method):
            state.count("412")
            raise SimError(412, "version does not match If-Match")
        try:
            _if_match(request, user)
        except SimError:
            state.count("412")
            raise

    def kept(fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        """What a write keeps of the fields it was given (see `ignore_on_write`)."""
        ignored = faults.ignored_on_write
        if partial:
            return {k: v for k, v in fields.items() if k not in ignored}
        return {k: (EMPTY_USER[k] if k in ignored else v) for k, v in fields.items()}

    def create_user(request: Request) -> Response:
        account = state.authenticate(request.header("Authorization"))
        fields = validate_user_fields(request.json(), partial=False)

        def apply() -> Response:
            user = state.put_user(account.guid, kept(fields, partial=False))
            state.count("creates")
            return json_response(201, user, _etag(user))

        return idempotently(request, account, apply)

    def update_user(request: Request) -> Response:
        account = state.authenticate(request.header("Authorization"))
        changes = validate_user_fields(request.json(), partial=True)

        def apply() -> Response:
            with state.lock:
                version_check(request, state.user(account.guid, request.params["id"]))
                user = state.patch_user(
                    account.guid, request.params["id"], kept(changes, partial=True)
                )
            state.count("updates")
            return json_response(200, user, _etag(user))

        return idempotently(request, account, apply)

    def delete_user(request: Request) -> Response:
        account = state.authenticate(request.header("Authorization"))

        def apply() -> Response:
            with state.lock:
                version_check(request, state.user(account.guid, request.params["id"]))
                state.delete_user(account.guid, request.params["id"])
            state.count("deletes")
            return Response(204)

        return idempotently(request, account, apply)

    return [
        _make_route("GET", "/api/simple/GetContacts", get_contacts),
        _make_route("POST", "/web-api/v1/authenticate/refresh-token", refresh_token),
        _make_route("GET", USERS, list_users),
        _make_route("POST", USERS, create_user, write=True),
        _make_route("GET", USERS + "/{id}", get_user),
        _make_route("PATCH", USERS + "/{id}", update_user, write=True),
        _make_route("DELETE", USERS + "/{id}", delete_user, write=True),
    ]


def _admin_routes(state: ZissonState, faults: FaultPlan) -> list[Route]:
    """/_sim/: inspection and seeding for out-of-process use; no auth, never faulted."""

    def body_object(request: Request) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise SimError(400, "body: not a JSON object")
        return body

    def get_state(request: Request) -> Response:
        return json_response(200, {**state.snapshot(), "faults": faults.describe()})

    def set_faults(request: Request) -> Response:
        try:
            return json_response(200, {"faults": repr(faults.set(**body_object(request)))})
        except (TypeError, ValueError) as error:
            raise SimError(400, str(error)) from None

    def add_account(request: Request) -> Response:
        body = body_object(request)
        try:
            guid = body.pop("customer_guid")
            state.add_account(guid, **body)
        except (KeyError, TypeError):
            raise SimError(
                400, "needs customer_guid, username, password, user_id, refresh_token"
            ) from None
        return json_response(201, {"customer_guid": guid})

    def put_user(request: Request) -> Response:
        user = state.put_user(request.params["guid"], body_object(request))
        return json_response(201, user)

    def patch_user(request: Request) -> Response:
        user = state.patch_user(request.params["guid"], request.params["id"], body_object(request))
        return json_response(200, user)

    def delete_user(request: Request) -> Response:
        state.delete_user(request.params["guid"], request.params["id"])
        return Response(204)

    def put_raw(request: Request) -> Response:
        return json_response(201, {"key": state.put_raw(request.params["guid"], request.json())})

    def reset_counters(request: Request) -> Response:
        state.reset_counters()
        return Response(204)

    def expire_tokens(request: Request) -> Response:
        state.expire_tokens(request.params["guid"])
        return Response(204)

    def refused(error: Exception) -> SimError:
        return SimError(400, str(error))

    def set_listing(request: Request) -> Response:
        guid = state.account(request.params["guid"]).guid
        try:
            faults.set_listing(guid, ListingFault(**body_object(request)))
        except (TypeError, ValueError) as error:
            raise refused(error) from None
        return Response(204)

    def shift_listing(request: Request) -> Response:
        guid = state.account(request.params["guid"]).guid
        try:
            faults.shift_listing(guid, Shift(**body_object(request)))
        except (TypeError, ValueError) as error:
            raise refused(error) from None
        return Response(204)

    def set_xml_encoding(request: Request) -> Response:
        guid = state.account(request.params["guid"]).guid
        try:
            faults.set_xml_encoding(guid, XmlEncoding(**body_object(request)))
        except (TypeError, ValueError) as error:
            raise refused(error) from None
        return Response(204)

    def truncate_listing(request: Request) -> Response:
        guid = state.account(request.params["guid"]).guid
        try:
            faults.truncate_listing(guid, int(body_object(request).get("times", 1)))
        except (TypeError, ValueError) as error:
            raise refused(error) from None
        return Response(204)

    def forget_keys(request: Request) -> Response:
        return json_response(
            200, {"forgotten": state.forget_idempotency_keys(request.params["guid"])}
        )

    def fail_preconditions(request: Request) -> Response:
        body = body_object(request)
        try:
            faults.fail_preconditions(
                int(body.get("count", 1)), tuple(body.get("methods", ["PATCH", "DELETE"]))
            )
        except (TypeError, ValueError) as error:
            raise refused(error) from None
        return Response(204)

    def set_idempotency(request: Request) -> Response:
        try:
            faults.set_replay_match(body_object(request).get("match", "request"))
        except ValueError as error:
            raise refused(error) from None
        return Response(204)

    def ignore_on_write(request: Request) -> Response:
        fields = body_object(request).get("fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise SimError(400, "fields: not a list of JSON user keys")
        unknown = set(fields) - set(EMPTY_USER)
        if unknown:
            raise SimError(400, f"fields: not JSON user keys: {', '.join(sorted(unknown))}")
        faults.ignore_on_write(tuple(fields))
        return Response(204)

    accounts = "/_sim/accounts/{guid}"
    return [
        _make_route("GET", "/_sim/state", get_state),
        _make_route("POST", "/_sim/faults", set_faults),
        _make_route("POST", "/_sim/counters/reset", reset_counters),
        _make_route("POST", "/_sim/accounts", add_account),
        _make_route("POST", accounts + "/users", put_user),
        _make_route("PATCH", accounts + "/users/{id}", patch_user),
        _make_route("DELETE", accounts + "/users/{id}", delete_user),
        _make_route("POST", accounts + "/raw", put_raw),
        _make_route("POST", accounts + "/expire-tokens", expire_tokens),
        _make_route("POST", accounts + "/listing", set_listing),
        _make_route("POST", accounts + "/listing/shift", shift_listing),
        _make_route("POST", accounts + "/listing/truncate", truncate_listing),
        _make_route("POST", accounts + "/listing/encoding", set_xml_encoding),
        _make_route("POST", accounts + "/idempotency/forget", forget_keys),
        _make_route("POST", "/_sim/faults/preconditions", fail_preconditions),
        _make_route("POST", "/_sim/faults/idempotency", set_idempotency),
        _make_route("POST", "/_sim/faults/ignore-on-write", ignore_on_write),
    ]
