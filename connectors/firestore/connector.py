"""FirestoreConnector: the customer cards and their contacts in Google Cloud Firestore.

The sync `google.cloud.firestore.Client` is used, run in worker threads with
`asyncio.to_thread`: BulkWriter exists only on the sync client, and one client object
then serves every event loop the daemon or a test may use.

Every RPC is sent with the client library's own retries switched off (`retry=None`; for
query streams a retry that declines, see `_DECLINE`), so
retries happen in one place (`with_retry`: counted, logged, limited per database) and
`requests` counts what really went over the wire. Writes are safe to retry: CREATE
targets a document id derived from the link, and a write whose precondition fails is
read back to tell "already done" from "changed by someone else".

Queries are read in pages (`_scan`): `page_size` documents ordered by document name per
RunQuery, each page an RPC of its own with its own deadline and retries, the next page
starting after the last document seen (query cursors:
https://cloud.google.com/firestore/docs/query-data/query-cursors). A dropped stream or a
slow page costs that page again, never the whole collection, so a subcollection of any
size is read; one stream for everything would share a single deadline.

Firestore deletes a document without what is below it, and a document whose parent is
gone is still there, found by queries below the parent's path but not as the parent
(https://cloud.google.com/firestore/docs/manage-data/delete-data). So the card and
retention look below each document with the library's recursive queries (`recursive()`,
what `Client.recursive_delete` uses) and delete what they find through our own
BulkWriter, whose every failure is seen. `recursive_delete` itself returns how many
deletes it queued, not how many landed, and a write its BulkWriter gives up on (after 15
tries, or in a batch whose RPC raised) is dropped without an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

import grpc
from google.api_core import exceptions as google_errors
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.api_core.retry import Retry
from google.auth import exceptions as auth_errors
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import firestore
from google.cloud.firestore_v1.base_document import DocumentSnapshot
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch
from google.cloud.firestore_v1.bulk_writer import (
    BulkRetry,
    BulkWriteFailure,
    BulkWriter,
    BulkWriterOptions,
)
from google.cloud.firestore_v1.collection import CollectionReference
from google.cloud.firestore_v1.document import DocumentReference
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.query import Query
from google.cloud.firestore_v1.types.firestore import BatchWriteResponse
from google.cloud.firestore_v1.types.write import WriteResult
from google.oauth2 import service_account
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2

from connectors.base import (
    AuthError,
    Capability,
    ConflictError,
    ConnectorError,
    FatalError,
    NotFoundError,
    RetriableError,
    RetryingConnectorBase,
    RetryPolicy,
    customer_binding,
)
from connectors.firestore.mapping import (
    SYSTEM,
    card_fields,
    contact_document_id,
    format_version,
    from_document,
    holds,
    keep_phone_extras,
    parse_version,
    to_document,
    to_fields,
)
from connectors.firestore.settings import FirestoreBinding, FirestoreSettings, check_document_id
from daemon.domain import (
    SYNC_FIELDS,
    ContactRecord,
    Customer,
    ItemRef,
    Operation,
    OpKind,
    OpResult,
    OpStatus,
    ReadResult,
    Rejected,
    Residual,
    RetentionScan,
)

T = TypeVar("T")

CUSTOMERS = "customers"
CONTACTS = "contacts"
CARD = ""  # paths below the card are relative to it; the card itself is ""
# Kinds of a retention ref: a document of a subcollection with a rule; one below such a
# document, deleted with it; one below a document that is gone, judged by its own age.
DOCUMENT, NESTED, ORPHANED = "document", "nested", "orphaned"

# For query streams instead of retry=None: when a stream breaks, the library asks the
# retry's predicate whether to resume the stream itself (query.py, `_make_stream`), and
# with no retry at all it fails with AttributeError, which would read as a fatal error.
# This one declines, so the gRPC error is raised as it is and `with_retry` sends the page
# again from its cursor.
_DECLINE = Retry(predicate=lambda exc: False)

_CODES: dict[int, grpc.StatusCode] = {int(code.value[0]): code for code in grpc.StatusCode}
_OK: int = grpc.StatusCode.OK.value[0]
_NOT_FOUND: int = grpc.StatusCode.NOT_FOUND.value[0]
_ALREADY_EXISTS: int = grpc.StatusCode.ALREADY_EXISTS.value[0]
_FAILED_PRECONDITION: int = grpc.StatusCode.FAILED_PRECONDITION.value[0]
_UNKNOWN: int = grpc.StatusCode.UNKNOWN.value[0]
_INVALID_ARGUMENT: int = grpc.StatusCode.INVALID_ARGUMENT.value[0]


# --- error translation ---------------------------------------------------------------


class _Class(enum.Enum):
    RETRIABLE = "retriable"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    FATAL = "fatal"


# Transient by Google's guidance for Firestore, plus UNKNOWN, which gRPC reports for
# dropped streams.
_RETRIABLE_ERRORS: tuple[type[Exception], ...] = (
    google_errors.ServiceUnavailable,
    google_errors.DeadlineExceeded,
    google_errors.ResourceExhausted,
    google_errors.TooManyRequests,
    google_errors.Aborted,
    google_errors.InternalServerError,
    google_errors.BadGateway,
    google_errors.GatewayTimeout,
    google_errors.Unknown,
    google_errors.RetryError,
    auth_errors.TransportError,
    concurrent.futures.TimeoutError,
    TimeoutError,
    ConnectionError,
)
_AUTH_ERRORS: tuple[type[Exception], ...] = (
    google_errors.Unauthenticated,
    google_errors.PermissionDenied,
    auth_errors.DefaultCredentialsError,
    auth_errors.RefreshError,
)


def _as_google_error(exc: BaseException) -> BaseException:
    # A grpc.RpcError that the client library did not wrap (raised from a stream).
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        converted: BaseException = google_errors.from_grpc_error(exc)  # type: ignore[no-untyped-call]
        return converted
    return exc


def _classify(exc: BaseException) -> _Class:
    exc = _as_google_error(exc)
    if isinstance(exc, auth_errors.RefreshError) and getattr(exc, "retryable", False):
        return _Class.RETRIABLE
    if isinstance(exc, _RETRIABLE_ERRORS):
        return _Class.RETRIABLE
    if isinstance(exc, _AUTH_ERRORS):
        return _Class.AUTH
    if isinstance(exc, google_errors.NotFound):
        return _Class.NOT_FOUND
    if isinstance(exc, google_errors.FailedPrecondition | google_errors.AlreadyExists):
        return _Class.CONFLICT
    return _Class.FATAL


def _retry_after(exc: BaseException) -> float | None:
    # RESOURCE_EXHAUSTED may carry a google.rpc.RetryInfo with the delay Google asks for.
    if not isinstance(exc, google_errors.GoogleAPICallError):
        return None
    for detail in exc.details or ():
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and hasattr(delay, "seconds"):
            return float(delay.seconds) + float(delay.nanos) / 1e9
    return None


def _error_name(exc: BaseException) -> str:
    exc = _as_google_error(exc)
    code = getattr(exc, "grpc_status_code", None)
    name = type(exc).__name__
    return f"{name} ({code.name})" if isinstance(code, grpc.StatusCode) else name


def translate_error(exc: BaseException, what: str) -> ConnectorError:
    """The connector error for a google.api_core, google.auth or grpc exception.

    The message names the call and the error class only: vendor messages can quote
    document paths, which this daemon treats as personal data.
    """
    if isinstance(exc, ConnectorError):
        return exc
    exc = _as_google_error(exc)
    message = f"{SYSTEM}: {what} failed: {_error_name(exc)}"
    match _classify(exc):
        case _Class.RETRIABLE:
            return RetriableError(message, system=SYSTEM, retry_after=_retry_after(exc))
        case _Class.AUTH:
            return AuthError(message, system=SYSTEM)
        case _Class.NOT_FOUND:
            return NotFoundError(message, system=SYSTEM)
        case _Class.CONFLICT:
            return ConflictError(message, system=SYSTEM)
        case _Class.FATAL:
            return FatalError(message, system=SYSTEM)


class IncompleteDeletion(FatalError):
    """Some deletes of a whole card failed: `deleted` documents are gone, `failed` are not.

    As Google's own recursiveDelete reports it (the number of failed deletes), except
    that the number deleted is kept too, for the erasure's count. Calling again deletes
    what is left.
    """

    def __init__(self, *, deleted: int, failed: int, code: int) -> None:
        super().__init__(
            f"{SYSTEM}: delete card: {deleted} documents deleted, {failed} not "
            f"({_code_name(code)})",
            system=SYSTEM,
        )
        self.deleted = deleted
        self.failed = failed


def _status_error(code: int) -> google_errors.GoogleAPICallError:
    status = _CODES.get(code, grpc.StatusCode.UNKNOWN)
    error: google_errors.GoogleAPICallError = google_errors.from_grpc_status(  # type: ignore[no-untyped-call]
        status, status.name
    )
    return error


def _status_code(exc: BaseException) -> int:
    exc = _as_google_error(exc)
    code = getattr(exc, "grpc_status_code", None)
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    match _classify(exc):
        case _Class.RETRIABLE:
            return int(grpc.StatusCode.UNAVAILABLE.value[0])
        case _Class.AUTH:
            return int(grpc.StatusCode.UNAUTHENTICATED.value[0])
        case _:
            return _UNKNOWN


def _code_name(code: int) -> str:
    return str(_CODES.get(code, grpc.StatusCode.UNKNOWN).name)


# --- writes --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Write:
    """One document write planned from an operation (or a seed record)."""

    index: int
    op_id: str
    action: Literal["create", "update", "delete", "set"]
    doc_id: str
    data: dict[str, Any] | None = None
    precondition: Timestamp | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class _Outcome:
    code: int  # a grpc status code; 0 is success
    update_time: datetime | Timestamp | None = None
    attempts: int = 1


class _CountingBulkWriter(BulkWriter):
    """A BulkWriter whose batch RPCs are counted, bounded and never lost.

    The stock BulkWriter drops a batch whose RPC raises (the exception stays in an
    executor future nobody reads), so no callback ever fires for its writes. Here a
    failed RPC becomes a per-write status, so the error callback sees it and decides.
    One invalid write (a document over 1 MiB, say) fails the whole BatchWrite RPC with
    INVALID_ARGUMENT; the batch is then sent write by write, so only that one fails.
    """

    def __init__(
        self,
        client: firestore.Client,
        options: BulkWriterOptions,
        *,
        on_send: Callable[[], None],
        timeout: float,
        max_workers: int,
    ) -> None:
        self._on_send = on_send
        self._rpc_timeout = timeout
        self._max_workers = max_workers
        super().__init__(client=client, options=options)

    def _instantiate_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix="firestore-bulk"
        )

    def _send(self, batch: BulkWriteBatch) -> BatchWriteResponse:
        try:
            return self._commit(batch)
        except Exception as exc:
            code = _status_code(exc)
            if code == _INVALID_ARGUMENT and 1 < len(batch) == len(batch._write_pbs):
                return self._send_each(batch)
            return _failed_response(len(batch), code, exc)

    def _send_each(self, batch: BulkWriteBatch) -> BatchWriteResponse:
        write_results: list[Any] = []
        statuses: list[Any] = []
        pairs = zip(batch._write_pbs, batch._document_references.values(), strict=True)
        for write_pb, reference in pairs:
            single = BulkWriteBatch(client=self._client)
            single._document_references[reference._document_path] = reference
            single._add_write_pbs([write_pb])
            try:
                response = self._commit(single)
            except Exception as exc:
                response = _failed_response(1, _status_code(exc), exc)
            write_results.extend(response.write_results)
            statuses.extend(response.status)
        return BatchWriteResponse(write_results=write_results, status=statuses)

    def _commit(self, batch: BulkWriteBatch) -> BatchWriteResponse:
        self._on_send()
        return batch.commit(retry=None, timeout=self._rpc_timeout)


def _failed_response(writes: int, code: int, exc: BaseException) -> BatchWriteResponse:
    status = status_pb2.Status(code=code, message=type(exc).__name__)
    return BatchWriteResponse(
        write_results=[WriteResult() for _ in range(writes)], status=[status] * writes
    )


def _rounds(writes: Sequence[_Write]) -> list[list[_Write]]:
    """Consecutive groups with one write per document each.

    A BulkWriter applies writes in no particular order, so two writes to the same
    document go into successive rounds, each with its own BulkWriter.
    """
    rounds: list[list[_Write]] = []
    current: list[_Write] = []
    seen: set[str] = set()
    for write in writes:
        if write.doc_id in seen:
            rounds.append(current)
            current, seen = [], set()
        current.append(write)
        seen.add(write.doc_id)
    if current:
        rounds.append(current)
    return rounds


# --- retention -----------------------------------------------------------------------


def _read_result(snapshots: Iterable[DocumentSnapshot[Any]]) -> ReadResult:
    records: list[ContactRecord] = []
    rejected: list[Rejected] = []
    for snapshot in snapshots:
        item = from_document(snapshot.id, snapshot.to_dict(), snapshot.update_time)
        if isinstance(item, Rejected):
            rejected.append(item)
        else:
            records.append(item)
    return ReadResult(records=tuple(records), rejected=tuple(rejected))


def _timestamp(update_time: datetime | Timestamp) -> datetime:
    """An update time as an aware datetime, nanoseconds kept (queries over all
    descendants give protobuf Timestamps, the others datetimes)."""
    if isinstance(update_time, Timestamp):
        converted: datetime = DatetimeWithNanoseconds.from_timestamp_pb(update_time)  # type: ignore[no-untyped-call]
        return converted
    return update_time


def _top(path: str) -> str:
    """The document of the rule's subcollection a path is at or below: "notes/n1"."""
    return "/".join(path.split("/")[:2])


