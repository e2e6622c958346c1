"""Zisson authentication against the simulator: rotating refresh tokens, jwt expiry, Basic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.base import AuthError, FatalError
from connectors.secrets import SecretRef
from connectors.zisson import ZissonBinding
from daemon.domain import Customer
from sandbox.zisson_sim import ZissonSimulator
from tests.fixtures.zisson import ZissonBound, ZissonConnect

REFRESH = "POST /web-api/v1/authenticate/refresh-token"


def exchange(sim: ZissonSimulator, bound: ZissonBound, token: str) -> httpx.Response:
    return httpx.post(
        sim.url + "/web-api/v1/authenticate/refresh-token",
        json={"id": bound.user_id, "customerGuid": bound.guid, "refreshToken": token},
    )


async def test_rotated_refresh_token_is_persisted_and_the_old_one_is_dead(
    zisson_json: ZissonBound,
) -> None:
    old = zisson_json.token_file.read_text().strip()

    await zisson_json.connector.read(zisson_json.customer)

    new = zisson_json.token_file.read_text().strip()
    assert new != old
    assert new == zisson_json.sim.refresh_token(zisson_json.guid)
    assert stat.S_IMODE(zisson_json.token_file.stat().st_mode) == 0o600
    assert list(zisson_json.token_file.parent.glob(".refresh_token*")) == []  # no temp left
    assert exchange(zisson_json.sim, zisson_json, old).status_code == 401
    assert zisson_json.sim.counters["refreshes"] == 1


async def test_jwt_is_reused_until_it_nears_expiry(zisson_json: ZissonBound) -> None:
    for _ in range(3):
        await zisson_json.connector.read(zisson_json.customer)
    assert zisson_json.sim.counters["refreshes"] == 1


async def test_a_jwt_about_to_expire_is_refreshed_before_use(
    zisson_connect: ZissonConnect,
) -> None:
    with ZissonSimulator(jwt_ttl_seconds=1) as sim:
        bound = zisson_connect("json", sim=sim)
        bound.seed({"firstName": "Åse"})
        await bound.connector.read(bound.customer)
        await asyncio.sleep(1.0)

        result = await bound.connector.read(bound.customer)

        assert len(result.records) == 1
        assert sim.counters["refreshes"] == 2
        assert sim.counters["auth_failures"] == 0  # refreshed ahead of time, not after a 401
        await bound.connector.aclose()


async def test_a_jwt_the_server_expired_is_refreshed_transparently(
    zisson_json: ZissonBound,
) -> None:
    zisson_json.seed({"firstName": "Åse"})
    await zisson_json.connector.read(zisson_json.customer)
    zisson_json.sim.expire_tokens(zisson_json.guid)  # we still believe our jwt is good

    result = await zisson_json.connector.read(zisson_json.customer)

    assert len(result.records) == 1
    counters = zisson_json.sim.counters
    assert counters["auth_failures"] == 1 and counters["refreshes"] == 2


async def test_concurrent_calls_spend_the_refresh_token_once(
    zisson_json: ZissonBound,
) -> None:
    zisson_json.seed({"firstName": "Åse"})

    results = await asyncio.gather(
        *(zisson_json.connector.read(zisson_json.customer) for _ in range(12))
    )

    assert all(len(r.records) == 1 for r in results)
    assert zisson_json.sim.counters["refreshes"] == 1
    assert zisson_json.sim.counters["auth_failures"] == 0

    zisson_json.sim.expire_tokens(zisson_json.guid)
    await asyncio.gather(*(zisson_json.connector.read(zisson_json.customer) for _ in range(12)))
    assert zisson_json.sim.counters["refreshes"] == 2


async def test_two_customers_on_one_account_share_one_token_chain(
    zisson_json: ZissonBound,
) -> None:
    twin = Customer(id="kunde-tvilling", name="Tvilling AS", bindings=zisson_json.customer.bindings)
    await asyncio.gather(
        zisson_json.connector.read(zisson_json.customer), zisson_json.connector.read(twin)
    )
    assert zisson_json.sim.counters["refreshes"] == 1
    assert zisson_json.sim.counters["auth_failures"] == 0


async def test_a_refused_refresh_token_raises_auth_error_without_the_token(
    zisson_json: ZissonBound,
) -> None:
    zisson_json.token_file.write_text("rt-stolen-and-already-used\n")

    with pytest.raises(AuthError) as caught:
        await zisson_json.connector.read(zisson_json.customer)

    message = str(caught.value)
    assert zisson_json.guid in message
    assert "rt-stolen-and-already-used" not in message
    assert zisson_json.sim.refresh_token(zisson_json.guid) not in message
    assert "HTTP 401" in message
    assert f"Put a new one in {zisson_json.token_file}." in message  # the file is the remedy
    # Not retried: the same token would be refused again.
    assert zisson_json.sim.counters[REFRESH] == 1


async def test_a_missing_token_file_is_an_auth_error_naming_the_file(
    zisson_json: ZissonBound,
) -> None:
    zisson_json.token_file.unlink()
    with pytest.raises(AuthError, match="cannot be read"):
        await zisson_json.connector.read(zisson_json.customer)


async def test_a_token_the_operator_replaces_after_a_refusal_is_picked_up(
    zisson_json: ZissonBound,
) -> None:
    zisson_json.token_file.write_text("rt-wrong\n")
    with pytest.raises(AuthError):
        await zisson_json.connector.read(zisson_json.customer)

    zisson_json.token_file.write_text(zisson_json.sim.refresh_token(zisson_json.guid))
    result = await zisson_json.connector.read(zisson_json.customer)
    assert result.records == ()


async def test_xml_with_a_wrong_password_raises_auth_error(zisson_xml: ZissonBound) -> None:
    assert zisson_xml.binding.password is not None and zisson_xml.binding.password.file
    zisson_xml.binding.password.file.write_text("feil-passord")

    with pytest.raises(AuthError) as caught:
        await zisson_xml.connector.read(zisson_xml.customer)

    assert "feil-passord" not in str(caught.value)
    assert zisson_xml.username not in str(caught.value)


async def test_xml_with_a_missing_password_secret_raises_auth_error(
    zisson_xml: ZissonBound,
) -> None:
    binding = ZissonBinding(
        api="xml", username=zisson_xml.username, password=SecretRef(env="PDSYNC_TEST_UNSET_PW")
    )
    customer = Customer(id="kunde-x", name="X", bindings={"zisson": binding})
    with pytest.raises(AuthError, match="PDSYNC_TEST_UNSET_PW"):
        await zisson_xml.connector.read(customer)


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """No new files in `directory` (chmod for users; root needs the immutable attribute)."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr")
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("cannot make a directory immutable here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


async def test_a_rotated_token_that_cannot_be_saved_is_not_lost(zisson_json: ZissonBound) -> None:
    with unwritable(zisson_json.token_file.parent):
        with pytest.raises(FatalError, match="cannot save the rotated refresh token") as caught:
            await zisson_json.connector.read(zisson_json.customer)
        assert zisson_json.sim.refresh_token(zisson_json.guid) not in str(caught.value)

    result = await zisson_json.connector.read(zisson_json.customer)

    assert result.records == ()
    assert zisson_json.token_file.read_text().strip() == zisson_json.sim.refresh_token(
        zisson_json.guid
    )
    assert zisson_json.sim.counters["auth_failures"] == 0
