"""FirestoreConnector: the customer cards and their contacts in Google Cloud Firestore.

The sync `google.cloud.firestore.Client` is used, run in worker threads with
`asyncio.to_thread`: BulkWriter exists only on the sync client, and one client object
then serves every event loop the daemon or a test may use.

Every RPC is sent with the client library's own retries switched off (`retry=None`), so
retries happen in one place (`with_retry`: counted, logged, limited per database) and
`requests` counts what really went over the wire. Writes are safe to retry: CREATE
targets a document id derived from the link, and a write whose precondition fails is
read back to tell "already done" from "changed by someone else".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

import grpc
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import firestore
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch
from google.cloud.firestore_v1.bulk_writer import (
    BulkRetry,
    BulkWriteFailure,
    BulkWriter,
    BulkWriterOptions,
)
from google.cloud.firestore_v1.collection import CollectionReference
from google.cloud.firestore_v1.document import DocumentReference
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
)

T = TypeVar("T")

CUSTOMERS = "customers"
CONTACTS = "contacts"

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

    rpc_timeout: float = 60.0
    # Tries per write inside one BulkWriter for transient errors (1 s, 2 s, 3 s apart).
    bulk_attempts: int = 4

    def __init__(
        self, settings: FirestoreSettings, *, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__(concurrency=settings.concurrency, retry_policy=retry_policy)
        self.settings = settings
        self.requests = 0  # RPCs sent, for metrics and the no-change benchmark
        self._client: firestore.Client | None = None
        self._client_lock = threading.Lock()
        self._count_lock = threading.Lock()

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
        credentials: Credentials | None = None
        if settings.emulator_host is not None:
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        elif settings.credentials_file is not None:
            try:
                credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    str(settings.credentials_file), scopes=firestore.Client.SCOPE
                )
            except (OSError, ValueError, KeyError) as exc:
                raise AuthError(
                    f"{SYSTEM}: service-account file {settings.credentials_file} cannot be "
                    f"used ({type(exc).__name__})",
                    system=SYSTEM,
                ) from None
        client = firestore.Client(
            project=settings.project, database=settings.database, credentials=credentials
        )
        if settings.emulator_host is not None:
            # The library reads the emulator address only from FIRESTORE_EMULATOR_HOST at
            # construction; setting it on this one client keeps the process environment
            # (and every other client) untouched. Read before the first RPC builds the
            # channel; tests/unit/test_firestore_connector.py pins this.
            client._emulator_host = settings.emulator_host
        return client

    def _binding(self, customer: Customer) -> FirestoreBinding:
        return customer_binding(customer, SYSTEM, FirestoreBinding)

    def _card(self, client: firestore.Client, binding: FirestoreBinding) -> DocumentReference:
        return client.collection(CUSTOMERS).document(binding.customer_id)

    def _contacts(self, client: firestore.Client, binding: FirestoreBinding) -> CollectionReference:
        contacts: CollectionReference = self._card(client, binding).collection(CONTACTS)
        return contacts

    async def _call(self, what: str, call: Callable[[firestore.Client], T]) -> T:
        """Run `call(client)` in a worker thread with retries; errors translated."""

        def run() -> T:
            return call(self._client_for_thread())

        async def attempt() -> T:
            try:
                return await asyncio.to_thread(run)
            except ConnectorError:
                raise
            except Exception as exc:
                raise translate_error(exc, what) from None

        return await self.with_retry(self.settings.scope, attempt)

    async def aclose(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(_close_client, client)

    # --- reading -----------------------------------------------------------------

    async def read(self, customer: Customer) -> ReadResult:
        binding = self._binding(customer)

        def read_all(client: firestore.Client) -> ReadResult:
            self._count()
            records: list[ContactRecord] = []
            rejected: list[Rejected] = []
            stream = self._contacts(client, binding).stream(retry=None, timeout=self.rpc_timeout)
            for snapshot in stream:
                item = from_document(snapshot.id, snapshot.to_dict(), snapshot.update_time)
                if isinstance(item, Rejected):
                    rejected.append(item)
                else:
                    records.append(item)
            return ReadResult(records=tuple(records), rejected=tuple(rejected))

        return await self._call("read contacts", read_all)

    async def has_card(self, customer: Customer) -> bool:
        """Whether the customer has a card or anything below it: one read per
        subcollection at most, however many documents there are."""
        binding = self._binding(customer)

        def probe(client: firestore.Client) -> bool:
            card = self._card(client, binding)
            self._count()
            if card.get(retry=None, timeout=self.rpc_timeout).exists:
                return True
            for collection in card.collections():
                self._count(2)
                if any(True for _ in collection.limit(1).stream()):
                    return True
            return False

        return await self._call("look for the card", probe)

    async def delete_card(self, customer: Customer) -> int:
        """Delete the card and every subcollection below it (Firestore does not delete
        subcollections with their parent); returns the number of documents deleted."""
        binding = self._binding(customer)

        def delete(client: firestore.Client) -> int:
            card = self._card(client, binding)
            self._count()
            deleted = client.recursive_delete(card)
            self._count()
            card.delete(retry=None, timeout=self.rpc_timeout)  # a card with no fields left
            return int(deleted)

        return await self._call("delete card", delete)

    async def expired(self, customer: Customer, now: datetime) -> list[ItemRef]:
        """Documents of the card's subcollections past the binding's retention rules
        (`retention_days`: days since a document last changed, its update_time)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        binding = self._binding(customer)
        if not binding.retention_days:
            return []

        def scan(client: firestore.Client) -> list[ItemRef]:
            found: list[ItemRef] = []
            for collection, days in sorted(binding.retention_days.items()):
                cutoff = now - timedelta(days=days)
                self._count()
                for snapshot in (
                    self._card(client, binding)
                    .collection(collection)
                    .stream(retry=None, timeout=self.rpc_timeout)
                ):
                    if snapshot.update_time is not None and snapshot.update_time < cutoff:
                        found.append(
                            ItemRef(
                                system=SYSTEM,
                                kind="document",
                                id=f"{collection}/{snapshot.id}",
                                scope=binding.customer_id,
                            )
                        )
            return found

        return await self._call("look for expired documents", scan)

    async def erase(
        self, customer: Customer, refs: Sequence[ItemRef]
    ) -> list[tuple[ItemRef, OpStatus]]:
        """Delete the documents `refs` name (from `expired`); a document already gone
        counts as deleted. A ref of another system, customer or kind is refused
        (FAILED), never followed, and so is one outside the retention rules."""
        binding = self._binding(customer)
        statuses = [OpStatus.FAILED] * len(refs)
        wanted: list[tuple[int, str, str]] = []
        for index, ref in enumerate(refs):
            collection, _, document = ref.id.partition("/")
            if (
                ref.system == SYSTEM
                and ref.kind == "document"
                and ref.scope == binding.customer_id
                and collection in binding.retention_days
                and document
                and "/" not in document
            ):
                wanted.append((index, collection, document))

        def delete(client: firestore.Client) -> list[int]:
            card = self._card(client, binding)
            done: list[int] = []
            for start in range(0, len(wanted), 500):  # a batch holds at most 500 writes
                chunk = wanted[start : start + 500]
                batch = client.batch()
                for _, collection, document in chunk:
                    batch.delete(card.collection(collection).document(document))
                self._count()
                batch.commit(retry=None, timeout=self.rpc_timeout)
                done += [index for index, _, _ in chunk]
            return done

        for index in await self._call("delete expired documents", delete):
            statuses[index] = OpStatus.APPLIED
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
        self, binding: FirestoreBinding, doc_ids: Sequence[str]
    ) -> dict[str, tuple[dict[str, Any], datetime] | None]:
        """The current data and update time of each contact, None where it is gone."""

        def get_all(client: firestore.Client) -> dict[str, tuple[dict[str, Any], datetime] | None]:
            self._count()
            contacts = self._contacts(client, binding)
            found: dict[str, tuple[dict[str, Any], datetime] | None] = dict.fromkeys(doc_ids)
            references = [contacts.document(doc_id) for doc_id in dict.fromkeys(doc_ids)]
            for snapshot in client.get_all(references, retry=None, timeout=self.rpc_timeout):
                data = snapshot.to_dict()
                if snapshot.exists and data is not None and snapshot.update_time is not None:
                    found[snapshot.id] = (data, snapshot.update_time)
            return found

        return await self._call("read back contacts", get_all)

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
                outcomes = await self._bulk(binding, round_)
                for write, result in zip(
                    round_, await self._resolve(binding, round_, outcomes), strict=True
                ):
                    results[write.index] = result
        else:
            for write in writes:
                outcome = await self._single(binding, write)
                (result,) = await self._resolve(binding, [write], [outcome])
                results[write.index] = result
        assert all(result is not None for result in results)
        return [result for result in results if result is not None]

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

    async def _bulk(self, binding: FirestoreBinding, writes: Sequence[_Write]) -> list[_Outcome]:
        """Writes through one new BulkWriter; one outcome per write, in order.

        Transient per-write failures are retried by the BulkWriter itself (`bulk_attempts`
        tries); everything else is final. Raises RetriableError only when nothing at all
        was written, so that retrying the whole round cannot repeat a write.
        """

        def run(client: firestore.Client) -> list[_Outcome]:
            outcomes: dict[int, _Outcome] = {}
            lock = threading.Lock()
            contacts = self._contacts(client, binding)
            references = [contacts.document(write.doc_id) for write in writes]
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
        self, binding: FirestoreBinding, writes: Sequence[_Write], outcomes: Sequence[_Outcome]
    ) -> list[OpResult]:
        """OpResults for finished writes, reading back the documents whose write was
        refused by AlreadyExists or a failed precondition."""
        unsure = [
            write.doc_id
            for write, outcome in zip(writes, outcomes, strict=True)
            if outcome.code in (_ALREADY_EXISTS, _FAILED_PRECONDITION)
        ]
        current = await self._get_many(binding, unsure) if unsure else {}
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