def _expired(
    binding: FirestoreBinding, found: Sequence[tuple[str, datetime]], cutoff: datetime
) -> list[ItemRef]:
    """Retention refs for one subcollection's documents (paths below the card, at any
    depth, with their update times), as `FirestoreConnector.expired` describes."""
    tops: dict[str, datetime] = {}
    below: dict[str, list[tuple[str, datetime]]] = {}
    for path, changed in found:
        if path.count("/") == 1:
            tops[path] = changed
        else:
            below.setdefault(_top(path), []).append((path, changed))

    def ref(kind: str, path: str, changed: datetime) -> ItemRef:
        return ItemRef(
            system=SYSTEM,
            kind=kind,
            id=path,
            scope=binding.customer_id,
            version=format_version(changed),
        )

    refs: list[ItemRef] = []
    for top in sorted(tops.keys() | below.keys()):
        nested = below.get(top, [])
        if top in tops:
            if tops[top] < cutoff:
                refs.append(ref(DOCUMENT, top, tops[top]))
                refs += [ref(NESTED, path, changed) for path, changed in nested]
        else:
            refs += [ref(ORPHANED, path, changed) for path, changed in nested if changed < cutoff]
    return refs


def _retention_path(binding: FirestoreBinding, ref: ItemRef) -> str | None:
    """The path below the card a retention ref names, or None for a ref that is not
    this customer's retention's to delete (another system, customer, kind or rule)."""
    if ref.system != SYSTEM or ref.scope != binding.customer_id:
        return None
    parts = ref.id.split("/")
    depth = 2 if ref.kind == DOCUMENT else 4 if ref.kind in (NESTED, ORPHANED) else 0
    if not depth or len(parts) < depth or len(parts) % 2 or not all(parts):
        return None
    if ref.kind == DOCUMENT and len(parts) != 2:
        return None
    if parts[0] not in binding.retention_days:
        return None
    return ref.id


