"""A protocol-level simulator of Zisson, for tests, benchmarks and `make run`.

What it serves (auth per account; one account per customer guid):

Legacy XML API (shape from public code)
    GET /api/simple/GetContacts, HTTP Basic (UTF-8 credentials) ->
    `<Contacts><Contact><ContactId/><FirstName/>...</Contact></Contacts>`; how a user is
    shown as a Contact is documented in `sandbox.zisson.render`.

JSON API (the token exchange from public code; the listing's paging is ASSUMED)
    POST /web-api/v1/authenticate/refresh-token `{id, customerGuid, refreshToken}` ->
    `{jwt, refreshToken}`. The refresh token rotates: the one presented stops working
    (`spent_refresh_tokens` lists the ones accepted; `new_refresh_token` issues one as
    the account's admin would, ending the current one).
    The jwt is HS256 with claims `sub, customerGuid, iat, exp, jti`; it is refused (401)
    from `exp` on, or after `expire_tokens()`.
    GET /external-api/v1/entities/users?page=1&pageSize=200 (Bearer, or Basic) ->
    `{items: [...], page, pageSize, total, next}` where `next` is the next page number
    or null. Public code shows a bare JSON array with `guid`, `username` and
    `mobileNumber`; the page envelope and the user shape below are assumptions.
    GET /external-api/v1/entities/users/{id} -> one user, `ETag: "<version>"`.

A user (JSON): `id, type ("user"|"department"), firstName, lastName, displayName,
title, department, emails: [str], phoneNumbers: [{number, type}], comments, version`
where `version` is an int bumped on every change and phone types are "mobile", "work",
"home", "fax" or "other".

ASSUMED write API (no public write call is known; Bearer or Basic):
    POST   /external-api/v1/entities/users           create; 201 + user
    PATCH  /external-api/v1/entities/users/{id}      merge the given fields; 200 + user
    DELETE /external-api/v1/entities/users/{id}      204; 404 if not there
    `If-Match: "<version>"` on PATCH/DELETE -> 412 when the version differs.
    `Idempotency-Key` on any write: the first response is stored per account and a
    replay with the same key and the same request gets it again (header
    `Idempotent-Replayed: true`), never a second effect; the same key with a different
    request is refused with 422.

Faults (latency, 5xx, 429 + Retry-After, dropped connections) apply to every request
outside /_sim/. A dropped write is processed first and then loses its answer (so
idempotency matters); any other dropped request is dropped before it is processed.

/_sim/ (no auth, no faults): GET /_sim/state, POST /_sim/faults, POST /_sim/accounts,
POST /_sim/accounts/{guid}/users, PATCH and DELETE /_sim/accounts/{guid}/users/{id},
POST /_sim/accounts/{guid}/raw, POST /_sim/accounts/{guid}/expire-tokens,
POST /_sim/counters/reset.
"""

from __future__ import annotations

from sandbox.zisson.faults import Faults
from sandbox.zisson.simulator import ZissonSimulator

__all__ = ["Faults", "ZissonSimulator"]
