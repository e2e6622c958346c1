"""POST /v1.0/$batch: JSON batching as Graph does it.

At most 20 requests, each `{id, method, url, headers?, body?, dependsOn?}` with a url
relative to the version root ("/users/…" or "users/…"). Graph hands up to four items
at a time to Exchange, so items run on four workers here too; each is throttled,
faulted and counted like a request of its own (a throttled item gets a 429 with its
own Retry-After while the others succeed). An item whose dependency failed gets 424.
Only the batch's Authorization applies to every item; other headers, Prefer included,
must be given per item. Responses come back in the order they finish:
`{"responses": [{id, status, headers, body?}]}`.
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.graph.errors import GraphError, bad_request, graph_error_payload, graph_json
from sandbox.graph.service import Call, GraphService
from sandbox.zisson.store import Response

MAX_REQUESTS = 20
WORKERS = 4  # Graph dispatches up to four batch items to Exchange at once
_METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}


def _validate(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise bad_request("Invalid batch payload format.")
    requests: list[dict[str, Any]] = body["requests"]
    if not requests:
        raise bad_request("The batch request must contain at least one request.")
    if len(requests) > MAX_REQUESTS:
        raise bad_request(f"The number of requests in a batch must not exceed {MAX_REQUESTS}.")
    seen: set[str] = set()
    for item in requests:
        if not isinstance(item, dict):
            raise bad_request("Invalid batch payload format.")
        item_id, method, url = item.get("id"), item.get("method"), item.get("url")
        if not isinstance(item_id, str) or not item_id:
            raise bad_request("Every request in a batch needs a string id.")
        if item_id.lower() in seen:
            raise bad_request(f"Batch request ids must be unique; '{item_id}' repeats.")
        seen.add(item_id.lower())
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise bad_request(f"Request '{item_id}' has an invalid method.")
        if not isinstance(url, str) or not url:
            raise bad_request(f"Request '{item_id}' has no url.")
        headers = item.get("headers") or {}
        if not isinstance(headers, dict):
            raise bad_request(f"Request '{item_id}' has invalid headers.")
        if item.get("body") is not None and not any(k.lower() == "content-type" for k in headers):
            raise bad_request(
                f"Content-Type header must be specified when a body is present ('{item_id}')."
            )
        depends = item.get("dependsOn") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise bad_request(f"Request '{item_id}' has an invalid dependsOn.")
    ids = {item["id"] for item in requests}
    for item in requests:
        for dependency in item.get("dependsOn") or []:
            if dependency not in ids:
                raise bad_request(f"Request '{item['id']}' depends on unknown id '{dependency}'.")
    return requests


def _call(item: dict[str, Any]) -> Call:
    url = item["url"]
    if "://" in url:
        raise bad_request("Batch urls must be relative to the version root.")
    split = urlsplit("/" + url.lstrip("/"))
    path = split.path
    if path.lower().startswith("/v1.0/"):
        path = path[len("/v1.0") :]
    return Call(
        method=item["method"].upper(),
        path=path,
        query=parse_qs(split.query, keep_blank_values=True),
        headers={k.lower(): str(v) for k, v in (item.get("headers") or {}).items()},
        body=item.get("body"),
    )


def _as_item(item_id: str, response: Response) -> dict[str, Any]:
    headers = {k: v for k, v in response.headers.items()}
    result: dict[str, Any] = {"id": item_id, "status": response.status, "headers": headers}
    if response.body:
        result["body"] = json.loads(response.body)
    return result


def run_batch(service: GraphService, body: Any, client_id: str) -> Response:
    requests = _validate(body)
    service.state.count("batches")
    service.state.count("batch_items", len(requests))
    by_id = {item["id"]: item for item in requests}
    pending = dict(by_id)
    done: dict[str, dict[str, Any]] = {}
    order: list[str] = []

    def run(item: dict[str, Any]) -> dict[str, Any]:
        try:
            call = _call(item)
        except GraphError as error:
            payload = graph_error_payload(error, None)
            return _as_item(item["id"], graph_json(error.status, payload, error.headers))
        response, _ = service.dispatch(call, client_id, can_drop=False)
        return _as_item(item["id"], response)

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="graph-batch") as pool:
        running: dict[Future[dict[str, Any]], str] = {}
        while pending or running:
            progressed = True
            while progressed:
                progressed = False
                for item_id, item in list(pending.items()):
                    depends = item.get("dependsOn") or []
                    if not all(d in done for d in depends):
                        continue
                    del pending[item_id]
                    progressed = True
                    if any(done[d]["status"] >= 400 for d in depends):
                        error = GraphError(
                            424, "FailedDependency", "A request this request depends on failed."
                        )
                        done[item_id] = _as_item(
                            item_id, graph_json(424, graph_error_payload(error, None))
                        )
                        order.append(item_id)
                    else:
                        running[pool.submit(run, item)] = item_id
            if not running:
                for item_id in list(pending):  # a dependency cycle: nothing can ever start
                    error = GraphError(424, "FailedDependency", "Circular dependsOn.")
                    payload = graph_error_payload(error, None)
                    done[item_id] = _as_item(item_id, graph_json(424, payload))
                    order.append(item_id)
                    del pending[item_id]
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                item_id = running.pop(future)
                done[item_id] = future.result()
                order.append(item_id)
    return graph_json(200, {"responses": [done[i] for i in order]})