# --- the connector -------------------------------------------------------------------


class FirestoreConnector(RetryingConnectorBase):
    """Contacts under `customers/{customer_id}/contacts`, and the card document itself.

    `read` returns every contact; `apply` creates, updates and deletes them with
    `update_time` preconditions (see the module docstring for what makes that safe to
    replay). More than `settings.bulk_threshold` operations go through a BulkWriter.
    """

    system: ClassVar[str] = SYSTEM
    capabilities: frozenset[Capability] = frozenset({Capability.DIRECTORY, Capability.RETENTION})
    fields: frozenset[str] = frozenset(SYNC_FIELDS)

    rpc_timeout: float = 60.0  # per RPC: one write, one page of a query
    # Documents per page of a query; each page is one RunQuery with its own deadline.
    page_size: int = 1000
    # Tries per write inside one BulkWriter for transient errors (1 s, 2 s, 3 s apart).
    bulk_attempts: int = 4
    # A client nobody used for this long is closed; the next call makes a new one. An
    # open gRPC channel keeps gRPC's threads (timer, event engine, lifeguard) waking
    # about 15 times a second, which is most of what an idle daemon would otherwise do
    # between syncs; with its last channel closed gRPC stops them.
    idle_close_seconds: float = 30.0

    def __init__(
        self, settings: FirestoreSettings, *, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__(concurrency=settings.concurrency, retry_policy=retry_policy)
        self.settings = settings
        self.requests = 0  # RPCs sent, for metrics and the no-change benchmark
        self._client: firestore.Client | None = None
        self._client_lock = threading.RLock()  # run() holds it around _client_for_thread
        self._count_lock = threading.Lock()
        self._in_use = 0  # calls running on the client (under _client_lock)
        self._last_used = 0.0  # time.monotonic() when the last one ended
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_loop: asyncio.AbstractEventLoop | None = None  # the timer's loop
        self._closing: set[asyncio.Future[None]] = set()  # idle clients being closed
        self._credentials: Credentials | None = None  # the first client's, for the next

    # --- plumbing ----------------------------------------------------------------

    def _count(self, rpcs: int = 1) -> None:
        with self._count_lock:  # BulkWriter sends from its own threads
            self.requests += rpcs

    def _client_for_thread(self) -> firestore.Client:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> firestore.Client:
        settings = self.settings
        # A client made after an idle one was closed keeps the credentials (and so the
        # access token) of the first, rather than fetching a token anew.
        credentials = self._credentials
        if credentials is None:
            credentials = self._load_credentials()
        client = firestore.Client(
            project=settings.project, database=settings.database, credentials=credentials
        )
        if settings.emulator_host is not None:
            # The library reads the emulator address only from FIRESTORE_EMULATOR_HOST at
            # construction; setting it on this one client keeps the process environment
            # (and every other client) untouched. Read before the first RPC builds the
            # channel; tests/unit/test_firestore_connector.py pins this.
            client._emulator_host = settings.emulator_host
        self._credentials = client._credentials
        return client

    def _load_credentials(self) -> Credentials | None:
        """None: the library finds them (Application Default Credentials)."""
        settings = self.settings
        if settings.emulator_host is not None:
            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        if settings.credentials_file is None:
            return None
        try:
            credentials: Credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(settings.credentials_file), scopes=firestore.Client.SCOPE
            )
        except (OSError, ValueError, KeyError) as exc:
            raise AuthError(
                f"{SYSTEM}: service-account file {settings.credentials_file} cannot be "
                f"used ({type(exc).__name__})",
                system=SYSTEM,
            ) from None
        return credentials

    def _binding(self, customer: Customer) -> FirestoreBinding:
        return customer_binding(customer, SYSTEM, FirestoreBinding)

    def _card(self, client: firestore.Client, binding: FirestoreBinding) -> DocumentReference:
        return client.collection(CUSTOMERS).document(binding.customer_id)

    def _contacts(self, client: firestore.Client, binding: FirestoreBinding) -> CollectionReference:
        contacts: CollectionReference = self._card(client, binding).collection(CONTACTS)
        return contacts

    def _document(
        self, client: firestore.Client, binding: FirestoreBinding, path: str
    ) -> DocumentReference:
        """A document by its path below the card ("notes/n1/comments/c1"; "" is the card)."""
        card = self._card(client, binding)
        if not path:
            return card
        document: DocumentReference = client.document(f"{card.path}/{path}")
        return document

    def _below_card(self, binding: FirestoreBinding, reference: DocumentReference) -> str:
        """A document's path below the card (as `_document` takes it)."""
        prefix = f"{CUSTOMERS}/{binding.customer_id}"
        path: str = reference.path
        if path == prefix:
            return CARD
        assert path.startswith(prefix + "/"), "a query below the card found a document elsewhere"
        return path[len(prefix) + 1 :]

    async def _call(self, what: str, call: Callable[[firestore.Client], T]) -> T:
        """Run `call(client)` in a worker thread with retries; errors translated."""

        def run() -> T:
            with self._client_lock:
                client = self._client_for_thread()
                self._in_use += 1
            try:
                return call(client)
            finally:
                with self._client_lock:
                    self._in_use -= 1
                    self._last_used = time.monotonic()

        async def attempt() -> T:
            try:
                return await asyncio.to_thread(run)
            except ConnectorError:
                raise
            except Exception as exc:
                raise translate_error(exc, what) from None

        try:
            return await self.with_retry(self.settings.scope, attempt)
        finally:
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        """Make sure a timer on this loop closes the client once it has been idle for
        `idle_close_seconds` (one timer, re-armed while calls keep coming)."""
        loop = asyncio.get_running_loop()
        timer = self._idle_timer
        if timer is not None and not timer.cancelled() and self._idle_loop is loop:
            return
        self._idle_loop = loop
        self._idle_timer = loop.call_later(self.idle_close_seconds, self._close_if_idle)

    def _close_if_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle_timer = None
        with self._client_lock:
            client = self._client
            if client is None:
                return
            quiet = time.monotonic() - self._last_used
            if self._in_use or quiet < self.idle_close_seconds:
                wait = self.idle_close_seconds - (0.0 if self._in_use else quiet)
                self._idle_timer = loop.call_later(wait, self._close_if_idle)
                return
            self._client = None
        closing = asyncio.ensure_future(asyncio.to_thread(_close_client, client))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _recursive(
        self, binding: FirestoreBinding, collection: str
    ) -> Callable[[firestore.Client], Query]:
        """A query for every document in a subcollection of the card and below it, at
        any depth, names only (the library's `recursive()`, ordered by name)."""

        def query(client: firestore.Client) -> Query:
            below: Query = (
                self._card(client, binding)
                .collection(collection)
                .recursive()
                .select([FieldPath.document_id()])
            )
            return below

        return query

    async def _scan(
        self, what: str, query: Callable[[firestore.Client], Query]
    ) -> list[DocumentSnapshot[Any]]:
        """Every document `query` (ordered by document name) finds, page by page.

        Each page is one RunQuery of `page_size` documents with its own deadline,
        retried by `with_retry` from the same cursor (start after the last document
        seen), so a transient error costs one page and nothing is read twice.
        """
        found: list[DocumentSnapshot[Any]] = []
        last: DocumentSnapshot[Any] | None = None
        while True:

            def page(client: firestore.Client, after: Any = last) -> list[DocumentSnapshot[Any]]:
                paged = query(client).limit(self.page_size)
                if after is not None:
                    paged = paged.start_after(after)
                self._count()
                return list(paged.stream(retry=_DECLINE, timeout=self.rpc_timeout))

            snapshots = await self._call(what, page)
            found += snapshots
            if len(snapshots) < self.page_size:
                return found
            last = snapshots[-1]

    async def aclose(self) -> None:
        if self._idle_timer is not None and self._idle_loop is asyncio.get_running_loop():
            self._idle_timer.cancel()
            self._idle_timer = None
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(_close_client, client)
        loop = asyncio.get_running_loop()
        mine = [closing for closing in self._closing if closing.get_loop() is loop]
        await asyncio.gather(*mine, return_exceptions=True)

    # --- reading -----------------------------------------------------------------

    async def read(self, customer: Customer) -> ReadResult:
        """Every contact of the card, read page by page (`_scan`)."""
        binding = self._binding(customer)

        def contacts(client: firestore.Client) -> Query:
            query: Query = self._contacts(client, binding).order_by(FieldPath.document_id())
            return query

        snapshots = await self._scan("read contacts", contacts)
        # Decoding and mapping a card's contacts is CPU work (0.2 s for 5,000): in a worker
        # thread, not on the event loop every customer's sync and the API share.
        return await asyncio.to_thread(_read_result, snapshots)

    async def has_card(self, customer: Customer) -> bool:
        """Whether the customer has a card or anything at all below it, at any depth (a
        document below a card document that is gone, or below a subcollection document
        that is gone, counts): one read per subcollection of the card at most."""
        binding = self._binding(customer)

        def probe(client: firestore.Client) -> bool:
            card = self._card(client, binding)
            self._count()
            if card.get(retry=None, timeout=self.rpc_timeout).exists:
                return True
            self._count()
            for collection in card.collections(retry=None, timeout=self.rpc_timeout):
                self._count()
                below = collection.recursive().select([FieldPath.document_id()]).limit(1)
                if any(True for _ in below.stream(retry=_DECLINE, timeout=self.rpc_timeout)):
                    return True
            return False

        return await self._call("look for the card", probe)

    async def _card_documents(self, binding: FirestoreBinding) -> list[str]:
        """Paths below the card of every document there, at any depth ("" for the card
        document itself, when it exists)."""

        def listing(client: firestore.Client) -> tuple[bool, list[str]]:
            card = self._card(client, binding)
            self._count(2)
            exists = bool(card.get(retry=None, timeout=self.rpc_timeout).exists)
            names = [c.id for c in card.collections(retry=None, timeout=self.rpc_timeout)]
            return exists, names

        exists, collections = await self._call("list the card", listing)
        paths = [CARD] if exists else []
        for name in sorted(collections):
            for snapshot in await self._scan("read the card", self._recursive(binding, name)):
                paths.append(self._below_card(binding, snapshot.reference))
        return paths

    async def delete_card(self, customer: Customer) -> int:
        """Delete the card and every document below it, at any depth; returns the
        number of documents deleted (the card document counted when it existed).

        Raises IncompleteDeletion, carrying how many were deleted, when any delete
        failed for good (after the BulkWriter's retries): never a silent partial delete.
        A card that is gone already deletes nothing and returns 0.
        """
        binding = self._binding(customer)
        paths = await self._card_documents(binding)
        writes = [
            _Write(index=index, op_id="", action="delete", doc_id=path)
            for index, path in enumerate(paths)
        ]
        outcomes = await self._bulk(binding, writes, under=CARD) if writes else []
        deleted = sum(1 for outcome in outcomes if outcome.code == _OK)
        failed = [outcome.code for outcome in outcomes if outcome.code != _OK]
        self.log.info("card deleted", customer=customer.id, documents=deleted, failed=len(failed))
        if failed:
            raise IncompleteDeletion(deleted=deleted, failed=len(failed), code=failed[0])
        return deleted

    async def expired(
        self, customer: Customer, now: datetime, *, neighbours: Sequence[Customer] = ()
    ) -> RetentionScan:
        """Documents of the card's subcollections past the binding's retention rules
        (`retention_days`: days since a document last changed, its update_time).

        Each ref carries the document's update time as `version`: `erase` deletes it
        only if it has not changed since. Below an expired document, everything at any
        depth goes with it (kind "nested"); below a document that is gone, each
        document is judged by its own age (kind "orphaned"). A living document keeps
        what is below it. A subcollection that cannot be read fails alone (`failed`,
        by its name); refused credentials are raised. `neighbours` (the other customers)
        do not matter here: a card is one customer's alone.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        binding = self._binding(customer)
        refs: list[ItemRef] = []
        failed: dict[str, Exception] = {}
        for collection, days in sorted(binding.retention_days.items()):
            try:
                snapshots = await self._scan(
                    "look for expired documents", self._recursive(binding, collection)
                )
            except AuthError:
                raise
            except ConnectorError as exc:
                failed[collection] = exc
                continue
            found = [
                (self._below_card(binding, s.reference), _timestamp(s.update_time))
                for s in snapshots
            ]
            refs += _expired(binding, found, now - timedelta(days=days))
        return RetentionScan(refs=tuple(refs), failed=failed)

    async def erase(
        self, customer: Customer, refs: Sequence[ItemRef]
    ) -> list[tuple[ItemRef, OpStatus]]:
        """Delete the documents `refs` name (from `expired`); one status per ref.

        A "document" or "orphaned" ref is deleted only if its update time is still the
        ref's `version` (a precondition); one changed since is kept (CONFLICT), one gone
        already counts as deleted (APPLIED). A "nested" ref goes when the document it is
        below is gone (deleted here or before); below a document that is kept it is kept
        too (CONFLICT). A ref of another system, customer or kind is refused (FAILED),
        never followed, and so is one outside the retention rules. Refs are deleted
        through one BulkWriter, so each lands or fails on its own: a failed batch fails
        its writes only, and what was deleted is reported as deleted.
        """
        binding = self._binding(customer)
        statuses = [OpStatus.FAILED] * len(refs)
        own: list[tuple[int, ItemRef, str]] = []
        for index, ref in enumerate(refs):
            path = _retention_path(binding, ref)
            if path is not None:
                own.append((index, ref, path))

        # Round 1: documents judged by their own age, each conditional on its version.
        first = [
            _Write(
                index=index,
                op_id="",
                action="delete",
                doc_id=path,
                precondition=parse_version(ref.version) if ref.version else None,
            )
            for index, ref, path in own
            if ref.kind in (DOCUMENT, ORPHANED)
        ]
        if first:
            outcomes = await self._bulk(binding, first, under=CARD)
            for write, result in zip(
                first, await self._resolve(binding, first, outcomes, under=CARD), strict=True
            ):
                statuses[write.index] = result.status

        # Round 2: what is below an expired document, once that document is gone.
        nested = [(index, path) for index, ref, path in own if ref.kind == NESTED]
        decided = {path: statuses[index] for index, ref, path in own if ref.kind == DOCUMENT}
        unknown = sorted({_top(path) for _, path in nested} - set(decided))
        if unknown:
            current = await self._get_many(binding, unknown, under=CARD)
            for top in unknown:
                decided[top] = OpStatus.CONFLICT if current[top] is not None else OpStatus.APPLIED
        second: list[_Write] = []
        for index, path in nested:
            parent = decided[_top(path)]
            if parent is OpStatus.APPLIED:
                second.append(_Write(index=index, op_id="", action="delete", doc_id=path))
            else:
                statuses[index] = parent  # kept with its document, or failed with it
        if second:
            outcomes = await self._bulk(binding, second, under=CARD)
            for write, outcome in zip(second, outcomes, strict=True):
                statuses[write.index] = (
                    OpStatus.APPLIED if outcome.code in (_OK, _NOT_FOUND) else OpStatus.FAILED
                )
        return list(zip(refs, statuses, strict=True))

    def residuals(self) -> list[Residual]:
        return [
            Residual(
                system="firestore",
                what="Point-in-time recovery (PITR)",
                retention="up to 7 days, where PITR is enabled on the database",
                note="Deleted documents can be read from earlier versions until then.",
            ),
            Residual(
                system="firestore",
                what="Scheduled backups and exports",
                retention="as long as the backup schedule keeps them (up to 14 weeks)",
                note="Backups taken before the deletion keep the data until they expire.",
            ),
        ]

    async def read_card(self, customer: Customer) -> dict[str, Any] | None:
        """The card document's fields, or None when the customer has no card."""
        binding = self._binding(customer)

        def get(client: firestore.Client) -> dict[str, Any] | None:
            self._count()
            snapshot = self._card(client, binding).get(retry=None, timeout=self.rpc_timeout)
            return snapshot.to_dict() if snapshot.exists else None

        return await self._call("read card", get)

    async def write_card(self, customer: Customer, data: Mapping[str, Any]) -> str:
        """Write the given card fields (name, instructions, domains), keeping the others.

        Returns the card's new version. Raises ValueError for a field that is not a card
        field or has the wrong type.
        """
        binding = self._binding(customer)
        fields = card_fields(data)

        def put(client: firestore.Client) -> str:
            self._count()
            result = self._card(client, binding).set(
                fields, merge=True, retry=None, timeout=self.rpc_timeout
            )
            return format_version(result.update_time)

        return await self._call("write card", put)

    async def _get_many(
        self, binding: FirestoreBinding, doc_ids: Sequence[str], *, under: str = CONTACTS
    ) -> dict[str, tuple[dict[str, Any], datetime] | None]:
        """The current data and update time of each document (contacts by id, or paths
        below the card with `under=CARD`), None where it is gone."""

        def get_all(client: firestore.Client) -> dict[str, tuple[dict[str, Any], datetime] | None]:
            self._count()
            found: dict[str, tuple[dict[str, Any], datetime] | None] = dict.fromkeys(doc_ids)
            references = {
                self._reference(client, binding, under, doc_id).path: doc_id
                for doc_id in dict.fromkeys(doc_ids)
            }
            documents = [client.document(path) for path in references]
            for snapshot in client.get_all(documents, retry=None, timeout=self.rpc_timeout):
                data = snapshot.to_dict()
                if snapshot.exists and data is not None and snapshot.update_time is not None:
                    found[references[snapshot.reference.path]] = (data, snapshot.update_time)
            return found

        return await self._call("read back documents", get_all)

    def _reference(
        self, client: firestore.Client, binding: FirestoreBinding, under: str, doc_id: str
    ) -> DocumentReference:
        """A write's document: a contact by id (`under=CONTACTS`), or a path below the
        card (`under=CARD`)."""
        if under == CARD:
            return self._document(client, binding, doc_id)
        collection = self._card(client, binding).collection(under)
        reference: DocumentReference = collection.document(doc_id)
        return reference

    # --- writing -----------------------------------------------------------------

    async def apply(self, customer: Customer, ops: Sequence[Operation]) -> list[OpResult]:
        binding = self._binding(customer)
        results: list[OpResult | None] = [None] * len(ops)
        writes: list[_Write] = []
        for index, op in enumerate(ops):
            planned = _plan(index, op)
            if isinstance(planned, OpResult):
                results[index] = planned
            else:
                writes.append(planned)
        if len(ops) > self.settings.bulk_threshold:
            for round_ in _rounds(writes):
                round_ = await self._with_phone_extras(binding, round_)
                outcomes = await self._bulk(binding, round_)
                for write, result in zip(
                    round_, await self._resolve(binding, round_, outcomes), strict=True
                ):
                    results[write.index] = result
        else:
            for write in writes:
                (write,) = await self._with_phone_extras(binding, [write])
                outcome = await self._single(binding, write)
                (result,) = await self._resolve(binding, [write], [outcome])
                results[write.index] = result
        assert all(result is not None for result in results)
        return [result for result in results if result is not None]

    async def _with_phone_extras(
        self, binding: FirestoreBinding, writes: Sequence[_Write]
    ) -> list[_Write]:
        """Updates of `phones` made to keep each stored entry's keys that pdsync does not
        manage (`extension`, `label`: the card app's data; mapping.keep_phone_extras).

        The documents are read first (one BatchGet for all); the update is then made
        conditional on the update time read, where it had no precondition of its own,
        so a change in between is a CONFLICT, never overwritten with stale keys.
        """
        wanted = [w for w in writes if w.action == "update" and w.data and "phones" in w.data]
        if not wanted:
            return list(writes)
        current = await self._get_many(binding, [w.doc_id for w in wanted])
        merged: dict[int, _Write] = {}
        for write in wanted:
            stored = current.get(write.doc_id)
            if stored is None or write.data is None:
                continue  # gone: the update reports NOT_FOUND as it is
            data, update_time = stored
            phones = keep_phone_extras(data.get("phones"), write.data["phones"])
            precondition = write.precondition
            if precondition is None:
                precondition = parse_version(format_version(update_time))
            merged[id(write)] = dataclasses.replace(
                write, data={**write.data, "phones": phones}, precondition=precondition
            )
        return [merged.get(id(write), write) for write in writes]

    async def put_contacts(
        self, customer: Customer, records: Sequence[ContactRecord]
    ) -> list[ContactRecord]:
        """Write many contacts at once (seeding, sandbox), overwriting same-id documents.

        A record's `external_id` is its document id; an empty one gets a random id.
        Returns the records as stored, with ids and versions. Raises on any failure.
        """
        binding = self._binding(customer)
        writes = [
            _Write(
                index=index,
                op_id="",
                action="set",
                doc_id=record.external_id or secrets.token_hex(10),
                data=to_document(record),
            )
            for index, record in enumerate(records)
        ]
        stored: list[ContactRecord] = []
        for round_ in _rounds(writes):
            outcomes = await self._bulk(binding, round_)
            failed = [outcome.code for outcome in outcomes if outcome.code != _OK]
            if failed:
                raise translate_error(
                    _status_error(failed[0]), f"put {len(failed)} of {len(round_)} contacts"
                )
            for write, outcome in zip(round_, outcomes, strict=True):
                item = from_document(write.doc_id, write.data, outcome.update_time)
                assert isinstance(item, ContactRecord), "to_document wrote a readable document"
                stored.append(item)
        return stored

    async def _single(self, binding: FirestoreBinding, write: _Write) -> _Outcome:
        """One write as one RPC; transient failures retried, others become the outcome."""

        def send(client: firestore.Client) -> _Outcome:
            reference = self._contacts(client, binding).document(write.doc_id)
            option = (
                client.write_option(last_update_time=write.precondition)
                if write.precondition is not None
                else None
            )
            self._count()
            try:
                if write.action == "create":
                    assert write.data is not None
                    result = reference.create(write.data, retry=None, timeout=self.rpc_timeout)
                    return _Outcome(code=_OK, update_time=result.update_time)
                if write.action == "update":
                    assert write.data is not None
                    result = reference.update(
                        write.data, option=option, retry=None, timeout=self.rpc_timeout
                    )
                    return _Outcome(code=_OK, update_time=result.update_time)
                if write.action == "set":
                    assert write.data is not None
                    result = reference.set(write.data, retry=None, timeout=self.rpc_timeout)
                    return _Outcome(code=_OK, update_time=result.update_time)
                reference.delete(option=option, retry=None, timeout=self.rpc_timeout)
                return _Outcome(code=_OK)
            except Exception as exc:
                if _classify(exc) in (_Class.RETRIABLE, _Class.AUTH):
                    raise  # retried by with_retry, or the whole system is refused
                return _Outcome(code=_status_code(exc))

        return await self._call(f"{write.action} contact", send)

    async def _bulk(
        self, binding: FirestoreBinding, writes: Sequence[_Write], *, under: str = CONTACTS
    ) -> list[_Outcome]:
        """Writes through one new BulkWriter; one outcome per write, in order (`under`:
        as `_reference` takes it).

        Transient per-write failures are retried by the BulkWriter itself (`bulk_attempts`
        tries); everything else is final. Raises RetriableError only when nothing at all
        was written, so that retrying the whole round cannot repeat a write.
        """

        def run(client: firestore.Client) -> list[_Outcome]:
            outcomes: dict[int, _Outcome] = {}
            lock = threading.Lock()
            references = [self._reference(client, binding, under, write.doc_id) for write in writes]
            # Callbacks name the reference object they were given, so identity maps them
            # back to their write even when the BulkWriter retries or reorders.
            position = {id(reference): index for index, reference in enumerate(references)}

            def on_result(reference: Any, result: WriteResult, _: BulkWriter) -> None:
                with lock:
                    outcomes[position[id(reference)]] = _Outcome(
                        code=_OK, update_time=result.update_time
                    )

            def on_error(failure: BulkWriteFailure, _: BulkWriter) -> bool:
                attempts = failure.attempts + 1
                transient = _classify(_status_error(failure.code)) is _Class.RETRIABLE
                if transient and attempts < self.bulk_attempts:
                    return True
                reference = failure.operation.reference  # type: ignore[attr-defined]
                with lock:
                    outcomes[position[id(reference)]] = _Outcome(
                        code=failure.code, attempts=attempts
                    )
                return False

            writer = _CountingBulkWriter(
                client,
                self._bulk_options(),
                on_send=self._count,
                timeout=self.rpc_timeout,
                max_workers=self.settings.concurrency,
            )
            writer.on_write_result(on_result)
            writer.on_write_error(on_error)
            for write, reference in zip(writes, references, strict=True):
                option = (
                    client.write_option(last_update_time=write.precondition)
                    if write.precondition is not None
                    else None
                )
                if write.action == "create":
                    writer.create(reference, write.data or {})
                elif write.action == "update":
                    writer.update(reference, write.data or {}, option=option)
                elif write.action == "set":
                    writer.set(reference, write.data or {})
                else:
                    writer.delete(reference, option=option)
            # flush(), not close(): a closed BulkWriter refuses its own retries
            # ("BulkWriter is closed"), so a retried write would raise instead of being sent.
            writer.flush()  # type: ignore[no-untyped-call]
            result = [outcomes.get(index, _Outcome(code=_UNKNOWN)) for index in range(len(writes))]
            failures = {outcome.code for outcome in result} - {_OK}
            for code in sorted(failures):
                error = _status_error(code)
                if _classify(error) is _Class.AUTH:
                    raise error  # the system refuses us: not a per-write matter
            if len(failures) < len({outcome.code for outcome in result}):
                return result  # something was written: report per write, never redo it
            for code in sorted(failures):
                error = _status_error(code)
                if _classify(error) is _Class.RETRIABLE:
                    raise error  # nothing was written: with_retry may redo the whole round
            return result

        return await self._call(f"bulk write of {len(writes)}", run)

    def _bulk_options(self) -> BulkWriterOptions:
        if self.settings.emulator_host is not None:
            # The emulator has no hot-spotting to protect from: no ramp-up.
            return BulkWriterOptions(
                initial_ops_per_second=100_000,
                max_ops_per_second=100_000,
                retry=BulkRetry.linear,
            )
        # Google's 500/50/5 rule: start at 500 writes/s, +50 % every 5 minutes.
        return BulkWriterOptions(
            initial_ops_per_second=500, max_ops_per_second=10_000, retry=BulkRetry.linear
        )

    async def _resolve(
        self,
        binding: FirestoreBinding,
        writes: Sequence[_Write],
        outcomes: Sequence[_Outcome],
        *,
        under: str = CONTACTS,
    ) -> list[OpResult]:
        """OpResults for finished writes, reading back the documents whose write was
        refused by AlreadyExists or a failed precondition."""
        unsure = [
            write.doc_id
            for write, outcome in zip(writes, outcomes, strict=True)
            if outcome.code in (_ALREADY_EXISTS, _FAILED_PRECONDITION)
        ]
        current = await self._get_many(binding, unsure, under=under) if unsure else {}
        return [
            _result(write, outcome, current.get(write.doc_id))
            for write, outcome in zip(writes, outcomes, strict=True)
        ]


