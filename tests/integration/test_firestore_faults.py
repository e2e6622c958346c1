"""Transient failures injected where the Firestore client library meets the network: a
gRPC interceptor on the channel the library builds (the emulator cannot fail on cue).

`GrpcFaults` is installed on a connector's client before its first RPC
(`install(connector, faults)`); it then fails RunQuery streams part-way, fails unary
calls (BatchWrite, Commit, ...) outright, or runs a hook before a call, as scripted.
pdsync's own code is not touched: what the connector sees is what a dropped stream or a
refused batch looks like from Google's library.

The test here checks the injector itself against the emulator.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as google_errors
from google.api_core.retry import Retry
from google.cloud import firestore

from connectors.firestore import FirestoreConnector

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def method_name(details: grpc.ClientCallDetails) -> str:
    """ "RunQuery" for "/google.firestore.v1.Firestore/RunQuery"."""
    method = details.method
    text = method.decode() if isinstance(method, bytes) else str(method)
    return text.rpartition("/")[2]


class InjectedError(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A failed call as grpc reports one: an RpcError that is also its Call (and, for
    a unary call, its Future), so google.api_core maps it by status code."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__()
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "injected by the test"

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> BaseException:
        return self

    def traceback(self, timeout: float | None = None) -> None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


class _BrokenStream(grpc.Call, Iterator[Any]):  # type: ignore[misc]
    """A server stream that breaks after `after` responses."""

    def __init__(self, inner: Any, after: int, code: grpc.StatusCode) -> None:
        self._inner = inner
        self._left = after
        self._code = code

    def __iter__(self) -> _BrokenStream:
        return self

    def __next__(self) -> Any:
        if self._left <= 0:
            self._inner.cancel()
            raise InjectedError(self._code)
        self._left -= 1
        return next(self._inner)

    def code(self) -> Any:
        return self._inner.code()

    def details(self) -> Any:
        return self._inner.details()

    def initial_metadata(self) -> Any:
        return self._inner.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._inner.trailing_metadata()

    def is_active(self) -> Any:
        return self._inner.is_active()

    def time_remaining(self) -> Any:
        return self._inner.time_remaining()

    def cancel(self) -> Any:
        return self._inner.cancel()

    def add_callback(self, callback: Callable[[], None]) -> Any:
        return self._inner.add_callback(callback)


@dataclass
class _Plan:
    skip: int  # calls let through first
    times: int  # then this many fail
    after: int = 0  # streams: responses given before the break
    code: grpc.StatusCode = UNAVAILABLE


class GrpcFaults(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Scripted failures per RPC method name ("RunQuery", "BatchWrite", ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, list[_Plan]] = {}
        self._hooks: dict[str, list[Callable[[], None]]] = {}
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def fail(
        self,
        method: str,
        *,
        times: int = 1,
        skip: int = 0,
        after: int = 0,
        code: grpc.StatusCode = UNAVAILABLE,
    ) -> None:
        """After `skip` more calls of `method`, fail the next `times`: a stream after
        giving `after` responses, a unary call outright."""
        with self._lock:
            self._plans.setdefault(method, []).append(
                _Plan(skip=skip, times=times, after=after, code=code)
            )

    def before(self, method: str, hook: Callable[[], None]) -> None:
        """Run `hook` once, right before the next call of `method` is sent."""
        with self._lock:
            self._hooks.setdefault(method, []).append(hook)

    def _next(self, method: str) -> _Plan | None:
        with self._lock:
            self.calls[method] += 1
            for plan in self._plans.get(method, []):
                if plan.skip > 0:
                    plan.skip -= 1
                    return None
                if plan.times > 0:
                    plan.times -= 1
                    self.injected[method] += 1
                    return plan
            return None

    def _run_hooks(self, method: str) -> None:
        with self._lock:
            hooks = self._hooks.pop(method, [])
        for hook in hooks:
            hook()

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        method = method_name(details)
        self._run_hooks(method)
        plan = self._next(method)
        if plan is not None:
            return InjectedError(plan.code)
        return continuation(details, request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        method = method_name(details)
        self._run_hooks(method)
        plan = self._next(method)
        stream = continuation(details, request)
        if plan is None:
            return stream
        return _BrokenStream(stream, plan.after, plan.code)


def install(connector: FirestoreConnector, faults: GrpcFaults) -> None:
    """Put `faults` on the channel the connector's client will use (before its first RPC)."""
    client = connector._client_for_thread()
    assert client._firestore_api_internal is None, "install before the first RPC"
    make_channel = client._emulator_channel

    def channel(transport: Any) -> grpc.Channel:
        return grpc.intercept_channel(make_channel(transport), faults)

    client._emulator_channel = channel  # type: ignore[method-assign]


@pytest.fixture
def faults(firestore_connector: FirestoreConnector) -> GrpcFaults:
    injector = GrpcFaults()
    install(firestore_connector, injector)
    return injector


async def test_the_injector_breaks_streams_and_calls_as_google_s_library_sees_them(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    faults: GrpcFaults,
) -> None:
    notes = firestore_client.collection("customers").document("kunde-1").collection("notes")
    for n in range(5):
        notes.document(f"n{n}").set({"n": n})
    client = firestore_connector._client_for_thread()
    faults.fail("RunQuery", after=2)
    faults.fail("Commit", skip=1)

    mine = client.collection("customers").document("kunde-1").collection("notes")
    # (With retry=None the library itself fails on a broken stream, with AttributeError:
    # a retry that declines is what shows the injected error as it is.)
    stream = mine.stream(retry=Retry(predicate=lambda exc: False))
    assert [next(stream).id, next(stream).id] == ["n0", "n1"]
    with pytest.raises(google_errors.ServiceUnavailable):
        next(stream)
    assert [s.id for s in mine.stream(retry=None)] == [f"n{n}" for n in range(5)]
    mine.document("x").set({"x": 1}, retry=None)  # let through
    with pytest.raises(google_errors.ServiceUnavailable):
        mine.document("y").set({"y": 1}, retry=None)
    assert faults.injected == Counter({"RunQuery": 1, "Commit": 1})
