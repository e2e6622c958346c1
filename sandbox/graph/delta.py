"""Delta queries (messages per mail folder, contacts per contact folder).

A round starts from no token (everything in the folder) or from a `$deltatoken`
(what changed since that token's snapshot: new or changed items in full, items that
left the folder as `{"id", "@removed": {"reason": "deleted"}}`). The round is paged
with `$skiptoken`s and ends with an `@odata.deltaLink` whose `$deltatoken` remembers
the snapshot taken when the round started. $select and changeType from the first
request are carried in the tokens, as in Graph.

`expire_all()` makes every token issued so far answer 410 SyncStateNotFound (a
client must start over without a token); tokens this simulator never issued do too.
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


@dataclass
class _Tokens:
    rounds: dict[str, Round] = field(default_factory=dict)  # $skiptoken -> round
    snapshots: dict[str, Round] = field(default_factory=dict)  # $deltatoken -> finished round


class DeltaTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens = _Tokens()
        self._expired = 0

    def start(
        self,
        folder: FolderKey,
        current: dict[str, Seen],
        *,
        select: list[str] | None,
        change_type: str | None,
        since: dict[str, Seen] | None,
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
        return Round(folder, select, change_type, changes, dict(current))

    def resume(
        self, folder: FolderKey, skiptoken: str | None, deltatoken: str | None
    ) -> Round | None:
        """The round a $skiptoken continues, or the finished round a $deltatoken follows."""
        if skiptoken is None and deltatoken is None:
            return None
        with self._lock:
            found = (
                self._tokens.rounds.get(skiptoken)
                if skiptoken is not None
                else self._tokens.snapshots.get(deltatoken or "")
            )
        if found is None:
            raise GraphError(
                410,
                "SyncStateNotFound",
                "The sync state generation is not found; generation="
                f"{self._expired};[highest={self._expired + 1}].",
            )
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
        )
        token = secrets.token_urlsafe(24)
        final = following.position >= len(following.changes)
        with self._lock:
            if final:
                self._tokens.snapshots[token] = following
            else:
                self._tokens.rounds[token] = following
        return page, token, final

    def expire_all(self) -> None:
        with self._lock:
            self._tokens = _Tokens()
            self._expired += 1

    def outstanding(self) -> int:
        with self._lock:
            return len(self._tokens.rounds) + len(self._tokens.snapshots)