def _close_client(client: firestore.Client) -> None:
    # Client.close() closes only an HTTP session; the gRPC channel belongs to the
    # transport of the lazily made API object.
    api = client._firestore_api_internal
    if api is not None:
        api.transport.close()
    client.close()  # type: ignore[no-untyped-call]


def _plan(index: int, op: Operation) -> _Write | OpResult:
    """The document write for `op`, or its result when no write is needed or possible."""

    def failed(error: str) -> OpResult:
        return OpResult(
            op_id=op.op_id, status=OpStatus.FAILED, external_id=op.external_id, error=error
        )

    if op.system != SYSTEM:
        return failed(f"operation is for {op.system!r}, not {SYSTEM!r}")
    try:
        if op.kind is OpKind.CREATE:
            doc_id = contact_document_id(op.link_id)
            record = ContactRecord(system=SYSTEM, external_id=doc_id).with_values(op.values)
            return _Write(
                index=index,
                op_id=op.op_id,
                action="create",
                doc_id=doc_id,
                data=to_document(record),
            )
        if op.external_id is None:
            return failed(f"{op.kind.value} without external_id")
        doc_id = check_document_id(op.external_id)
        precondition = (
            parse_version(op.expected_version) if op.expected_version is not None else None
        )
        if op.kind is OpKind.DELETE:
            return _Write(
                index=index,
                op_id=op.op_id,
                action="delete",
                doc_id=doc_id,
                precondition=precondition,
            )
        fields = to_fields(op.values)
    except ValueError as exc:
        return failed(str(exc))
    if not fields:
        # Nothing to write; Firestore refuses an empty update anyway.
        return OpResult(
            op_id=op.op_id,
            status=OpStatus.APPLIED,
            external_id=doc_id,
            version=op.expected_version,
        )
    return _Write(
        index=index,
        op_id=op.op_id,
        action="update",
        doc_id=doc_id,
        data=fields,
        precondition=precondition,
    )


