"""Bearer tokens of the admin API: created once, stored only as a keyed hash, revocable.

A token is `pds_` followed by 43 URL-safe characters (256 random bits). The store keeps
HMAC-SHA256(pepper, token): the pepper is 32 random bytes made on first use, kept in
store_meta encrypted with the master key, so a copy of the database alone cannot even
test guesses. The plaintext token is returned once, by `create_token`, and never again.

Dashboard sessions: signing in makes a session id (`pdss_` and 256 random bits) that the
cookie carries instead of the token; the store keeps its keyed hash, the token it
stands for and its expiry. It ends at sign-out, at expiry and with its token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from daemon import crypto
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import StoreError
from daemon.store.schema import ACTIVE_ONLY, api_sessions, api_tokens, store_meta

TOKEN_PREFIX = "pds_"
# A lower-case letter first, then letters, digits, "_" and "-": never an e-mail address
# or a phone number, so a token name may go into the ledger and the audit log.
TOKEN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_TOKEN = re.compile(r"pds_[A-Za-z0-9_-]{43}")
SESSION_PREFIX = "pdss_"
_SESSION = re.compile(r"pdss_[A-Za-z0-9_-]{43}")
_PEPPER_NAME = "api_token_pepper"
_PEPPER_CONTEXT = "pdsync/store/api-token-pepper"


class Role(StrEnum):
    """What a token may do; daemon/api/access.py maps every endpoint to the roles allowed."""

    ADMIN = "admin"  # erasures: create, approve, cancel
    OPERATOR = "operator"  # sync now, resolve disputes, complete manual tasks
    AUDITOR = "auditor"  # read runs, logs, erasures, ledger, certificates


class TokenNameTaken(StoreError, ValueError):
    """A token that is not revoked already has this name."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenRow:
    """A token as listed: never its value or hash."""

    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _token_row(row: sa.Row[Any]) -> TokenRow:
    return TokenRow(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        created_by=row.created_by,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


class TokensMixin(StoreBase):
    _api_pepper: bytes | None = None

    def _pepper(self) -> bytes:
        if self._api_pepper is not None:
            return self._api_pepper
        select = sa.select(store_meta.c.value).where(store_meta.c.name == _PEPPER_NAME)
        with self._read() as conn:
            blob = conn.scalar(select)
        if blob is None:
            pepper = secrets.token_bytes(32)
            fresh = crypto.encrypt(self._master_key, pepper, context=_PEPPER_CONTEXT)
            with self._write() as conn:
                conn.execute(
                    self._upsert(store_meta)
                    .values(name=_PEPPER_NAME, value=fresh)
                    .on_conflict_do_nothing(index_elements=[store_meta.c.name])
                )
                blob = conn.scalar(select)  # another instance may have been first
        assert blob is not None
        self._api_pepper = crypto.decrypt(self._master_key, blob, context=_PEPPER_CONTEXT)
        return self._api_pepper

    def _token_hash(self, token: str) -> str:
        return hmac.new(self._pepper(), token.encode(), hashlib.sha256).hexdigest()

    def create_token(self, name: str, role: Role | str, *, created_by: str) -> str:
        """Make a token and return its value, the only time it is ever shown.

        Raises ValueError for a malformed name or unknown role, TokenNameTaken when a
        token of that name is active (revoke it first: one name, one live token).
        """
        if not TOKEN_NAME.fullmatch(name):
            raise ValueError(
                "a token name is a lower-case letter, then up to 63 of a-z, 0-9, '_', '-'"
            )
        role = Role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = self._token_hash(token)  # before the transaction: it may make the pepper
        try:
            with self._write() as conn:
                conn.execute(
                    sa.insert(api_tokens).values(
                        name=name,
                        role=role.value,
                        token_hash=digest,
                        created_at=utcnow(),
                        created_by=created_by,
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise TokenNameTaken(f"an active token named {name!r} exists; revoke it first") from exc
        return token

    def authenticate_token(self, token: str) -> TokenRow | None:
        """The active token with this value, or None (unknown, malformed or revoked)."""
        if not _TOKEN.fullmatch(token):
            return None
        digest = self._token_hash(token)
        with self._read() as conn:
            row = conn.execute(
                sa.select(api_tokens).where(api_tokens.c.token_hash == digest, ACTIVE_ONLY)
            ).first()
        return None if row is None else _token_row(row)

    def list_tokens(self, *, include_revoked: bool = True) -> list[TokenRow]:
        """Tokens, oldest first."""
        query = sa.select(api_tokens).order_by(api_tokens.c.id)
        if not include_revoked:
            query = query.where(ACTIVE_ONLY)
        with self._read() as conn:
            return [_token_row(row) for row in conn.execute(query)]

    def revoke_token(self, name: str, *, by: str) -> bool:
        """Revoke the active token of this name; False when there is none. At once:
        the next request with it gets 401."""
        with self._write() as conn:
            ids = sa.select(api_tokens.c.id).where(api_tokens.c.name == name, ACTIVE_ONLY)
            conn.execute(sa.delete(api_sessions).where(api_sessions.c.token_id.in_(ids)))
            revoked = conn.execute(
                sa.update(api_tokens)
                .where(api_tokens.c.name == name, ACTIVE_ONLY)
                .values(revoked_at=utcnow(), revoked_by=by)
            ).rowcount
        return bool(revoked)

    def create_session(self, token_id: int, *, lifetime: timedelta) -> str:
        """Start a dashboard session for a token; returns its id, the only time it is
        shown (it goes into the cookie)."""
        session = SESSION_PREFIX + secrets.token_urlsafe(32)
        digest = self._token_hash(session)
        now = utcnow()
        with self._write() as conn:
            conn.execute(
                sa.insert(api_sessions).values(
                    session_hash=digest,
                    token_id=token_id,
                    created_at=now,
                    expires_at=now + lifetime,
                )
            )
        return session

    def authenticate_session(self, session: str) -> TokenRow | None:
        """The active token of a live session, or None (unknown, ended, expired, or its
        token revoked)."""
        if not _SESSION.fullmatch(session):
            return None
        digest = self._token_hash(session)
        query = (
            sa.select(api_tokens)
            .join(api_sessions, api_sessions.c.token_id == api_tokens.c.id)
            .where(
                api_sessions.c.session_hash == digest,
                api_sessions.c.expires_at > utcnow(),
                ACTIVE_ONLY,
            )
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _token_row(row)

    def end_session(self, session: str) -> bool:
        """End a session (sign-out); False when there was none."""
        if not _SESSION.fullmatch(session):
            return False
        digest = self._token_hash(session)
        with self._write() as conn:
            ended = conn.execute(
                sa.delete(api_sessions).where(api_sessions.c.session_hash == digest)
            ).rowcount
        return bool(ended)
