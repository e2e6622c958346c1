"""The connector contract: one interface for every external system.

Exception tree (nothing else escapes a connector)::

    ConnectorError
    ├── RetriableError        429, 5xx, timeouts, dropped connections; has retry_after
    └── FatalError            the same call will fail again
        ├── AuthError         credentials refused or expired beyond refresh
        ├── ConflictError     an optimistic precondition failed (the record changed)
        ├── NotFoundError     the record is not there
        └── ContractError     the system answered something we cannot read

Vendor exceptions (httpx, google.api_core/grpc, msal) are translated at the boundary.
Messages name systems, operations, field names and status codes, never personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import ssl
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import httpx
import structlog
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from connectors.bounds import MAX_RESPONSE_BYTES
from daemon.domain import ContactRecord, Customer, Operation, OpResult, ReadResult

T = TypeVar("T")


class ConnectorError(Exception):
    """Root of every error a connector raises."""

    def __init__(self, message: str, *, system: str | None = None) -> None:
        super().__init__(message)
        self.system = system


class RetriableError(ConnectorError):
    """A transient failure: the same call may succeed later (after `retry_after` seconds)."""

    def __init__(
        self, message: str, *, system: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, system=system)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """The same call will fail again; a person or a changed plan is needed."""


class AuthError(FatalError):
    pass


class ConflictError(FatalError):
    pass


class NotFoundError(FatalError):
    pass


class ContractError(FatalError):
    pass


class Capability(StrEnum):
    DIRECTORY = "directory"
    ERASABLE = "erasable"
    RETENTION = "retention"


@runtime_checkable
class Connector(Protocol):
    """What the daemon needs of a system.

    `system` is the short name used in config, links and logs ("zisson", "firestore",
    "outlook"). `capabilities` declares which parts of the contract are implemented;
    the daemon never calls a method whose capability is not declared. `fields` is the
    set of SYNC_FIELDS the system can hold; the others are neither read nor written.
    """

    @property
    def system(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    @property
    def fields(self) -> frozenset[str]: ...

    async def read(self, customer: Customer) -> ReadResult:
        """Every contact record of `customer` in this system.

        Records that cannot be parsed are returned in `rejected`, never dropped and
        never raised. Raises RetriableError or FatalError.
        """
        ...

    async def apply(self, customer: Customer, ops: Sequence[Operation]) -> list[OpResult]:
        """Apply `ops`, one OpResult per op, in order.

        Idempotent by `Operation.op_id`: applying an op that was already applied
        (a rerun after a crash) changes nothing more and reports APPLIED. UPDATE and
        DELETE honour `expected_version` where the system supports preconditions and
        report CONFLICT when it fails. A failure of one op is reported in its result;
        only a failure of the whole system (auth, outage beyond retries) raises.
        """
        ...

    def project(self, record: ContactRecord) -> ContactRecord:
        """What this system would hold if `record` were written to it.

        Used to compare values across systems whose shapes differ (a system that holds
        only two phone numbers, say). Identity for systems that hold everything.
        """
        ...

    def for_customer(self, customer: Customer) -> Connector:
        """This connector as it applies to one customer.

        Where what a system holds depends on the customer's binding (Zisson's XML API
        holds less than its JSON API), the view's `fields` and `project` are that
        customer's; elsewhere it is the connector itself.
        """
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How transient errors are retried: as a value, so each connector states its own."""

    attempts: int = 6
    max_delay: float = 120.0  # give up after this many seconds in total
    base_wait: float = 0.2
    max_wait: float = 30.0

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        retry_after: float | None = getattr(error, "retry_after", None)
        backoff = min(self.max_wait, self.base_wait * 2.0 ** (attempt - 1))
        jitter = random.uniform(0, backoff / 2)
        if retry_after is not None:
            # Never earlier than the vendor asked; a little jitter so clients spread out.
            # (A Retry-After beyond max_delay ends the retries: stop_after_delay fires.)
            return retry_after + jitter / 4
        return backoff / 2 + jitter