def _result(
    write: _Write,
    outcome: _Outcome,
    current: tuple[dict[str, Any], datetime] | None,
) -> OpResult:
    """What happened to one write, given the document as read back where that was needed."""
    op_id, doc_id = write.op_id, write.doc_id

    def result(
        status: OpStatus,
        *,
        version: str | None = None,
        record: ContactRecord | None = None,
        error: str | None = None,
    ) -> OpResult:
        return OpResult(
            op_id=op_id,
            status=status,
            external_id=doc_id,
            version=version,
            record=record,
            error=error,
        )

    def stored() -> tuple[str | None, ContactRecord | None]:
        if current is None:
            return None, None
        data, update_time = current
        item = from_document(doc_id, data, update_time)
        return format_version(update_time), item if isinstance(item, ContactRecord) else None

    code = outcome.code
    if code == _OK:
        version = format_version(outcome.update_time) if outcome.update_time is not None else None
        record = None
        if write.action == "create" and outcome.update_time is not None:
            item = from_document(doc_id, write.data, outcome.update_time)
            record = item if isinstance(item, ContactRecord) else None
        return result(
            OpStatus.APPLIED, version=version if write.action != "delete" else None, record=record
        )
    if code == _ALREADY_EXISTS and write.action == "create":
        # A replay after a crash: the document this link makes is already there.
        if current is None:
            return result(OpStatus.CONFLICT, error="ALREADY_EXISTS, then gone on read-back")
        version, record = stored()
        return result(OpStatus.APPLIED, version=version, record=record)
    if code == _FAILED_PRECONDITION:
        if current is None:
            status = OpStatus.APPLIED if write.action == "delete" else OpStatus.NOT_FOUND
            return result(status)
        version, record = stored()
        if write.action == "update" and write.data is not None and holds(current[0], write.data):
            # The document already holds exactly these values: a replay of this update.
            return result(OpStatus.APPLIED, version=version, record=record)
        return result(
            OpStatus.CONFLICT,
            version=version,
            record=record,
            error="FAILED_PRECONDITION: the document changed since expected_version",
        )
    if code == _NOT_FOUND:
        status = OpStatus.APPLIED if write.action == "delete" else OpStatus.NOT_FOUND
        return result(status)
    if _classify(_status_error(code)) is _Class.RETRIABLE:
        return result(
            OpStatus.FAILED, error=f"{_code_name(code)} after {outcome.attempts} attempts"
        )
    return result(OpStatus.FAILED, error=_code_name(code))
