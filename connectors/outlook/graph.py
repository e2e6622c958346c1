"""The Graph client: authenticated, budgeted, retried requests, paging and $batch.

Every request carries `Prefer: IdType="ImmutableId"` (ids survive moves between
folders) and asks for text bodies. Per mailbox, at most `mailbox_concurrency` requests
are in flight (a $batch counting as the items Graph runs at once) and the request
budget is kept, each $batch item spending one unit (limits.py). Transient failures are
retried by the base class's `with_retry`, honouring Retry-After. Within a $batch only
the items answered 429 or 5xx are sent again, after their own Retry-After.

A request that may have been carried out although its answer was lost (a timeout, a
dropped connection, a 5xx) is retried only when it is idempotent. For the others (a
contact's POST), the caller gets an outcome of status 0, "unknown", and looks before
trying again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from connectors.base import (
    AuthError,
    ContractError,
    FatalError,
    HttpConnectorBase,
    RetriableError,
    RetryPolicy,
    parse_retry_after,
    raise_for_status,
    tls_verify,
)
from connectors.outlook.auth import TokenProvider
from connectors.outlook.limits import RequestBudget, WeightedLimiter, slot_weight
from connectors.outlook.settings import OutlookSettings
from connectors.outlook.tasks import run_all
from connectors.outlook.wire import (
    BATCH_PARALLELISM,
    PREFER,
    RETRY_STATUSES,
    SYSTEM,
    UNKNOWN,
    BatchItem,
    ItemResponse,
    NotSent,
    ResyncRequired,
    Throttled,
    graph_error_code,
    header,
    mailbox_label,
    response_json,
)

# Answers larger than this are decoded off the event loop (a few ms of work and more).
PARSE_OFF_LOOP_BYTES = 64 * 1024

# An expired delta or next link: Graph answers 410 Gone (with a Location header) or "a
# 40X-series error with error codes such as syncStateNotFound"
# (https://learn.microsoft.com/en-us/graph/delta-query-overview, "Synchronization reset",
# "Token duration"); resyncRequired and syncStateInvalid are the other sync-state codes
# Graph uses. Compared without regard to case (Exchange spells them SyncStateNotFound).
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})


class GraphClient(HttpConnectorBase):
    """Graph requests on behalf of one app, limited and budgeted per mailbox."""

    system: ClassVar[str] = SYSTEM

    def __init__(
        self,
        settings: OutlookSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        tokens: TokenProvider | None = None,
    ) -> None:
        verify = tls_verify(SYSTEM, settings.ca_bundle)
        if transport is None:
            # HttpConnectorBase has no http2 switch; HTTP/2 is a property of the transport.
            transport = httpx.AsyncHTTPTransport(
                http2=settings.http2,
                verify=verify,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        super().__init__(
            base_url=settings.graph_url + "/",
            timeout=settings.timeout_seconds,
            verify=verify,
            concurrency=settings.mailbox_concurrency,
            retry_policy=retry_policy,
            transport=transport,
            headers={"User-Agent": "pdsync", "Prefer": PREFER, "Accept": "application/json"},
        )
        self.limiter = WeightedLimiter(settings.mailbox_concurrency)
        self.settings = settings
        self.tokens = tokens or TokenProvider(settings)
        self.budget = RequestBudget(settings.request_budget, settings.budget_window_seconds)
        self.throttled = 0  # 429s seen (envelopes and items), for tests and metrics

    async def aclose(self) -> None:
        await super().aclose()
        self.tokens.close()

    # -- one request ------------------------------------------------------------------

    async def send(
        self, request: httpx.Request, *, what: str, accept_errors: bool = False
    ) -> httpx.Response:
        """Send once; transport failures and error statuses become connector errors.

        Unlike the base class, 429 raises Throttled and a failed connect NotSent (both
        safe to repeat), 410 or any 4xx with a sync-state code (RESYNC_CODES)
        ResyncRequired, and messages carry Graph's error code.
        With `accept_errors`, a 4xx that concerns only this request (404, 409, 412,
        400, ...) is returned rather than raised.
        """
        self.requests += 1
        try:
            response = await self.http.send(request)
        except httpx.ConnectError as exc:
            raise NotSent(f"outlook: {what} could not connect", system=SYSTEM) from exc
        except httpx.TimeoutException as exc:
            raise RetriableError(f"outlook: {what} timed out", system=SYSTEM) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise RetriableError(
                f"outlook: {what} failed in transport ({type(exc).__name__})", system=SYSTEM
            ) from exc
        except httpx.HTTPError as exc:
            raise FatalError(
                f"outlook: {what} failed ({type(exc).__name__})", system=SYSTEM
            ) from exc
        status = response.status_code
        if status < 400:
            return response
        await response.aread()
        code = graph_error_code(response)
        label = f"{what} ({code})" if code else what
        if status == 429:
            self.throttled += 1
            raise Throttled(
                f"outlook: {label} answered HTTP 429",
                system=SYSTEM,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status == 410 or (status < 500 and code.casefold() in RESYNC_CODES):
            raise ResyncRequired(f"outlook: {label} answered HTTP {status}", system=SYSTEM)
        if accept_errors and status < 500 and status not in (401, 403, 408):
            return response
        raise_for_status(SYSTEM, label, response)
        return response  # unreachable: raise_for_status raised

    async def request(
        self,
        scope: str,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        units: int = 1,
        slots: int = 1,
        idempotent: bool = True,
        accept_errors: bool = False,
    ) -> httpx.Response:
        """One Graph request for the mailbox `scope`, retried while that is safe.

        `url` is relative to graph_url ("users/...") or absolute (a next or delta link,
        used verbatim). A non-idempotent request is repeated only after a 429 or a
        failed connect; any other transient failure is raised to the caller.
        `units` is what the request spends of the mailbox's budget, `slots` how many of
        its concurrency slots it holds (both: a $batch's items).
        """
        call = _Call(method, url, what, params, json, headers, units, accept_errors)

        async def attempt() -> httpx.Response:
            try:
                return await self._authorised(scope, call)
            except Throttled as exc:
                self.budget.pause(scope, exc.retry_after or 1.0)
                raise
            except NotSent:
                raise
            except RetriableError as exc:
                if idempotent:
                    raise
                raise _Ambiguous(str(exc)) from exc

        weight = slot_weight.set(slots)
        try:
            return await self.with_retry(scope, attempt)
        except _Ambiguous as exc:
            cause = exc.__cause__
            assert isinstance(cause, RetriableError)
            raise cause from None
        finally:
            slot_weight.reset(weight)

    async def _authorised(self, scope: str, call: _Call) -> httpx.Response:
        for refreshed in (False, True):
            token = await self.tokens.token()
            request = self.http.build_request(
                call.method,
                call.url,
                params=dict(call.params) if call.params else None,
                json=call.json,
                headers={**(call.headers or {}), "Authorization": f"Bearer {token}"},
            )
            try:
                async with self.budget.spending(scope, call.units):
                    return await self.send(
                        request, what=call.what, accept_errors=call.accept_errors
                    )
            except AuthError:
                # A 401 with a token we believed valid (revoked, clock skew): once more
                # with a fresh token, then it is the credential itself.
                if refreshed:
                    raise
                self.tokens.invalidate()
        raise AssertionError("unreachable")

    async def get_json(self, scope: str, url: str, *, what: str, **kwargs: Any) -> Any:
        response = await self.request(scope, "GET", url, what=what, **kwargs)
        if len(response.content) > PARSE_OFF_LOOP_BYTES:
            # A page of a thousand contacts takes ~30 ms to decode and check: in a worker
            # thread, not on the event loop every customer's sync and the API share.
            return await asyncio.to_thread(response_json, response, what)
        return response_json(response, what)

    async def collect(
        self,
        scope: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Every item of a collection, following @odata.nextLink verbatim.

        Returns the items and the @odata.deltaLink of the last page (delta queries).
        """
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        next_params = params
        while next_url is not None:
            page = await self.get_json(
                scope, next_url, what=what, params=next_params, headers=headers
            )
            if not isinstance(page, Mapping) or not isinstance(page.get("value"), list):
                raise ContractError(f"outlook: {what} answered no 'value' list", system=SYSTEM)
            items.extend(item for item in page["value"] if isinstance(item, dict))
            link = page.get("@odata.nextLink")
            next_url = link if isinstance(link, str) and link else None
            next_params = None  # the link carries every option already
            if next_url is None:
                delta = page.get("@odata.deltaLink")
                return items, delta if isinstance(delta, str) else None
        return items, None

    # -- many requests ----------------------------------------------------------------

    async def execute(
        self, scope: str, items: Sequence[BatchItem], *, what: str
    ) -> list[ItemResponse]:
        """Run `items` against one mailbox: one plain request for a single item, else
        $batch envelopes of at most batch_size. One response per item, in order.

        Items answered 429 (or 5xx, when idempotent) are sent again after their
        Retry-After, up to the retry policy's attempts; what is still failing then is
        returned as it was answered. Raises only when the whole system fails (auth,
        an envelope that keeps failing).
        """
        results: list[ItemResponse | None] = [None] * len(items)
        attempts = [0] * len(items)
        pending = list(range(len(items)))
        while pending:
            for index in pending:
                attempts[index] += 1
            if len(pending) == 1 and len(items) == 1:
                answered = {pending[0]: await self._single(scope, items[pending[0]], what)}
            else:
                answered = await self._batches(scope, items, pending, what)
            retry: list[int] = []
            wait: float | None = None
            for index, answer in answered.items():
                item = items[index]
                attempts[index] = max(attempts[index], answer.attempts)
                response = ItemResponse(
                    status=answer.status,
                    headers=answer.headers,
                    body=answer.body,
                    attempts=attempts[index],
                )
                results[index] = response
                again = response.status == 429 or (
                    item.idempotent and response.status in RETRY_STATUSES
                )
                if again and attempts[index] < self.retry_policy.attempts:
                    retry.append(index)
                    after = parse_retry_after(header(response.headers, "Retry-After"))
                    if after is not None:
                        wait = max(wait or 0.0, after)
                    if response.status == 429:
                        self.throttled += 1
            if retry:
                self.retries += len(retry)
                self.log.info("items retried", mailbox=mailbox_label(scope), items=len(retry))
                first = min(attempts[index] for index in retry)
                if wait is not None:  # the server named the time: the mailbox waits for it
                    self.budget.pause(scope, wait)
                # Without a Retry-After (a 5xx), the policy's backoff applies.
                reason = RetriableError("", retry_after=wait)
                await asyncio.sleep(self.retry_policy.wait_for(first, reason))
            pending = sorted(retry)
        return [
            result if result is not None else ItemResponse(status=UNKNOWN) for result in results
        ]

    async def _single(self, scope: str, item: BatchItem, what: str) -> ItemResponse:
        """One item as a plain request; its retries are those of `request`."""
        exhausted = self.retry_policy.attempts
        try:
            response = await self.request(
                scope,
                item.method,
                item.url.lstrip("/"),
                what=what,
                json=item.body,
                headers=item.headers,
                idempotent=item.idempotent,
                accept_errors=True,
            )
        except Throttled:
            return ItemResponse(status=429, attempts=exhausted)
        except RetriableError:
            if item.idempotent:
                raise
            return ItemResponse(status=UNKNOWN, attempts=exhausted)
        body: Any = None
        if response.content:
            body = response_json(response, what)
        return ItemResponse(status=response.status_code, headers=dict(response.headers), body=body)

    async def _batches(
        self, scope: str, items: Sequence[BatchItem], pending: Sequence[int], what: str
    ) -> dict[int, ItemResponse]:
        size = self.settings.batch_size
        chunks = [list(pending[i : i + size]) for i in range(0, len(pending), size)]
        answered: dict[int, ItemResponse] = {}

        async def one(chunk: list[int]) -> None:
            answered.update(await self._envelope(scope, items, chunk, what))

        # Envelopes go out side by side; the Limiter keeps the mailbox's concurrency.
        await run_all([functools.partial(one, chunk) for chunk in chunks])
        return answered

    async def _envelope(
        self, scope: str, items: Sequence[BatchItem], chunk: Sequence[int], what: str
    ) -> dict[int, ItemResponse]:
        requests = []
        for index in chunk:
            item = items[index]
            entry: dict[str, Any] = {"id": str(index), "method": item.method, "url": item.url}
            headers = {"Prefer": PREFER, **item.headers}
            if item.body is not None:
                entry["body"] = item.body
                headers["Content-Type"] = "application/json"
            entry["headers"] = headers
            requests.append(entry)
        idempotent = all(items[index].idempotent for index in chunk)
        try:
            response = await self.request(
                scope,
                "POST",
                "$batch",
                what=f"{what} ($batch of {len(chunk)})",
                json={"requests": requests},
                units=len(chunk),
                slots=min(len(chunk), BATCH_PARALLELISM),
                idempotent=idempotent,
            )
        except (AuthError, ResyncRequired):
            raise
        except RetriableError:
            if idempotent:
                raise
            return {index: ItemResponse(status=UNKNOWN) for index in chunk}
        body = response_json(response, what)
        answers = body.get("responses") if isinstance(body, Mapping) else None
        if not isinstance(answers, list):
            raise ContractError(f"outlook: {what} $batch answered no 'responses'", system=SYSTEM)
        answered: dict[int, ItemResponse] = {}
        wanted = {str(index): index for index in chunk}
        for answer in answers:
            if not isinstance(answer, Mapping) or str(answer.get("id")) not in wanted:
                raise ContractError(f"outlook: {what} $batch answered an unknown id", system=SYSTEM)
            status = answer.get("status")
            item_headers = answer.get("headers")
            answered[wanted[str(answer["id"])]] = ItemResponse(
                status=status if isinstance(status, int) else UNKNOWN,
                headers=dict(item_headers) if isinstance(item_headers, Mapping) else {},
                body=answer.get("body"),
            )
        for index in chunk:
            # An item without an answer is an item whose fate is unknown.
            answered.setdefault(index, ItemResponse(status=UNKNOWN))
        return answered


class _Ambiguous(FatalError):
    """Internal: a transient failure of a request that must not simply be repeated."""


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    url: str
    what: str
    params: Mapping[str, str] | None
    json: Any
    headers: Mapping[str, str] | None
    units: int
    accept_errors: bool
