"""The Graph client's plumbing against httpx.MockTransport: headers, paging, $batch,
retries, error translation and the per-mailbox limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connectors.base import AuthError, FatalError, NotFoundError, RetriableError, RetryPolicy
from connectors.outlook import (
    BatchItem,
    GraphClient,
    OutlookSettings,
    ResyncRequired,
    TokenProvider,
)
from connectors.outlook.wire import UNKNOWN

GRAPH = "https://graph.test/v1.0"
FAST = RetryPolicy(attempts=5, max_delay=10, base_wait=0.001, max_wait=0.01)
MBX = "svc@we4you.no"


class FakeTokens(TokenProvider):
    def __init__(self, settings: OutlookSettings) -> None:
        super().__init__(settings)
        self.issued = 0

    async def token(self) -> str:
        if self._token is None:
            self.issued += 1
            self._token = f"token-{self.issued}"
        return self._token

    def invalidate(self) -> None:
        self._token = None


Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **overrides: Any) -> GraphClient:
    settings = OutlookSettings.model_validate(
        {
            "tenant_id": "t",
            "client_id": "c",
            "client_secret": {"env": "UNUSED"},
            "graph_url": GRAPH,
            **overrides,
        }
    )
    return GraphClient(
        settings,
        transport=httpx.MockTransport(handler),
        retry_policy=FAST,
        tokens=FakeTokens(settings),
    )


def graph_error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": "Ola Nordmann 22334455 is not here"}}
    return httpx.Response(status, json=body, headers=headers)


async def test_every_request_carries_immutable_ids_text_bodies_and_a_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("$batch"):
            items = json.loads(request.content)["requests"]
            return httpx.Response(
                200, json={"responses": [{"id": i["id"], "status": 204} for i in items]}
            )
        return httpx.Response(200, json={"value": []})

    graph = client(handler)
    await graph.collect(MBX, "users/x/messages", what="list")
    await graph.execute(
        MBX, [BatchItem(method="POST", url="/a"), BatchItem(method="POST", url="/b")], what="t"
    )
    await graph.aclose()
    for request in seen:
        assert 'IdType="ImmutableId"' in request.headers["Prefer"]
        assert 'outlook.body-content-type="text"' in request.headers["Prefer"]
        assert request.headers["Authorization"] == "Bearer token-1"
    batch = json.loads(seen[-1].content)["requests"]
    assert all('IdType="ImmutableId"' in item["headers"]["Prefer"] for item in batch)
    assert [item["url"] for item in batch] == ["/a", "/b"]


async def test_next_links_are_followed_verbatim() -> None:
    link = f"{GRAPH}/users/x/messages?%24search=%22a%20b%22&%24skiptoken=eyJza2lwIjogMTB9%3D%3D"
    raw: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        raw.append(request.url.raw_path)
        if len(raw) == 1:
            return httpx.Response(200, json={"value": [{"id": "1"}], "@odata.nextLink": link})
        return httpx.Response(
            200, json={"value": [{"id": "2"}], "@odata.deltaLink": f"{GRAPH}/delta?t=1"}
        )

    graph = client(handler)
    items, delta = await graph.collect(MBX, "users/x/messages", what="list", params={"$top": "1"})
    await graph.aclose()
    assert [i["id"] for i in items] == ["1", "2"]
    assert raw[1] == link.removeprefix("https://graph.test").encode()
    assert delta == f"{GRAPH}/delta?t=1"


async def test_batch_retries_only_throttled_and_failing_items_after_their_retry_after() -> None:
    calls: list[tuple[float, list[str]]] = []
    throttled_once: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        calls.append((time.monotonic(), [i["url"] for i in items]))
        answers = []
        for item in items:
            url = item["url"]
            if url.endswith("/429") and url not in throttled_once:
                throttled_once.add(url)
                answers.append({"id": item["id"], "status": 429, "headers": {"Retry-After": "0.2"}})
            elif url.endswith("/503") and url not in throttled_once:
                throttled_once.add(url)
                answers.append({"id": item["id"], "status": 503, "headers": {}})
            elif url.endswith("/404"):
                answers.append(
                    {
                        "id": item["id"],
                        "status": 404,
                        "body": {"error": {"code": "ErrorItemNotFound"}},
                    }
                )
            else:
                answers.append({"id": item["id"], "status": 204})
        answers.reverse()  # Graph answers in the order items finish
        return httpx.Response(200, json={"responses": answers})

    urls = [f"/m/{i}/ok" for i in range(23)] + ["/m/x/429", "/m/y/503", "/m/z/404"]
    graph = client(handler)
    answers = await graph.execute(
        MBX, [BatchItem(method="POST", url=u) for u in urls], what="erase"
    )
    await graph.aclose()
    assert [len(urls) for _, urls in calls[:2]] == [20, 6]  # never more than 20 per envelope
    assert sorted(calls[2][1]) == ["/m/x/429", "/m/y/503"]  # only those are sent again
    assert calls[2][0] - calls[1][0] >= 0.2  # not before Retry-After
    statuses = {url: answer.status for url, answer in zip(urls, answers, strict=True)}
    assert statuses["/m/x/429"] == statuses["/m/y/503"] == 204
    assert statuses["/m/z/404"] == 404 and answers[-1].error_code == "ErrorItemNotFound"
    assert answers[-3].attempts == 2 and answers[0].attempts == 1
    assert graph.throttled == 1


async def test_a_non_idempotent_item_is_not_repeated_after_an_ambiguous_failure() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        items = (
            json.loads(request.content)["requests"] if request.url.path.endswith("$batch") else []
        )
        sent.extend(i["method"] for i in items)
        if not items:
            sent.append(request.method)
            raise httpx.ReadTimeout("lost", request=request)
        return httpx.Response(
            200,
            json={
                "responses": [
                    {"id": i["id"], "status": 502 if i["method"] == "POST" else 200, "body": {}}
                    for i in items
                ]
            },
        )

    graph = client(handler)
    create = BatchItem(method="POST", url="/c", body={"a": 1}, idempotent=False)
    update = BatchItem(method="PATCH", url="/u", body={"a": 1})
    batched = await graph.execute(MBX, [create, update], what="apply")
    assert [a.status for a in batched] == [502, 200]
    assert sent.count("POST") == 1  # the 502 create is for the caller to look into
    (single,) = await graph.execute(MBX, [create], what="apply")
    assert single.status == UNKNOWN and sent.count("POST") == 2  # the timeout: not repeated
    await graph.aclose()


async def test_errors_are_translated_and_name_codes_not_content() -> None:
    responses = {
        "/v1.0/a": graph_error(404, "ErrorItemNotFound"),
        "/v1.0/b": graph_error(410, "SyncStateNotFound"),
        "/v1.0/c": graph_error(400, "ErrorInvalidRequest"),
        "/v1.0/d": graph_error(403, "ErrorAccessDenied"),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1.0/e":
            raise httpx.ReadError("boom", request=request)
        return responses[request.url.path]

    graph = client(handler)
    for path, error in (
        ("a", NotFoundError),
        ("b", ResyncRequired),
        ("c", FatalError),
        ("d", AuthError),
        ("e", RetriableError),
    ):
        with pytest.raises(error) as caught:
            await graph.request(MBX, "GET", path, what="get thing")
        assert "Ola" not in str(caught.value) and "22334455" not in str(caught.value)
        assert not isinstance(caught.value, httpx.HTTPError)
    with pytest.raises(FatalError, match=r"get thing \(ErrorInvalidRequest\) answered HTTP 400"):
        await graph.request(MBX, "GET", "c", what="get thing")
    assert graph.retries >= 4  # the read error was retried until the policy gave up
    await graph.aclose()


async def test_a_401_gets_a_fresh_token_once() -> None:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer token-1":
            return graph_error(401, "InvalidAuthenticationToken")
        return httpx.Response(200, json={"value": []})

    graph = client(handler)
    await graph.get_json(MBX, "users/x/messages", what="list")
    assert tokens == ["Bearer token-1", "Bearer token-2"]
    await graph.aclose()

    always = client(lambda request: graph_error(401, "InvalidAuthenticationToken"))
    with pytest.raises(AuthError):
        await always.get_json(MBX, "users/x/messages", what="list")
    await always.aclose()


async def test_a_429_is_honoured_for_the_whole_mailbox() -> None:
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return graph_error(429, "ApplicationThrottled", {"Retry-After": "0.3"})
        return httpx.Response(200, json={"value": []})

    graph = client(handler)
    await asyncio.gather(*(graph.get_json(MBX, "users/x/messages", what="list") for _ in range(3)))
    await graph.aclose()
    # Everything after the 429 waited for its Retry-After, not just the throttled call.
    assert all(stamp - stamps[0] >= 0.29 for stamp in stamps[1:])


async def test_in_flight_requests_and_batch_items_stay_within_the_mailbox_limit() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        items = (
            json.loads(request.content)["requests"] if request.url.path.endswith("$batch") else []
        )
        weight = min(len(items), 4) if items else 1  # Graph runs 4 batch items at a time
        in_flight += weight
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= weight
        if items:
            return httpx.Response(
                200, json={"responses": [{"id": i["id"], "status": 204} for i in items]}
            )
        return httpx.Response(200, json={"value": []})

    graph = client(handler)  # type: ignore[arg-type]
    work = [graph.get_json(MBX, "users/x/messages", what="list") for _ in range(12)]
    work += [
        graph.execute(MBX, [BatchItem(method="POST", url=f"/{i}") for i in range(45)], what="e")
    ]
    work += [graph.get_json("other@we4you.no", "users/y/messages", what="list") for _ in range(4)]
    await asyncio.gather(*work)
    await graph.aclose()
    assert peak <= 4 + 4  # at most 4 per mailbox, two mailboxes
    assert graph.limiter.max_in_use <= 4  # type: ignore[attr-defined]


async def test_the_budget_holds_in_every_window_and_runs_near_its_rate() -> None:
    answered: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.002)
        answered.append(time.monotonic())
        return httpx.Response(200, json={"value": []})

    graph = client(handler, request_budget=10, budget_window_seconds=0.25)  # type: ignore[arg-type]
    started = time.monotonic()
    await asyncio.gather(*(graph.get_json(MBX, "u", what="list") for _ in range(35)))
    elapsed = time.monotonic() - started
    await graph.aclose()
    for stamp in answered:  # no 0.25 s window (by answer time) holds more than 10
        assert sum(1 for other in answered if stamp - 0.25 < other <= stamp) <= 10
    assert 0.7 <= elapsed < 1.5  # 35 requests at 10 per 0.25 s: three full waits