class Limiter:
    """At most `concurrency` calls in flight per quota scope (mailbox, database, account)."""

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(self, scope: str) -> AsyncIterator[None]:
        semaphore = self._semaphores.get(scope)
        if semaphore is None:
            semaphore = self._semaphores[scope] = asyncio.Semaphore(self._concurrency)
        async with semaphore:
            yield


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RetryingConnectorBase:
    """Shared plumbing: retries of RetriableError per a RetryPolicy, a limiter, a logger."""

    system: ClassVar[str] = "unknown"
    retry_policy: RetryPolicy = RetryPolicy()

    def __init__(self, *, concurrency: int = 4, retry_policy: RetryPolicy | None = None) -> None:
        if retry_policy is not None:
            self.retry_policy = retry_policy
        self.limiter = Limiter(concurrency)
        self.log = structlog.get_logger(f"pdsync.connectors.{self.system}").bind(
            connector=self.system
        )
        self.retries = 0  # retried calls, for metrics and tests

    def log_applied(
        self, customer: Customer, ops: Sequence[Operation], results: Sequence[OpResult]
    ) -> None:
        """What a batch of writes did: one line with its counts (by kind and status), and
        each operation at debug. A line an operation was 6,000 lines for a large
        customer's first sync, written on the event loop every sync and the API share:
        its longest stalls were those lines."""
        counts = Counter(f"{op.kind}.{r.status}" for op, r in zip(ops, results, strict=True))
        self.log.info("applied", customer=customer.id, ops=len(ops), results=dict(counts))
        for op, result in zip(ops, results, strict=True):
            self.log.debug(
                "applied_op",
                customer=customer.id,
                op_id=op.op_id,
                kind=str(op.kind),
                status=str(result.status),
            )

    async def with_retry(self, scope: str, call: Callable[[], Awaitable[T]]) -> T:
        policy = self.retry_policy
        started = time.monotonic()

        def wait(retry_state: Any) -> float:
            outcome = retry_state.outcome
            error = outcome.exception() if outcome is not None else None
            return policy.wait_for(retry_state.attempt_number, error)

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RetriableError),
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_delay),
            wait=wait,
            reraise=True,
            before_sleep=lambda state: self._note_retry(state, scope, started),
        ):
            with attempt:
                async with self.limiter.slot(scope):
                    return await call()
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _note_retry(self, state: Any, scope: str, started: float) -> None:
        self.retries += 1
        error = state.outcome.exception() if state.outcome is not None else None
        self.log.info(
            "retrying",
            scope=scope,
            attempt=state.attempt_number,
            error=type(error).__name__,
            elapsed=round(time.monotonic() - started, 2),
        )

    def project(self, record: ContactRecord) -> ContactRecord:
        return record

    def for_customer(self, customer: Customer) -> Connector:
        return self  # type: ignore[return-value]


# What we ask servers to compress with: the encodings `_CappedStream` inflates itself,
# so that the cap holds for what is decompressed, not only for what travels.
ACCEPT_ENCODING = "gzip, deflate"


class _CappedStream(httpx.AsyncByteStream):
    """A response body read through a cap, gzip or deflate inflated here (never more
    than the cap at once: a small compressed answer can unpack to gigabytes)."""

    def __init__(
        self, inner: httpx.AsyncByteStream, *, cap: int, system: str, encoding: str
    ) -> None:
        self._inner = inner
        self._cap = cap
        self._system = system
        self._encoding = encoding

    async def __aiter__(self) -> AsyncIterator[bytes]:
        inflater = None
        if self._encoding == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self._encoding == "deflate":
            inflater = zlib.decompressobj(zlib.MAX_WBITS)
        total = 0
        async for chunk in self._inner:
            pending = chunk
            while pending:
                if inflater is None:
                    data, pending = pending, b""
                else:
                    try:
                        data = inflater.decompress(pending, self._cap - total + 1)
                    except zlib.error:
                        raise ContractError(
                            f"{self._system}: an answer's {self._encoding} body is corrupt",
                            system=self._system,
                        ) from None
                    pending = inflater.unconsumed_tail
                total += len(data)
                if total > self._cap:
                    raise ContractError(
                        f"{self._system}: an answer exceeded the cap of {self._cap} bytes;"
                        " nothing of it was read",
                        system=self._system,
                    )
                if data:
                    yield data

    async def aclose(self) -> None:
        await self._inner.aclose()


