"""FirestoreConnector without the emulator: settings, planning, error translation, and
real gRPC failures against a loopback port where nothing listens."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from pydantic import ValidationError

from connectors.base import (
    AuthError,
    Capability,
    ConflictError,
    Connector,
    FatalError,
    NotFoundError,
    RetriableError,
    RetryPolicy,
)
from connectors.firestore import (
    FirestoreBinding,
    FirestoreConnector,
    FirestoreSettings,
    contact_document_id,
    translate_error,
)
from connectors.firestore.connector import _plan, _rounds, _Write
from daemon.domain import SYNC_FIELDS, Customer, Operation, OpKind, OpResult, OpStatus

FAST = RetryPolicy(attempts=3, base_wait=0.001, max_wait=0.01, max_delay=5)
VERSION = "2025-03-04T05:06:07.123456789Z"
SECRET_PATH = "projects/p/databases/(default)/documents/customers/c/contacts/kari@nordmann.no"


def customer(customer_id: str = "kunde-1") -> Customer:
    return Customer(
        id=customer_id,
        name="Bær AS",
        bindings={"firestore": FirestoreBinding(customer_id=customer_id)},
    )


def op(kind: OpKind, **fields: Any) -> Operation:
    values: dict[str, Any] = {"op_id": "op-1", "kind": kind, "system": "firestore", "link_id": "L"}
    values.update(fields)
    return Operation(**values)


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- settings --------------------------------------------------------------------------


def test_settings_have_the_documented_defaults_and_forbid_unknown_keys() -> None:
    settings = FirestoreSettings(project="p")

    assert settings.database == "(default)"
    assert settings.emulator_host is None and settings.credentials_file is None
    assert (settings.concurrency, settings.bulk_threshold) == (8, 20)
    assert settings.scope == "p/(default)"
    with pytest.raises(ValidationError, match="extra"):
        FirestoreSettings.model_validate({"project": "p", "projekt": "typo"})
    with pytest.raises(ValidationError, match="HOST:PORT"):
        FirestoreSettings(project="p", emulator_host="localhost")
    with pytest.raises(ValidationError):
        FirestoreSettings(project="p", concurrency=0)


@pytest.mark.parametrize("bad", ["", "a/b", "..", "__id__", " kunde"])
def test_a_binding_needs_a_valid_document_id(bad: str) -> None:
    with pytest.raises(ValidationError):
        FirestoreBinding(customer_id=bad)
    with pytest.raises(ValidationError, match="extra"):
        FirestoreBinding.model_validate({"customer_id": "c", "collection": "x"})


def test_the_connector_declares_its_contract() -> None:
    connector = FirestoreConnector(FirestoreSettings(project="p"))

    assert isinstance(connector, Connector)
    assert connector.system == "firestore"
    assert connector.capabilities == frozenset({Capability.DIRECTORY, Capability.RETENTION})
    assert connector.fields == frozenset(SYNC_FIELDS)
    assert connector.requests == 0


def test_the_emulator_host_from_settings_reaches_the_client_without_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pins the one private attribute the connector sets on google's client.
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    connector = FirestoreConnector(FirestoreSettings(project="p", emulator_host="127.0.0.1:1"))

    client = connector._make_client()

    assert client._target == "127.0.0.1:1"
    assert ("authorization", "Bearer owner") in client._rpc_metadata


def test_a_client_made_after_an_idle_one_was_closed_keeps_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The access token goes with the credentials: a new client does not fetch another.
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    connector = FirestoreConnector(FirestoreSettings(project="p", emulator_host="127.0.0.1:1"))

    first, second = connector._make_client(), connector._make_client()

    assert first is not second and second._credentials is first._credentials
    assert second._target == "127.0.0.1:1"


def test_a_missing_service_account_file_is_an_auth_error_naming_the_file(tmp_path: Any) -> None:
    missing = tmp_path / "sa.json"
    connector = FirestoreConnector(FirestoreSettings(project="p", credentials_file=missing))

    with pytest.raises(AuthError, match=r"sa\.json"):
        connector._make_client()


# --- planning --------------------------------------------------------------------------


def test_a_create_targets_the_document_id_of_its_link() -> None:
    planned = _plan(0, op(OpKind.CREATE, link_id="link-7", values={"given_name": "Åse"}))

    assert isinstance(planned, _Write)
    assert planned.action == "create"
    assert planned.doc_id == contact_document_id("link-7")
    assert planned.data is not None and planned.data["given_name"] == "Åse"
    assert planned.data["phones"] == [] and planned.data["kind"] == "person"


def test_an_update_carries_only_its_fields_and_the_precondition() -> None:
    planned = _plan(
        3,
        op(OpKind.UPDATE, external_id="d1", values={"notes": "x"}, expected_version=VERSION),
    )

    assert isinstance(planned, _Write)
    assert (planned.index, planned.action, planned.doc_id) == (3, "update", "d1")
    assert planned.data == {"notes": "x"}
    assert planned.precondition is not None and planned.precondition.nanos == 123456789


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (op(OpKind.UPDATE, values={"notes": "x"}), "update without external_id"),
        (op(OpKind.DELETE), "delete without external_id"),
        (op(OpKind.UPDATE, external_id="a/b", values={"notes": "x"}), "must not contain '/'"),
        (op(OpKind.UPDATE, external_id="d", values={"colour": "x"}), "colour: not a sync field"),
        (op(OpKind.CREATE, values={"colour": "x"}), "not a sync field: colour"),
        (op(OpKind.DELETE, external_id="d", expected_version="igår"), "not an RFC 3339"),
        (op(OpKind.DELETE, external_id="d", system="zisson"), "for 'zisson'"),
    ],
)
def test_an_operation_that_cannot_be_written_fails_alone(operation: Operation, error: str) -> None:
    planned = _plan(0, operation)

    assert isinstance(planned, OpResult)
    assert planned.status is OpStatus.FAILED
    assert planned.error is not None and error in planned.error


def test_an_empty_update_is_applied_without_a_write() -> None:
    planned = _plan(0, op(OpKind.UPDATE, external_id="d", values={}, expected_version=VERSION))

    assert planned == OpResult(
        op_id="op-1", status=OpStatus.APPLIED, external_id="d", version=VERSION
    )


def test_writes_to_one_document_go_into_successive_rounds() -> None:
    def write(index: int, doc_id: str) -> _Write:
        return _Write(index=index, op_id=str(index), action="delete", doc_id=doc_id)

    writes = [write(0, "a"), write(1, "b"), write(2, "a"), write(3, "c"), write(4, "c")]

    rounds = _rounds(writes)

    assert [[w.index for w in round_] for round_ in rounds] == [[0, 1], [2, 3], [4]]


# --- error translation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (google_errors.ServiceUnavailable(SECRET_PATH), RetriableError),
        (google_errors.DeadlineExceeded(SECRET_PATH), RetriableError),
        (google_errors.ResourceExhausted(SECRET_PATH), RetriableError),
        (google_errors.Aborted(SECRET_PATH), RetriableError),
        (google_errors.InternalServerError(SECRET_PATH), RetriableError),
        (google_errors.Unknown(SECRET_PATH), RetriableError),
        (google_errors.RetryError(SECRET_PATH, None), RetriableError),
        (auth_errors.TransportError(SECRET_PATH), RetriableError),
        (google_errors.Unauthenticated(SECRET_PATH), AuthError),
        (google_errors.PermissionDenied(SECRET_PATH), AuthError),
        (auth_errors.DefaultCredentialsError(SECRET_PATH), AuthError),
        (auth_errors.RefreshError(SECRET_PATH), AuthError),
        (google_errors.NotFound(SECRET_PATH), NotFoundError),
        (google_errors.FailedPrecondition(SECRET_PATH), ConflictError),
        (google_errors.AlreadyExists(SECRET_PATH), ConflictError),
        (google_errors.InvalidArgument(SECRET_PATH), FatalError),
        (ValueError(SECRET_PATH), FatalError),
    ],
)
def test_vendor_errors_are_translated_without_their_messages(
    error: Exception, expected: type[Exception]
) -> None:
    translated = translate_error(error, "read contacts")

    assert type(translated) is expected
    assert translated.system == "firestore"
    assert str(translated).startswith("firestore: read contacts failed: ")
    assert type(error).__name__ in str(translated)
    assert "nordmann" not in str(translated) and "customers" not in str(translated)


def test_an_unwrapped_grpc_error_is_translated_by_its_status_code() -> None:
    class StreamError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return SECRET_PATH

        def trailing_metadata(self) -> tuple[()]:
            return ()

    translated = translate_error(StreamError(), "read contacts")

    assert isinstance(translated, RetriableError)
    assert "UNAVAILABLE" in str(translated) and "nordmann" not in str(translated)


def test_retry_after_comes_from_google_retry_info() -> None:
    info = RetryInfo(retry_delay=Duration(seconds=7, nanos=500_000_000))
    error = google_errors.ResourceExhausted("quota", details=[info])

    translated = translate_error(error, "bulk write")

    assert isinstance(translated, RetriableError)
    assert translated.retry_after == 7.5


async def test_transient_errors_are_retried_and_then_raised_translated() -> None:
    connector = FirestoreConnector(FirestoreSettings(project="p"), retry_policy=FAST)
    connector._client = object()  # type: ignore[assignment]  # never touched by the call
    calls = 0

    def failing(client: Any) -> None:
        nonlocal calls
        calls += 1
        raise google_errors.ServiceUnavailable(SECRET_PATH)

    with pytest.raises(RetriableError) as caught:
        await connector._call("read contacts", failing)

    assert calls == 3 and connector.retries == 2
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_auth_errors_are_not_retried() -> None:
    connector = FirestoreConnector(FirestoreSettings(project="p"), retry_policy=FAST)
    connector._client = object()  # type: ignore[assignment]
    calls = 0

    def refused(client: Any) -> None:
        nonlocal calls
        calls += 1
        raise google_errors.PermissionDenied(SECRET_PATH)

    with pytest.raises(AuthError):
        await connector._call("read contacts", refused)
    assert calls == 1


async def test_a_customer_without_a_binding_is_a_fatal_error() -> None:
    connector = FirestoreConnector(FirestoreSettings(project="p"))

    with pytest.raises(FatalError, match="has no binding for 'firestore'"):
        await connector.read(Customer(id="c", name="X"))


# --- real gRPC against a port where nothing listens ------------------------------------


@pytest.fixture
async def unreachable() -> Any:
    settings = FirestoreSettings(project="p", emulator_host=f"127.0.0.1:{dead_port()}")
    connector = FirestoreConnector(settings, retry_policy=FAST)
    connector.bulk_attempts = 1  # no BulkWriter back-off in a unit test
    yield connector
    await connector.aclose()


async def test_an_unreachable_database_fails_a_read_as_retriable(
    unreachable: FirestoreConnector,
) -> None:
    with pytest.raises(RetriableError, match="read contacts"):
        await unreachable.read(customer())

    assert unreachable.requests == 3 and unreachable.retries == 2


async def test_an_unreachable_database_fails_single_writes_as_retriable(
    unreachable: FirestoreConnector,
) -> None:
    with pytest.raises(RetriableError, match="create contact"):
        await unreachable.apply(customer(), [op(OpKind.CREATE, values={"given_name": "Åse"})])


async def test_an_unreachable_database_fails_a_bulk_write_that_wrote_nothing_as_retriable(
    unreachable: FirestoreConnector,
) -> None:
    ops = [
        op(OpKind.CREATE, op_id=f"op-{n}", link_id=f"L{n}", values={"given_name": "Åse"})
        for n in range(25)
    ]

    with pytest.raises(RetriableError, match="bulk write of 25"):
        await unreachable.apply(customer(), ops)

    assert unreachable.requests == 3 * 2  # two batches of at most 20, three attempts


async def test_a_binding_given_as_a_mapping_is_validated() -> None:
    connector = FirestoreConnector(FirestoreSettings(project="p"))
    bad = Customer(id="c", name="X", bindings={"firestore": {"customer_id": "a/b"}})

    with pytest.raises(FatalError, match=r"binding of customer 'c' is invalid: customer_id"):
        await connector.read(bad)
    assert connector._binding(
        Customer(id="c", name="X", bindings={"firestore": {"customer_id": "c"}})
    ) == FirestoreBinding(customer_id="c")


async def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_client_nobody_uses_is_closed_and_the_next_call_opens_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An open gRPC channel keeps gRPC's threads waking ~15 times a second: an idle
    # daemon closes it between syncs.
    connector = FirestoreConnector(FirestoreSettings(project="p"), retry_policy=FAST)
    connector.idle_close_seconds = 0.1
    made: list[object] = []
    closed: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    monkeypatch.setattr(connector, "_make_client", make)
    monkeypatch.setattr("connectors.firestore.connector._close_client", closed.append)

    async def call() -> object:
        return await connector._call("read contacts", lambda client: client)

    assert await call() is made[0]
    await wait_for(lambda: bool(closed))
    assert closed == [made[0]] and connector._client is None
    assert await call() is made[1]
    await connector.aclose()
    assert closed == [made[0], made[1]]


async def test_a_client_in_use_or_used_lately_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    connector = FirestoreConnector(FirestoreSettings(project="p"), retry_policy=FAST)
    connector.idle_close_seconds = 0.05
    client = object()
    closed: list[object] = []
    monkeypatch.setattr(connector, "_make_client", lambda: client)
    monkeypatch.setattr("connectors.firestore.connector._close_client", closed.append)
    await connector._call("read card", lambda c: c)  # arms the idle timer

    def slow(c: object) -> object:
        time.sleep(0.3)  # the timer fires meanwhile, and finds the client in use
        assert closed == []
        return c

    assert await connector._call("read contacts", slow) is client
    # Used a moment ago (a long idle time): the timer looks again later.
    connector.idle_close_seconds = 60.0
    connector._close_if_idle()
    assert closed == [] and connector._idle_timer is not None
    connector._last_used -= 61  # as if a minute had passed
    connector._close_if_idle()
    await wait_for(lambda: bool(closed))
    assert closed == [client] and connector._client is None
    await connector.aclose()
    assert closed == [client]
