"""Zisson under injected faults: 5xx, 429 with Retry-After, dropped connections, latency."""

from __future__ import annotations

import time

import pytest

from connectors.base import RetriableError, RetryPolicy
from connectors.zisson import ZissonConnector, ZissonSettings
from daemon.domain import Operation, OpKind, OpStatus
from tests.fixtures.zisson import ZissonBound, ZissonConnect


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_reads_and_writes_get_through_a_flaky_zisson(
    zisson_connect: ZissonConnect, api: str
) -> None:
    bound = zisson_connect(api)  # type: ignore[arg-type]
    ids = [bound.seed({"firstName": f"Åse {n}", "emails": [f"ase{n}@ø.no"]}) for n in range(500)]
    bound.sim.set_faults(
        error_rate=0.1, rate_429=0.1, drop_rate=0.05, latency_ms=2, retry_after=0, seed=7
    )
    ops = (
        [
            Operation(
                op_id=f"create-{n}",
                kind=OpKind.CREATE,
                system="zisson",
                link_id=f"new-{n}",
                values={"given_name": f"Ny {n}", "family_name": "Ærlig"},
            )
            for n in range(30)
        ]
        + [
            Operation(
                op_id=f"update-{n}",
                kind=OpKind.UPDATE,
                system="zisson",
                link_id=f"old-{n}",
                external_id=ids[n],
                values={"title": "Oppdatert"},
            )
            for n in range(10)
        ]
        + [
            Operation(
                op_id=f"delete-{n}",
                kind=OpKind.DELETE,
                system="zisson",
                link_id=f"gone-{n}",
                external_id=ids[-1 - n],
            )
            for n in range(10)
        ]
    )

    read = await bound.connector.read(bound.customer)
    results = await bound.connector.apply(bound.customer, ops)
    read_after = await bound.connector.read(bound.customer)

    assert [r.external_id for r in read.records] == ids
    assert [r.status for r in results] == [OpStatus.APPLIED] * 50
    assert len(read_after.records) == 500 + 30 - 10
    assert sum(r.title == "Oppdatert" for r in read_after.records) == 10
    users = bound.users()
    assert len({u["id"] for u in users}) == len(users) == 520  # no duplicate creates
    counters = bound.sim.counters
    assert counters["creates"] == 30 and counters["deletes"] == 10
    assert counters["429"] > 0 and counters["5xx"] > 0 and counters["drops"] > 0
    # Every injected fault cost exactly one retry, and none went unnoticed.
    assert bound.connector.retries == counters["429"] + counters["5xx"] + counters["drops"]


async def test_a_429_is_honoured_for_at_least_its_retry_after(zisson_json: ZissonBound) -> None:
    bound = zisson_json
    bound.seed({"firstName": "Åse"})
    await bound.connector.read(bound.customer)  # the token exchange is done
    bound.sim.fail_next(1, status=429, retry_after=1)

    started = time.monotonic()
    result = await bound.connector.read(bound.customer)
    waited = time.monotonic() - started

    assert len(result.records) == 1
    assert waited >= 1.0
    assert bound.sim.counters["429"] == 1 and bound.connector.retries == 1


async def test_persistent_failure_raises_retriable_error_after_the_policy(
    zisson_connect: ZissonConnect,
) -> None:
    bound = zisson_connect(
        "xml", retry_policy=RetryPolicy(attempts=3, base_wait=0.001, max_wait=0.01)
    )
    bound.sim.set_faults(error_rate=1.0)

    with pytest.raises(RetriableError, match="HTTP 5"):
        await bound.connector.read(bound.customer)

    assert bound.sim.counters["GET /api/simple/GetContacts"] == 3


async def test_dropped_connections_surface_as_retriable_error_not_httpx(
    zisson_connect: ZissonConnect,
) -> None:
    bound = zisson_connect("json", retry_policy=RetryPolicy(attempts=2, base_wait=0.001))
    bound.sim.set_faults(drop_rate=1.0)

    with pytest.raises(RetriableError, match="transport"):
        await bound.connector.read(bound.customer)


async def test_timeouts_surface_as_retriable_error(zisson_connect: ZissonConnect) -> None:
    bound = zisson_connect("xml")
    connector = ZissonConnector(
        ZissonSettings(base_url=bound.sim.url, timeout_seconds=0.05),
        retry_policy=RetryPolicy(attempts=2, base_wait=0.001),
    )
    bound.sim.set_faults(latency_ms=300)
    try:
        with pytest.raises(RetriableError, match="timed out"):
            await connector.read(bound.customer)
    finally:
        await connector.aclose()
