"""/_sim/: inspection and seeding of a running GraphSimulator from another process.

No auth, never faulted, never throttled. Bodies are JSON.

GET  /_sim/state                                   what GraphSimulator.state() returns
POST /_sim/faults                                  {error_rate, latency_ms, rate_429, ...}
POST /_sim/counters/reset
POST /_sim/time-scale                              {"scale": 60}
POST /_sim/delta-tokens/expire
POST /_sim/access-tokens/revoke
POST /_sim/apps                                    {client_id, secret?, certificate_pem?}
POST /_sim/mailboxes                               {upn}
POST /_sim/mailboxes/{upn}/folders                 {display_name, parent?} -> {id}
POST /_sim/mailboxes/{upn}/messages                add_message's keywords + folder -> {id}
GET  /_sim/mailboxes/{upn}/messages[?folder=]      messages()
GET  /_sim/mailboxes/{upn}/purged                  purged()
POST /_sim/mailboxes/{upn}/contact-folders         {display_name} -> {id}
POST /_sim/mailboxes/{upn}/contact-folders/{id}/contacts   contact JSON -> {id}
GET  /_sim/mailboxes/{upn}/contact-folders/{id}/contacts
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sandbox.graph.errors import GraphError
from sandbox.zisson.store import Response, json_response

if TYPE_CHECKING:
    from sandbox.graph.simulator import GraphSimulator

Query = dict[str, list[str]]


def admin_handler(
    sim: GraphSimulator,
) -> Callable[[str, str, Query, bytes], Response]:
    def body_of(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("body: not UTF-8 JSON") from None
        if not isinstance(body, dict):
            raise ValueError("body: not a JSON object")
        return body

    def add_message(upn: str, body: dict[str, Any]) -> Response:
        received = body.pop("received", None)
        folder = body.pop("folder", "inbox")
        message_id = sim.add_message(
            upn,
            folder,
            received=dt.datetime.fromisoformat(received.replace("Z", "+00:00"))
            if received
            else None,
            **body,
        )
        return json_response(201, {"id": message_id})

    def add_app(body: dict[str, Any]) -> Response:
        pem = body.get("certificate_pem")
        sim.add_app(
            body["client_id"],
            secret=body.get("secret"),
            certificate_pem=pem.encode("ascii") if isinstance(pem, str) else None,
        )
        return json_response(201, {"client_id": body["client_id"]})

    def no_content(action: Callable[[], object]) -> Response:
        action()
        return Response(204)

    Route = tuple[str, str, Callable[[dict[str, str], Query, dict[str, Any]], Response]]
    mailbox = "/_sim/mailboxes/(?P<upn>[^/]+)"
    routes: list[Route] = [
        ("GET", "/_sim/state", lambda p, q, b: json_response(200, sim.state())),
        (
            "POST",
            "/_sim/faults",
            lambda p, q, b: json_response(200, {"faults": repr(sim.set_faults(**b))}),
        ),
        ("POST", "/_sim/counters/reset", lambda p, q, b: no_content(sim.reset_counters)),
        (
            "POST",
            "/_sim/time-scale",
            lambda p, q, b: no_content(lambda: sim.set_time_scale(float(b["scale"]))),
        ),
        ("POST", "/_sim/delta-tokens/expire", lambda p, q, b: no_content(sim.expire_delta_tokens)),
        (
            "POST",
            "/_sim/access-tokens/revoke",
            lambda p, q, b: no_content(sim.revoke_access_tokens),
        ),
        ("POST", "/_sim/apps", lambda p, q, b: add_app(b)),
        (
            "POST",
            "/_sim/mailboxes",
            lambda p, q, b: no_content(lambda: sim.add_mailbox(b["upn"])),
        ),
        (
            "POST",
            mailbox + "/folders",
            lambda p, q, b: json_response(
                201,
                {
                    "id": sim.add_folder(
                        p["upn"], b["display_name"], parent=b.get("parent", "msgfolderroot")
                    )
                },
            ),
        ),
        ("POST", mailbox + "/messages", lambda p, q, b: add_message(p["upn"], b)),
        (
            "GET",
            mailbox + "/messages",
            lambda p, q, b: json_response(
                200, sim.messages(p["upn"], q.get("folder", [""])[0] or None)
            ),
        ),
        ("GET", mailbox + "/purged", lambda p, q, b: json_response(200, sim.purged(p["upn"]))),
        (
            "POST",
            mailbox + "/contact-folders",
            lambda p, q, b: json_response(
                201, {"id": sim.add_contact_folder(p["upn"], b["display_name"])}
            ),
        ),
        (
            "POST",
            mailbox + "/contact-folders/(?P<folder>[^/]+)/contacts",
            lambda p, q, b: json_response(201, {"id": sim.add_contact(p["upn"], p["folder"], b)}),
        ),
        (
            "GET",
            mailbox + "/contact-folders/(?P<folder>[^/]+)/contacts",
            lambda p, q, b: json_response(200, sim.contacts(p["upn"], p["folder"])),
        ),
    ]
    compiled = [(m, re.compile(pattern), handler) for m, pattern, handler in routes]

    def handle(method: str, path: str, query: Query, raw: bytes) -> Response:
        for wanted, pattern, handler in compiled:
            found = pattern.fullmatch(path)
            if found is None or wanted != method:
                continue
            params = {k: unquote(v) for k, v in found.groupdict().items()}
            try:
                return handler(params, query, body_of(raw) if method == "POST" else {})
            except GraphError as error:
                return json_response(error.status, {"error": error.message})
            except (KeyError, TypeError, ValueError) as error:
                return json_response(400, {"error": f"{type(error).__name__}: {error}"})
        return json_response(404, {"error": "no such /_sim/ endpoint"})

    return handle
