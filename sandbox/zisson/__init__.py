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
    replay with the same key and the same request gets it again, success or refusal
    (header `Idempotent-Replayed: true`), never a second effect; the same key with a
    different request is refused with 422. This follows the IETF draft "The
    Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-header); the
    replay header is a vendor convention (Stripe's), not the draft's.

Faults (latency, 5xx, 429 + Retry-After, dropped connections) apply to every request
outside /_sim/. A dropped write is processed first and then loses its answer (so
idempotency matters); any other dropped request is dropped before it is processed.

Faults of a listing and of writes, each also a `ZissonSimulator` method (documented
there). No public Zisson documentation covers paging or writes, so these are what a
client must survive whatever Zisson really does, not a description of Zisson:
    listing served empty or shrunk      set_listing_fault(guid, empty=/keep_count=/keep_share=)
                                        POST /_sim/accounts/{guid}/listing
                                             {"empty": true} | {"keep_count": 3} | {}
    directory moving between pages      shift_listing(guid, "churn"|"reorder", at=, skip=, times=)
                                        POST /_sim/accounts/{guid}/listing/shift
                                             {"how": "churn", "at": 0, "skip": 0, "times": 1}
    listing answer cut short            truncate_listing(guid, times=)
                                        POST /_sim/accounts/{guid}/listing/truncate {"times": 1}
    XML listing in a legacy encoding    set_xml_encoding(guid, "iso-8859-1", charset=None,
                                                         declaration=None)
                                        POST /_sim/accounts/{guid}/listing/encoding
                                             {"encoding": "windows-1252", "charset": null,
                                              "declaration": "ISO-8859-1"} | {}
    412 on the next writes              fail_preconditions(count, methods=("PATCH", "DELETE"))
                                        POST /_sim/faults/preconditions
                                             {"count": 1, "methods": ["DELETE"]}
    replay by key alone                 set_idempotency("key"|"request")
                                        POST /_sim/faults/idempotency {"match": "key"}
    idempotency keys expired            forget_idempotency_keys(guid)
                                        POST /_sim/accounts/{guid}/idempotency/forget
    fields a write does not keep        ignore_on_write(["comments"])
                                        POST /_sim/faults/ignore-on-write {"fields": [...]}
GET /_sim/state shows them under "faults".

/_sim/ (no auth, no faults): GET /_sim/state, POST /_sim/faults, POST /_sim/accounts,
POST /_sim/accounts/{guid}/users, PATCH and DELETE /_sim/accounts/{guid}/users/{id},
POST /_sim/accounts/{guid}/raw, POST /_sim/accounts/{guid}/expire-tokens,
POST /_sim/counters/reset, and the fault routes above.
"""

from __future__ import annotations

from sandbox.zisson.faults import Faults
from sandbox.zisson.simulator import ZissonSimulator
from sandbox.zisson.store import JsonText

__all__ = ["Faults", "JsonText", "ZissonSimulator"]
