"""A Zisson write counts as applied only when Zisson shows it (httpx.MockTransport plays
answers the simulator never gives: a terse answer, a version that did not move)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import RetryPolicy
from connectors.zisson import ZissonBinding, ZissonConnector, ZissonSettings
from daemon.domain import Customer, Operation, OpKind, OpResult, OpStatus

USERS = "/external-api/v1/entities/users"
STORED: dict[str, Any] = {
    "id": "u-1",
    "type": "user",
    "firstName": "Kari",
    "lastName": "Ødegård",
    "title": "Sjef",
    "emails": ["kari@fjord.no"],
    "phoneNumbers": [],
    "comments": "",
    "version": 2,
}

Answer = Callable[[httpx.Request], httpx.Response]


async def apply_one(
    tmp_path: Path, write: Answer, op: Operation, stored: dict[str, Any] = STORED
) -> tuple[OpResult, list[str]]:
    """Apply `op` against a Zisson whose writes `write` answers; GET shows `stored`."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/refresh-token"):
            return httpx.Response(200, json={"jwt": "a.b.c", "refreshToken": "rt-2"})
        if request.method == "GET":
            return httpx.Response(200, json=stored)
        return write(request)

    token = tmp_path / "token"
    token.write_text("rt-1")
    token.chmod(0o600)
    binding = ZissonBinding(api="json", user_id="i", customer_guid="g", refresh_token_file=token)
    connector = ZissonConnector(
        ZissonSettings(base_url="http://zisson.test", write_mode="api"),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(attempts=1),
    )
    try:
        customer = Customer(id="k", name="K", bindings={"zisson": binding})
        (result,) = await connector.apply(customer, [op])
    finally:
        await connector.aclose()
    return result, [s for s in seen if "refresh-token" not in s]


def update(**values: Any) -> Operation:
    return Operation(
        op_id="op-1",
        kind=OpKind.UPDATE,
        system="zisson",
        link_id="l",
        external_id="u-1",
        values=values,
        expected_version="1",
    )


async def test_a_terse_answer_is_checked_by_a_read_back(tmp_path: Path) -> None:
    result, seen = await apply_one(
        tmp_path,
        lambda _: httpx.Response(200, json={"id": "u-1", "version": 2}),
        update(title="Sjef"),
    )

    assert result.status is OpStatus.APPLIED and result.version == "2"
    assert result.record is not None and result.record.title == "Sjef"
    assert seen == [f"PATCH {USERS}/u-1", f"GET {USERS}/u-1"]


async def test_an_answer_whose_version_did_not_move_is_read_back(tmp_path: Path) -> None:
    def same_version(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**STORED, "version": 1})

    result, seen = await apply_one(tmp_path, same_version, update(title="Sjef"))

    # The read-back shows version 2 > 1 with the title: shown after all.
    assert result.status is OpStatus.APPLIED and result.version == "2"
    assert seen[-1] == f"GET {USERS}/u-1"


async def test_a_change_whose_version_never_moves_is_not_applied(tmp_path: Path) -> None:
    def same_version(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**STORED, "version": 1})

    result, _ = await apply_one(
        tmp_path, same_version, update(title="Sjef"), stored={**STORED, "version": 1}
    )

    assert result.status is OpStatus.CONFLICT
    assert result.error is not None and result.error.endswith("the intended version (not newer)")


async def test_neither_answer_nor_read_back_showing_the_change_is_a_conflict(
    tmp_path: Path,
) -> None:
    def stale(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={**STORED, "version": 1}, headers={"Idempotent-Replayed": "true"}
        )

    result, seen = await apply_one(tmp_path, stale, update(title="Direktør", notes="x"))

    assert result.status is OpStatus.CONFLICT
    assert result.error is not None
    assert "title" in result.error and "notes" in result.error and "replayed" in result.error
    assert "Direktør" not in result.error
    assert seen[-1] == f"GET {USERS}/u-1"


async def test_a_replayed_create_of_another_user_is_not_read_back(tmp_path: Path) -> None:
    def replay(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["firstName"] == "Per"
        return httpx.Response(201, json=STORED, headers={"Idempotent-Replayed": "true"})

    create = Operation(
        op_id="op-2", kind=OpKind.CREATE, system="zisson", link_id="l", values={"given_name": "Per"}
    )
    result, seen = await apply_one(tmp_path, replay, create)

    assert result.status is OpStatus.CONFLICT and result.external_id is None
    assert seen == [f"POST {USERS}"]


@pytest.mark.parametrize("replayed", ["true", "TRUE", " true "])
async def test_a_replay_showing_this_create_is_applied(tmp_path: Path, replayed: str) -> None:
    def replay(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json=STORED, headers={"Idempotent-Replayed": replayed})

    values = {"given_name": "Kari", "family_name": "Ødegård", "title": "Sjef"}
    create = Operation(
        op_id="op-3",
        kind=OpKind.CREATE,
        system="zisson",
        link_id="l",
        values={**values, "emails": ["kari@fjord.no"]},
    )
    result, _ = await apply_one(tmp_path, replay, create)

    assert result.status is OpStatus.APPLIED and result.external_id == "u-1"