def cap_responses(system: str, cap: int) -> Callable[[httpx.Response], Awaitable[None]]:
    """An httpx response hook: each answer's body is read through `_CappedStream`, so
    one larger than `cap` bytes (decompressed) raises ContractError, a page-level
    failure, instead of filling memory. Content-Encoding is handled (and removed) here;
    one not asked for (`ACCEPT_ENCODING`) is refused."""

    async def hook(response: httpx.Response) -> None:
        if response.is_stream_consumed:  # built from bytes (a test transport)
            if len(response.content) > cap:
                raise ContractError(
                    f"{system}: an answer exceeded the cap of {cap} bytes", system=system
                )
            return
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise ContractError(
                f"{system}: an answer came with Content-Encoding {encoding[:20]!r},"
                " which was not asked for",
                system=system,
            )
        if not isinstance(response.stream, httpx.AsyncByteStream):
            return  # a synchronous stream: not from an AsyncClient's transport
        if encoding != "identity":
            del response.headers["Content-Encoding"]
            response.headers.pop("Content-Length", None)
        response.stream = _CappedStream(response.stream, cap=cap, system=system, encoding=encoding)

    return hook


class HttpConnectorBase(RetryingConnectorBase):
    """A RetryingConnectorBase with an httpx.AsyncClient and httpx errors translated.

    No answer is read past `max_response_bytes` (see `cap_responses`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        timeout: float = 30.0,
        verify: Any = True,
        concurrency: int = 4,
        retry_policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(concurrency=concurrency, retry_policy=retry_policy)
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            verify=verify,
            transport=transport,
            headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})},
            event_hooks={"response": [cap_responses(self.system, max_response_bytes)]},
        )
        self.requests = 0  # requests sent, for metrics and the no-change benchmark
        self.throttled = 0  # answers of HTTP 429, for metrics

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, request: httpx.Request, *, what: str) -> httpx.Response:
        """Send once, translating transport failures and error statuses.

        `what` names the call in error messages ("GetContacts", "update user").
        """
        self.requests += 1
        try:
            response = await self.http.send(request)
        except httpx.TimeoutException as exc:
            raise RetriableError(f"{self.system}: {what} timed out", system=self.system) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise RetriableError(
                f"{self.system}: {what} failed in transport ({type(exc).__name__})",
                system=self.system,
            ) from exc
        except httpx.HTTPError as exc:
            raise FatalError(
                f"{self.system}: {what} failed ({type(exc).__name__})", system=self.system
            ) from exc
        if response.status_code == 429:
            self.throttled += 1
        raise_for_status(self.system, what, response)
        return response


def tls_verify(system: str, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies a server with: the system's CA bundle if one is configured
    (a private CA, a proxy's), else the default trust store. FatalError names the file."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise FatalError(
            f"{system}: ca_bundle {ca_bundle} cannot be loaded ({exc})", system=system
        ) from None


def raise_for_status(system: str, what: str, response: httpx.Response) -> None:
    """Translate an HTTP error status into the connector exception tree."""
    status = response.status_code
    if status < 400:
        return
    message = f"{system}: {what} answered HTTP {status}"
    if status == 429 or status == 503 or status >= 500 or status == 408:
        raise RetriableError(
            message,
            system=system,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status in (401, 403):
        raise AuthError(message, system=system)
    if status == 404:
        raise NotFoundError(message, system=system)
    if status in (409, 412):
        raise ConflictError(message, system=system)
    raise FatalError(message, system=system)


B = TypeVar("B", bound=BaseModel)


def customer_binding(customer: Customer, system: str, model: type[B]) -> B:
    """The customer's binding for `system` as `model` (a mapping from config is
    validated here). Raises FatalError naming the customer and the bad keys, never
    their values."""
    try:
        binding = customer.binding(system)
    except LookupError as exc:
        raise FatalError(str(exc), system=system) from None
    if isinstance(binding, Mapping):
        try:
            binding = model.model_validate(dict(binding))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'binding'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise FatalError(
                f"{system}: the binding of customer {customer.id!r} is invalid: {problems}",
                system=system,
            ) from None
    if not isinstance(binding, model):
        raise FatalError(
            f"{system}: the binding of customer {customer.id!r} is not a {model.__name__}",
            system=system,
        )
    return binding


async def gather_limited(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run `calls` with at most `limit` in flight, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await call()

    return list(await asyncio.gather(*(run(call) for call in calls)))
