"""Delta queries (messages per mail folder, contacts per contact folder).

A round starts from no token (everything in the folder) or from a `$deltatoken`
(what changed since that token's snapshot: new or changed items in full, items that
left the folder as `{"id", "@removed": {"reason": "deleted"}}`). The round is paged
with `$skiptoken`s and ends with an `@odata.deltaLink` whose `$deltatoken` remembers
the snapshot taken when the round started. $select and changeType from the first
request are carried in the tokens, as in Graph.

`$top` (or `Prefer: odata.maxpagesize`) on the first request sets the page size, and
is carried in the tokens too: delta for messages and contacts supports `$select`,
`$top` and `$expand` (https://learn.microsoft.com/en-us/graph/delta-query-messages,
"Use query parameters in a delta query for messages";
https://learn.microsoft.com/en-us/graph/api/contact-delta).

`expire_all(status)` makes every token issued so far fail, as Graph's "Synchronization
reset" describes (https://learn.microsoft.com/en-us/graph/delta-query-overview): 410
Gone with a `Location` header holding the initial query (maintenance or migration of
the tenant), or, for an expired token, a 40X-series error with a code such as
`syncStateNotFound` (404 here) or `syncStateInvalid` (400 here). Tokens this
simulator never issued answer the same way.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from sandbox.graph.errors import GraphError, bad_request

FolderKey = tuple[str, str, str]  # (mailbox id, "messages" | "contacts", folder id)


@dataclass(frozen=True, slots=True)
class Seen:
    """An item as a snapshot remembers it: its version and both of its ids then."""

    version: int
    immutable_id: str
    regular_id: str


@dataclass(frozen=True, slots=True)
class Change:
    key: str  # the item's immutable id
    removed: Seen | None = None  # set when the item left the folder


@dataclass
class Round:
    folder: FolderKey
    select: list[str] | None
    change_type: str | None
    changes: list[Change]
    snapshot: dict[str, Seen]  # what the deltaLink will compare against
    position: int = 0
    top: int | None = None  # the page size the first request asked for


@dataclass
class _Tokens:
    rounds: dict[str, Round] = field(default_factory=dict)  # $skiptoken -> round
    snapshots: dict[str, Round] = field(default_factory=dict)  # $deltatoken -> finished round


class DeltaTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens = _Tokens()
        self._expired = 0
        self._expiry_status = 410
        self._expire_after: tuple[int, int] | None = None  # (pages still served, status)

    def start(
        self,
        folder: FolderKey,
        current: dict[str, Seen],
        *,
        select: list[str] | None,
        change_type: str | None,
        since: dict[str, Seen] | None,
        top: int | None = None,
    ) -> Round:
        if change_type not in (None, "created", "updated", "deleted"):
            raise bad_request(f"Unsupported changeType '{change_type}'.")
        changes: list[Change] = []
        if since is None:
            changes = [Change(key) for key in current]
        else:
            for key, seen in current.items():
                before = since.get(key)
                created = before is None and change_type in (None, "created")
                updated = (
                    before is not None
                    and before.version != seen.version
                    and change_type in (None, "updated")
                )
                if created or updated:
                    changes.append(Change(key))
            if change_type in (None, "deleted"):
                changes.extend(
                    Change(key, seen) for key, seen in since.items() if key not in current
                )
        return Round(folder, select, change_type, changes, dict(current), top=top)

    def resume(
        self, folder: FolderKey, skiptoken: str | None, deltatoken: str | None, *, restart: str
    ) -> Round | None:
        """The round a $skiptoken continues, or the finished round a $deltatoken follows.

        `restart` is the initial query's URL, for the Location header of a 410.
        """
        if skiptoken is None and deltatoken is None:
            return None
        with self._lock:
            found = (
                self._tokens.rounds.get(skiptoken)
                if skiptoken is not None
                else self._tokens.snapshots.get(deltatoken or "")
            )
        if found is None:
            raise self._expired_error(restart)
        if found.folder != folder:
            raise bad_request(
                "The state token was issued for another folder.", "ErrorInvalidSyncStateData"
            )
        return found

    def next_page(self, round_: Round, size: int) -> tuple[list[Change], str, bool]:
        """The next page of a round, and the token for what follows (final: a deltatoken)."""
        page = round_.changes[round_.position : round_.position + size]
        following = Round(
            round_.folder,
            round_.select,
            round_.change_type,
            round_.changes,
            round_.snapshot,
            round_.position + len(page),
            round_.top,
        )
        token = secrets.token_urlsafe(24)
        final = following.position >= len(following.changes)
        with self._lock:
            if final:
                self._tokens.snapshots[token] = following
            else:
                self._tokens.rounds[token] = following
            if self._expire_after is not None:
                pages, status = self._expire_after
                self._expire_after = (pages - 1, status) if pages > 1 else None
                if pages <= 1:  # this page's own link dies with the rest
                    self._expire_locked(status)
        return page, token, final

    def _expired_error(self, restart: str) -> GraphError:
        status = self._expiry_status
        if status == 410:
            # https://learn.microsoft.com/en-us/graph/delta-query-overview ("Synchronization
            # reset"): 410 Gone, and a Location header with the initial query.
            return GraphError(
                410,
                "resyncRequired",
                "The sync state is gone; start over with the URL in the Location header.",
                headers={"Location": restart},
            )
        # Same page, "Token duration": an expired token answers a 40X-series error with
        # a code such as syncStateNotFound.
        code = "syncStateNotFound" if status == 404 else "syncStateInvalid"
        return GraphError(
            status,
            code,
            "The sync state generation is not found; generation="
            f"{self._expired};[highest={self._expired + 1}].",
        )

    def expire_all(self, status: int = 410, *, after_pages: int = 0) -> None:
        """Expire every token now, or once `after_pages` more delta pages were served
        (the last of them included: a round's own next link dies under it)."""
        if status not in (400, 404, 410):
            raise ValueError("status must be 400, 404 or 410")
        with self._lock:
            if after_pages > 0:
                self._expire_after = (after_pages, status)
            else:
                self._expire_locked(status)

    def _expire_locked(self, status: int) -> None:
        self._tokens = _Tokens()
        self._expired += 1
        self._expiry_status = status

    def outstanding(self) -> int:
        with self._lock:
            return len(self._tokens.rounds) + len(self._tokens.snapshots)
