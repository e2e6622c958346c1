"""The ASSUMED Zisson write contract, isolated here so the real one can be dropped in.

No public write or delete call of Zisson is known. Until one is, writes in
`write_mode = "api"` use this contract (the simulator implements it):

    GET    /external-api/v1/entities/users/{id}         -> 200 user | 404
    POST   /external-api/v1/entities/users              body: user fields -> 201 user
    PATCH  /external-api/v1/entities/users/{id}         body: changed fields -> 200 user
    DELETE /external-api/v1/entities/users/{id}         -> 204 | 404 (already gone)

- Authentication as for reads: Bearer jwt, or HTTP Basic for XML-API customers.
- `Idempotency-Key: <Operation.op_id>` on every write. The server keeps the first
  response per key and account and answers a replay with it (never a second user, never
  a second change); the same key with a different request is refused (422). A write
  whose answer was lost is therefore simply sent again.
- Replays, as the IETF draft "The Idempotency-Key HTTP Header Field"
  (draft-ietf-httpapi-idempotency-key-header, HTTPAPI working group; work in progress)
  describes them: a request retried after the original completed is answered with "the
  result of the previously completed operation, success or an error", so a stored 412
  or 404 comes back as such; a key reused with a different payload SHOULD get 422; a
  retry while the original is still being processed, 409. The draft makes the request
  fingerprint optional (MAY), so a server may recognise the key alone, and lets keys
  expire (after which the same request is a new one). It defines no header marking a
  replay: `Idempotent-Replayed: true` on a replayed answer is a vendor convention
  (Stripe's) that we ASSUME Zisson follows; `Answer.replayed` carries it.
- `If-Match: "<version>"` on PATCH and DELETE when the operation has an expected
  version; 412 when the user's version differs (a concurrent edit).
- A user is the JSON API's user (json_api.py) without `id` and `version`, which the
  server owns; `version` is an int bumped on every change and also sent as `ETag`.

What the connector believes of an answer (connector.py): a create or update counts as
applied only when the user it answers (or, failing that, a read-back GET) holds the
intended values with a newer version; a replayed answer is the FIRST request's result,
so one whose user does not hold this write's values is not taken as this write done.
A DELETE answered 404 is done (already gone); 412 is a conflict, retried next run.
Caveat: a 409 (the draft's "still being processed") reaches the connector as a conflict
like a 412, since the error it gets does not carry the status; the write is then tried
under a new key next run, which for a create whose first attempt does complete leaves
an entry that the next run's matching has to find.

The rest of the connector needs only the five functions below and `user_body`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from connectors import hostile
from connectors.base import ContractError, NotFoundError
from connectors.zisson.auth import Session
from daemon.domain import ContactKind, ContactRecord

USERS_PATH = "/external-api/v1/entities/users"
SYSTEM = "zisson"
REPLAYED = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True)
class Answer:
    """A write's answer: the user as the server shows it, and whether the server says
    this is the stored answer to an earlier request under the same Idempotency-Key."""

    user: dict[str, Any]
    replayed: bool = False


# Sync field -> key of the JSON user.
JSON_KEYS: Mapping[str, str] = {
    "kind": "type",
    "given_name": "firstName",
    "family_name": "lastName",
    "display_name": "displayName",
    "title": "title",
    "department": "department",
    "emails": "emails",
    "phones": "phoneNumbers",
    "notes": "comments",
}


def user_body(record: ContactRecord, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON user fields of `record` (all, or only those of the sync `fields`)."""
    names = JSON_KEYS if fields is None else [name for name in JSON_KEYS if name in set(fields)]
    body: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if name == "kind":
            value = "department" if value is ContactKind.DEPARTMENT else "user"
        elif name == "emails":
            value = list(value)
        elif name == "phones":
            value = [{"number": phone.number, "type": phone.type.value} for phone in value]
        body[JSON_KEYS[name]] = value
    return body


async def get_user(session: Session, user_id: str) -> dict[str, Any]:
    response = await session.request("GET", _path(user_id), what="get user")
    return _user(response, "get user")


async def create_user(session: Session, body: Mapping[str, Any], *, idempotency_key: str) -> Answer:
    response = await session.request(
        "POST",
        USERS_PATH,
        what="create user",
        body=dict(body),
        headers={"Idempotency-Key": idempotency_key},
    )
    return _answer(response, "create user")


async def update_user(
    session: Session,
    user_id: str,
    changes: Mapping[str, Any],
    *,
    if_match: str | None,
    idempotency_key: str,
) -> Answer:
    """Raises ConflictError on 412 and NotFoundError on 404."""
    headers = {"Idempotency-Key": idempotency_key}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    response = await session.request(
        "PATCH", _path(user_id), what="update user", body=dict(changes), headers=headers
    )
    return _answer(response, "update user")


async def delete_user(
    session: Session, user_id: str, *, if_match: str | None, idempotency_key: str
) -> bool:
    """True if deleted now, False if it was already gone. Raises ConflictError on 412."""
    headers = {"Idempotency-Key": idempotency_key}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    try:
        await session.request("DELETE", _path(user_id), what="delete user", headers=headers)
    except NotFoundError:
        return False
    return True


def _path(user_id: str) -> str:
    """The user's URL; ContractError for an id that would make it another URL."""
    return f"{USERS_PATH}/{hostile.url_segment(SYSTEM, user_id)}"


def _answer(response: httpx.Response, what: str) -> Answer:
    replayed = response.headers.get(REPLAYED, "").strip().lower() == "true"
    return Answer(_user(response, what), replayed)


def _user(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        payload = hostile.loads(hostile.decode_json(response.content))
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ContractError(f"zisson: {what} answered no JSON user", system=SYSTEM)
    return payload
