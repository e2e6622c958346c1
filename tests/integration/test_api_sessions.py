"""Dashboard sessions: kept in the store with an expiry, ended at sign-out and with
their token; the cookie is a session id, never the API token; the login form carries
a CSRF token. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from daemon.api.auth import presented_credential
from daemon.api.testing import ApiWorld, api_world
from daemon.store import Store

Client = httpx.AsyncClient
SESSION = "pdsync_session"


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


@pytest.fixture
async def client(world: ApiWorld) -> AsyncIterator[Client]:
    async with fresh(world) as c:
        yield c


def fresh(world: ApiWorld) -> Client:
    transport = httpx.ASGITransport(app=world.app)
    return httpx.AsyncClient(transport=transport, base_url="http://pdsync.test")


async def csrf_of(client: Client) -> str:
    form = await client.get("/dashboard/login")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found, form.text
    return found.group(1)


async def sign_in(client: Client, token: str) -> httpx.Response:
    csrf = await csrf_of(client)
    return await client.post("/dashboard/login", data={"token": token, "csrf": csrf})


async def test_the_cookie_is_a_session_that_sign_out_ends(world: ApiWorld, client: Client) -> None:
    token = world.tokens["aud"]
    signed = await sign_in(client, token)
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    cookie = client.cookies[SESSION]
    assert token not in signed.headers["set-cookie"] and cookie != token
    assert "HttpOnly" in signed.headers["set-cookie"]
    assert "SameSite=strict" in signed.headers["set-cookie"]
    assert (await client.get("/dashboard")).status_code == 200
    assert world.store.list_api_calls(limit=1)[0].token_name == "aud"

    assert (await client.post("/dashboard/logout")).status_code == 303
    async with fresh(world) as thief:
        # The copied cookie of a signed-out session opens nothing.
        replay = await thief.get("/dashboard", headers={"Cookie": f"{SESSION}={cookie}"})
        assert replay.status_code == 303 and replay.headers["location"] == "/dashboard/login"
        assert f'{SESSION}="";' in replay.headers["set-cookie"]  # dropped, not tried again
        # A browser sends the dead cookie to the login page and its stylesheet as well:
        # no failed authentication is counted for those, so nobody is locked out.
        for path in ["/dashboard/login", "/dashboard/style.css"] * 8:
            seen = await thief.get(path, headers={"Cookie": f"{SESSION}={cookie}"})
            assert seen.status_code == 200, path
        # Nor does the API token in a cookie (what the login form used to set).
        for name in ("pdsync_token", SESSION):
            raw = await thief.get("/dashboard", headers={"Cookie": f"{name}={token}"})
            assert raw.status_code == 303


async def test_the_login_form_needs_its_csrf_token(world: ApiWorld, client: Client) -> None:
    forged = await client.post("/dashboard/login", data={"token": world.tokens["aud"]})
    assert forged.status_code == 403 and "reload" in forged.text.lower()
    await csrf_of(client)  # the form's cookie is set, but the field is missing or wrong
    wrong = await client.post(
        "/dashboard/login", data={"token": world.tokens["aud"], "csrf": "x" * 43}
    )
    assert wrong.status_code == 403 and SESSION not in client.cookies
    bad = await sign_in(client, "pds_wrong")
    assert bad.status_code == 401 and "Unknown or revoked token" in bad.text


async def test_a_revoked_token_ends_its_sessions(world: ApiWorld, client: Client) -> None:
    assert (await sign_in(client, world.tokens["olga"])).status_code == 303
    assert (await client.get("/dashboard")).status_code == 200
    world.store.revoke_token("olga", by="test")
    assert (await client.get("/dashboard")).status_code == 303


def test_sessions_expire_and_are_pruned(store: Store) -> None:
    store.create_token("reader", "auditor", created_by="t")
    token_id = store.list_tokens()[0].id
    short = store.create_session(token_id, lifetime=timedelta(milliseconds=200))
    long = store.create_session(token_id, lifetime=timedelta(hours=12))
    assert store.authenticate_session(short) is not None
    time.sleep(0.3)
    assert store.authenticate_session(short) is None
    found = store.authenticate_session(long)
    assert found is not None and found.name == "reader"
    pruned = store.expire_api_records(audit_before=datetime.now(UTC) - timedelta(days=90))
    assert (pruned.audit, pruned.sessions) == (0, 1)
    assert store.end_session(long) and not store.end_session(long)
    assert store.authenticate_session(long) is None
    assert store.authenticate_session("not a session") is None


def request_scope(method: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "method": method, "headers": list(headers)}


def test_the_credential_is_the_bearer_header_or_for_reading_the_session_cookie() -> None:
    header = (b"authorization", b"Bearer pds_abc")
    cookie = (b"cookie", b"theme=dark; pdsync_session=pdss_x; pdsync_token=pds_old")
    assert presented_credential(request_scope("POST", header)) == ("bearer", "pds_abc")
    assert presented_credential(request_scope("GET", cookie)) == ("session", "pdss_x")
    assert presented_credential(request_scope("HEAD", cookie)) == ("session", "pdss_x")
    assert presented_credential(request_scope("POST", cookie)) is None  # no CSRF through it
    assert presented_credential(request_scope("GET", header, cookie)) == ("bearer", "pds_abc")
    basic = (b"authorization", b"Basic dXNlcjpwdw==")
    assert presented_credential(request_scope("GET", basic)) is None
    assert presented_credential(request_scope("GET", (b"authorization", b"Bearer "))) is None
    old = (b"cookie", b"pdsync_token=pds_old")  # the raw token, as main used to set it
    assert presented_credential(request_scope("GET", old)) is None
