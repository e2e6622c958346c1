"""The Zisson simulator itself: its HTTP APIs, /_sim/, faults and byte-exact UTF-8."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.zisson_sim import ZissonSimulator

GUID = "6b0d1f8a-0000-4000-8000-000000000001"
USERS = "/external-api/v1/entities/users"
NORWEGIAN = "Blåbærsyltetøy ÆØÅ æøå"


@pytest.fixture
def sim(zisson_sim: ZissonSimulator) -> ZissonSimulator:
    zisson_sim.add_account(
        GUID,
        username="bruker@kunde.no",
        password="hemmelig-æ",
        user_id="api-1",
        refresh_token="rt-0",
    )
    return zisson_sim


@pytest.fixture
def http(sim: ZissonSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5) as client:
        yield client


def basic() -> dict[str, str]:
    token = base64.b64encode("bruker@kunde.no:hemmelig-æ".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(http: httpx.Client, token: str = "rt-0") -> tuple[dict[str, str], str]:
    answer = http.post(
        "/web-api/v1/authenticate/refresh-token",
        json={"id": "api-1", "customerGuid": GUID, "refreshToken": token},
    )
    assert answer.status_code == 200
    return {"Authorization": f"Bearer {answer.json()['jwt']}"}, answer.json()["refreshToken"]


def test_norwegian_letters_are_byte_exact_in_xml_and_json(
    sim: ZissonSimulator, http: httpx.Client
) -> None:
    sim.put_user(GUID, {"firstName": NORWEGIAN, "comments": "a\r\nb"})
    encoded = NORWEGIAN.encode("utf-8")

    xml = http.get("/api/simple/GetContacts", headers=basic())
    assert xml.headers["content-type"] == "application/xml; charset=utf-8"
    assert b"<FirstName>" + encoded + b"</FirstName>" in xml.content
    assert b"<Comments>a&#13;\nb</Comments>" in xml.content

    headers, _ = bearer(http)
    listing = http.get(USERS, headers=headers)
    assert listing.headers["content-type"] == "application/json; charset=utf-8"
    assert b'"firstName": "' + encoded + b'"' in listing.content  # raw UTF-8, not \\u escapes

    created = http.post(
        USERS, headers=headers, content=json.dumps({"lastName": NORWEGIAN}).encode()
    )
    assert created.status_code == 201
    assert sim.user(GUID, created.json()["id"])["lastName"] == NORWEGIAN


def test_refresh_token_rotates(sim: ZissonSimulator, http: httpx.Client) -> None:
    _, rotated = bearer(http)
    assert rotated != "rt-0" and sim.refresh_token(GUID) == rotated
    reused = http.post(
        "/web-api/v1/authenticate/refresh-token",
        json={"id": "api-1", "customerGuid": GUID, "refreshToken": "rt-0"},
    )
    assert reused.status_code == 401
    assert http.post("/web-api/v1/authenticate/refresh-token", json={"id": 1}).status_code == 400
    assert sim.counters["refreshes"] == 1 and sim.counters["auth_failures"] == 1


def test_jwt_expires(http: httpx.Client) -> None:
    with ZissonSimulator(jwt_ttl_seconds=0.2) as short:
        short.add_account("g", username="u", password="p", user_id="i", refresh_token="r")
        with httpx.Client(base_url=short.url) as client:
            jwt = client.post(
                "/web-api/v1/authenticate/refresh-token",
                json={"id": "i", "customerGuid": "g", "refreshToken": "r"},
            ).json()["jwt"]
            headers = {"Authorization": f"Bearer {jwt}"}
            assert client.get(USERS, headers=headers).status_code == 200
            time.sleep(0.25)
            assert client.get(USERS, headers=headers).status_code == 401
            forged = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
            assert (
                client.get(USERS, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
            )


def test_paging(sim: ZissonSimulator, http: httpx.Client) -> None:
    for n in range(5):
        sim.put_user(GUID, {"firstName": f"P{n}"})
    headers, _ = bearer(http)
    pages = [
        http.get(USERS, headers=headers, params={"page": p, "pageSize": 2}).json()
        for p in (1, 2, 3)
    ]
    assert [[u["firstName"] for u in page["items"]] for page in pages] == [
        ["P0", "P1"],
        ["P2", "P3"],
        ["P4"],
    ]
    assert [page["next"] for page in pages] == [2, 3, None]
    assert {page["total"] for page in pages} == {5}
    assert len(http.get(USERS, headers=headers).json()["items"]) == 5  # default page size 200
    assert http.get(USERS, headers=headers, params={"pageSize": 0}).status_code == 400


def test_write_api_contract(sim: ZissonSimulator, http: httpx.Client) -> None:
    headers = basic()  # XML customers write with Basic
    first = http.post(
        USERS, headers={**headers, "Idempotency-Key": "op-1"}, json={"firstName": "A"}
    )
    replay = http.post(
        USERS, headers={**headers, "Idempotency-Key": "op-1"}, json={"firstName": "A"}
    )
    other = http.post(
        USERS, headers={**headers, "Idempotency-Key": "op-1"}, json={"firstName": "B"}
    )
    assert (first.status_code, replay.status_code, other.status_code) == (201, 201, 422)
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"
    user = first.json()
    assert first.headers["ETag"] == '"1"' and user["version"] == 1
    path = f"{USERS}/{user['id']}"

    assert (
        http.patch(path, headers={**headers, "If-Match": '"9"'}, json={"title": "x"}).status_code
        == 412
    )
    patched = http.patch(path, headers={**headers, "If-Match": '"1"'}, json={"title": "x"})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert http.patch(path, headers=headers, json={"shoeSize": 44}).status_code == 400
    assert http.patch(path, headers=headers, json={"phoneNumbers": "22"}).status_code == 400
    assert http.get(path, headers=headers).json()["title"] == "x"

    assert http.delete(path, headers={**headers, "If-Match": '"1"'}).status_code == 412
    assert http.delete(path, headers=headers).status_code == 204
    assert http.delete(path, headers=headers).status_code == 404
    assert http.get(path, headers=headers).status_code == 404
    assert http.post(USERS, json={"firstName": "no auth"}).status_code == 401
    counters = sim.counters
    assert (counters["creates"], counters["updates"], counters["deletes"]) == (1, 1, 1)


def test_a_dropped_write_is_processed_a_dropped_read_is_not(
    sim: ZissonSimulator, http: httpx.Client
) -> None:
    sim.fail_next(1, status="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(USERS, headers={**basic(), "Idempotency-Key": "k"}, json={"firstName": "Å"})
    assert len(sim.users(GUID)) == 1
    replay = http.post(USERS, headers={**basic(), "Idempotency-Key": "k"}, json={"firstName": "Å"})
    assert replay.headers["Idempotent-Replayed"] == "true"

    sim.fail_next(1, status="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(
            "/web-api/v1/authenticate/refresh-token",
            json={"id": "api-1", "customerGuid": GUID, "refreshToken": "rt-0"},
        )
    assert sim.refresh_token(GUID) == "rt-0"  # not spent
    assert sim.counters["drops"] == 2


def test_faults_are_seeded_and_never_touch_sim(sim: ZissonSimulator, http: httpx.Client) -> None:
    sim.set_faults(rate_429=1.0, retry_after=3)
    answer = http.get("/api/simple/GetContacts", headers=basic())
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "3"
    assert http.get("/_sim/state").status_code == 200

    def pattern(seed: int) -> list[int]:
        sim.set_faults(error_rate=0.5, seed=seed)
        return [http.get("/api/simple/GetContacts", headers=basic()).status_code for _ in range(20)]

    assert pattern(3) == pattern(3)
    assert {s for s in pattern(3)} <= {200, 500, 502, 503}
    with pytest.raises(ValueError):
        sim.set_faults(error_rate=0.7, rate_429=0.7)


def test_sim_endpoints_for_out_of_process_use(http: httpx.Client) -> None:
    guid = "out-of-process"
    account = {
        "customer_guid": guid,
        "username": "op",
        "password": "pw",
        "user_id": "i",
        "refresh_token": "r",
    }
    assert http.post("/_sim/accounts", json=account).status_code == 201
    user = http.post(f"/_sim/accounts/{guid}/users", json={"firstName": "Åse"}).json()
    patched = http.patch(f"/_sim/accounts/{guid}/users/{user['id']}", json={"title": "Sjef"})
    assert patched.json()["version"] == 2
    assert http.post(f"/_sim/accounts/{guid}/raw", json={"phoneNumbers": 5}).status_code == 201
    http.post("/_sim/faults", json={"latency_ms": 1})
    state = http.get("/_sim/state").json()
    assert state["accounts"][guid]["users"][0]["title"] == "Sjef"
    assert state["accounts"][guid]["raw"] == [{"phoneNumbers": 5}]
    assert state["faults"]["latency_ms"] == 1
    assert http.delete(f"/_sim/accounts/{guid}/users/{user['id']}").status_code == 204
    assert http.post("/_sim/faults", json={"error_rate": 2}).status_code == 400
    assert http.post("/_sim/counters/reset").status_code == 204
    assert http.get("/_sim/state").json()["counters"] == {}


def test_restart_and_context_manager() -> None:
    sim = ZissonSimulator()
    sim.start()
    url = sim.url
    sim.stop()
    sim.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = sim.url
    with ZissonSimulator() as again:
        assert again.url != url or again.url.startswith("http://127.0.0.1:")


def test_listing_faults_over_sim_routes(sim: ZissonSimulator, http: httpx.Client) -> None:
    ids = [sim.put_user(GUID, {"firstName": f"P{n}"}) for n in range(6)]
    headers, _ = bearer(http)
    accounts = f"/_sim/accounts/{GUID}"

    def listing(page_size: int = 200, page: int = 1) -> dict[str, Any]:
        answer = http.get(USERS, headers=headers, params={"page": page, "pageSize": page_size})
        assert answer.status_code == 200
        return dict(answer.json())

    assert http.post(f"{accounts}/listing", json={"empty": True}).status_code == 204
    assert listing() == {"items": [], "page": 1, "pageSize": 200, "total": 0, "next": None}
    assert b"<Contact>" not in http.get("/api/simple/GetContacts", headers=basic()).content
    http.post(f"{accounts}/listing", json={"keep_count": 2})
    assert [u["id"] for u in listing()["items"]] == ids[:2] and listing()["total"] == 2
    http.post(f"{accounts}/listing", json={"keep_share": 0.5})
    assert [u["id"] for u in listing()["items"]] == ids[:3]
    assert http.get("/_sim/state").json()["faults"]["listings"][GUID]["keep_share"] == 0.5
    assert http.post(f"{accounts}/listing", json={"keep_share": 2}).status_code == 400
    assert http.post(f"{accounts}/listing", json={}).status_code == 204
    assert listing()["total"] == 6
    assert len(sim.users(GUID)) == 6  # serving less deletes nothing

    # A churn after page 1: the first user goes, a new one comes at the end.
    assert http.post(f"{accounts}/listing/shift", json={"how": "churn"}).status_code == 204
    first = listing(page_size=2)
    second = listing(page_size=2, page=2)
    assert [u["id"] for u in first["items"]] == ids[:2]
    assert [u["id"] for u in second["items"]] == ids[3:5]  # ids[2] slipped onto page 1
    assert second["total"] == first["total"] == 6
    assert [u["id"] for u in sim.users(GUID)][:5] == ids[1:]
    # A reorder after the next page request: the entry at index 1 moves to the end.
    sim.shift_listing(GUID, "reorder", at=1)
    before = [u["id"] for u in listing()["items"]]
    assert [u["id"] for u in listing()["items"]] == [before[0], *before[2:], before[1]]
    assert http.post(f"{accounts}/listing/shift", json={"how": "spin"}).status_code == 400
    assert sim.counters["shifts"] == 2

    http.post(f"{accounts}/listing/truncate", json={"times": 1})
    cut = http.get(USERS, headers=headers)
    assert cut.status_code == 200 and int(cut.headers["Content-Length"]) == len(cut.content)
    with pytest.raises(ValueError):
        cut.json()
    assert listing()["total"] == 6  # once only


def test_write_faults_over_sim_routes(sim: ZissonSimulator, http: httpx.Client) -> None:
    headers = basic()
    user = http.post(USERS, headers=headers, json={"firstName": "A"}).json()
    path = f"{USERS}/{user['id']}"

    body = {"count": 1, "methods": ["DELETE"]}
    assert http.post("/_sim/faults/preconditions", json=body).status_code == 204
    assert http.patch(path, headers=headers, json={"title": "x"}).status_code == 200
    refused = http.delete(path, headers={**headers, "Idempotency-Key": "d-1"})
    assert refused.status_code == 412
    replayed = http.delete(path, headers={**headers, "Idempotency-Key": "d-1"})
    assert replayed.status_code == 412 and replayed.headers["Idempotent-Replayed"] == "true"
    assert http.delete(path, headers={**headers, "Idempotency-Key": "d-2"}).status_code == 204
    bad = {"count": 1, "methods": ["POST"]}
    assert http.post("/_sim/faults/preconditions", json=bad).status_code == 400

    # The key alone: another request under a known key gets the first answer.
    assert http.post("/_sim/faults/idempotency", json={"match": "key"}).status_code == 204
    first = http.post(USERS, headers={**headers, "Idempotency-Key": "c-1"}, json={"firstName": "B"})
    other = http.post(USERS, headers={**headers, "Idempotency-Key": "c-1"}, json={"firstName": "C"})
    assert other.status_code == 201 and other.json() == first.json()
    assert other.headers["Idempotent-Replayed"] == "true"
    http.post("/_sim/faults/idempotency", json={"match": "request"})
    strict = http.post(
        USERS, headers={**headers, "Idempotency-Key": "c-1"}, json={"firstName": "D"}
    )
    assert strict.status_code == 422

    # Keys expired: the same request is a new one.
    forgotten = http.post(f"/_sim/accounts/{GUID}/idempotency/forget").json()["forgotten"]
    assert forgotten >= 1
    again = http.post(USERS, headers={**headers, "Idempotency-Key": "c-1"}, json={"firstName": "B"})
    assert again.json()["id"] != first.json()["id"] and "Idempotent-Replayed" not in again.headers

    # Fields a write accepts and does not keep.
    ignore = {"fields": ["comments"]}
    assert http.post("/_sim/faults/ignore-on-write", json=ignore).status_code == 204
    kept = http.post(USERS, headers=headers, json={"firstName": "E", "comments": "borte"}).json()
    assert kept["comments"] == "" and kept["firstName"] == "E"
    patched = http.patch(f"{USERS}/{kept['id']}", headers=headers, json={"comments": "x"}).json()
    assert patched["comments"] == ""
    shoe = {"fields": ["shoeSize"]}
    assert http.post("/_sim/faults/ignore-on-write", json=shoe).status_code == 400
    state = http.get("/_sim/state").json()["faults"]
    assert state["ignored_on_write"] == ["comments"] and state["replay_match"] == "request"
    assert sim.counters["412"] == 1
