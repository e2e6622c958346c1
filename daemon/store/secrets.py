"""Connector secrets: rotating tokens in the store, one exchange per account at a time.

Zisson's JSON API spends its refresh token on every exchange and answers with the next
one (connectors/vault.py). The store keeps each account's current token, encrypted with
the master key and bound to the system and account, and `secret_exchange` gives one
holder at a time, across every instance, the token and the right to replace it:

- PostgreSQL: one transaction holds `pg_advisory_xact_lock` on a key derived from the
  account for the whole exchange, and writes the new value; the lock ends with the
  commit. An instance that dies mid-exchange loses its session, and with it the lock.
- SQLite (one daemon, though the CLI may run beside it): an exclusive flock on the
  account's file `<database>.secret-<digest>.lock`. Not SQLite's write lock: that would
  stop every other writer, in this process too, for as long as the HTTP call takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon import crypto
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import StoreError, StoreUnavailable, WrongMasterKey
from daemon.store.schema import connector_secrets

# How long an exchange waits for another exchange of the same account (one HTTP call).
LOCK_WAIT = timedelta(seconds=120)
# The first key of pg_advisory_xact_lock(int, int) for secrets ("pdsv"); the second is
# derived from the account. The two-key form never meets the one-key locks (leader,
# migrations).
_LOCK_SPACE = 0x70647376
_LOCK_TIMEOUT_SQLSTATE = "55P03"
_POLL = 0.01


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectorSecret:
    """An account's stored secret; `version` counts the values it has had."""

    system: str
    account: str
    value: str = field(repr=False)
    version: int
    updated_at: datetime


class SecretSlot:
    """An account's secret, held exclusively until the `secret_exchange` block ends."""

    def __init__(self, *, system: str, account: str, value: str | None, version: int) -> None:
        self.system = system
        self.account = account
        self.value = value  # None: nothing stored yet
        self.version = version  # 0: nothing stored yet
        self.staged: str | None = None

    def stage(self, value: str) -> None:
        """Store `value` instead when the block ends without an error."""
        if not value:
            raise ValueError("a connector secret cannot be empty")
        self.staged = value

    def __repr__(self) -> str:
        return f"<SecretSlot {self.system} {self.account} v{self.version}>"


def _context(system: str, account: str) -> str:
    # Bound as associated data: a value copied onto another account's row does not open.
    return f"pdsync/connector-secret/{system}/{account}"


def _lock_key(system: str, account: str) -> int:
    digest = hashlib.sha256(f"{system}\x00{account}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class SecretsMixin(StoreBase):
    def connector_secret(self, system: str, account: str) -> ConnectorSecret | None:
        """The account's stored secret, or None. Raises WrongMasterKey when it does not open."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(connector_secrets).where(
                    connector_secrets.c.system == system, connector_secrets.c.account == account
                )
            ).first()
        if row is None:
            return None
        return ConnectorSecret(
            system=system,
            account=account,
            value=self._open_secret(system, account, row.value),
            version=row.version,
            updated_at=row.updated_at,
        )

    def set_connector_secret(
        self, system: str, account: str, value: str, *, wait: timedelta = LOCK_WAIT
    ) -> int:
        """Replace the account's secret (a newly provisioned token); returns its version.

        Waits for an exchange of the account in progress, so that exchange cannot write
        its rotated token over this one. Raises StoreUnavailable when the wait is over.
        """
        with self.secret_exchange(system, account, wait=wait) as slot:
            slot.stage(value)
        return slot.version + 1

    def forget_connector_secret(self, system: str, account: str) -> int:
        """Delete the account's secret (the end of a customer); returns rows deleted.

        Waits for an exchange of the account in progress, so it cannot write the rotated
        token back afterwards.
        """
        with self.secret_exchange(system, account), self._write() as conn:
            return conn.execute(
                sa.delete(connector_secrets).where(
                    connector_secrets.c.system == system,
                    connector_secrets.c.account == account,
                )
            ).rowcount

    @contextlib.contextmanager
    def secret_exchange(
        self, system: str, account: str, *, wait: timedelta = LOCK_WAIT
    ) -> Iterator[SecretSlot]:
        """Hold the account's secret exclusively, across instances, for one exchange.

        The slot has the current value (None if nothing is stored); a value staged on
        it is stored when the block ends without an error, and nothing is stored when
        an error leaves the block. Raises StoreUnavailable when another holder keeps it
        longer than `wait`, WrongMasterKey when the stored value does not open.
        """
        if self._dialect == "postgresql":
            with self._write() as conn:
                self._advisory_lock(conn, system, account, wait)
                slot = self._slot(conn, system, account)
                yield slot
                if slot.staged is not None:
                    self._put_secret(conn, slot)
            return
        with _exclusive_file(self._secret_lock_path(system, account), wait, f"{system} {account}"):
            with self._read() as conn:
                slot = self._slot(conn, system, account)
            yield slot
            if slot.staged is not None:
                with self._write() as conn:
                    self._put_secret(conn, slot)

    def _advisory_lock(self, conn: Connection, system: str, account: str, wait: timedelta) -> None:
        timeout = f"{max(1, round(wait.total_seconds() * 1000))}ms"
        conn.execute(sa.select(sa.func.set_config("lock_timeout", timeout, True)))
        key = _lock_key(system, account)
        try:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_SPACE, key)))
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_TIMEOUT_SQLSTATE:
                raise
            raise StoreUnavailable(
                f"another exchange of {system} {account} has held its secret for over "
                f"{wait.total_seconds():g} s"
            ) from None

    def _slot(self, conn: Connection, system: str, account: str) -> SecretSlot:
        row = conn.execute(
            sa.select(connector_secrets.c.value, connector_secrets.c.version).where(
                connector_secrets.c.system == system, connector_secrets.c.account == account
            )
        ).first()
        if row is None:
            return SecretSlot(system=system, account=account, value=None, version=0)
        return SecretSlot(
            system=system,
            account=account,
            value=self._open_secret(system, account, row.value),
            version=row.version,
        )

    def _put_secret(self, conn: Connection, slot: SecretSlot) -> None:
        assert slot.staged is not None
        stmt = self._upsert(connector_secrets).values(
            system=slot.system,
            account=slot.account,
            value=crypto.encrypt(
                self._master_key, slot.staged, context=_context(slot.system, slot.account)
            ),
            version=slot.version + 1,
            updated_at=utcnow(),
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[connector_secrets.c.system, connector_secrets.c.account],
                set_={
                    "value": stmt.excluded.value,
                    "version": stmt.excluded.version,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        )

    def _open_secret(self, system: str, account: str, blob: bytes) -> str:
        try:
            return crypto.decrypt(
                self._master_key, blob, context=_context(system, account)
            ).decode()
        except crypto.CryptoError:
            raise WrongMasterKey(
                f"the master key does not open the secret of {system} {account} "
                "(another master key, or a damaged row)"
            ) from None

    def _secret_lock_path(self, system: str, account: str) -> Path:
        """SQLite: the account's lock file, next to the database (and its -wal, -shm)."""
        database = self._live_engine().url.database or ""
        if database.startswith("file:"):  # a URI filename (?uri=true)
            database = database.removeprefix("file:").partition("?")[0]
        digest = hashlib.sha256(f"{system}\x00{account}".encode()).hexdigest()[:24]
        return Path(f"{database}.secret-{digest}.lock")


@contextlib.contextmanager
def _exclusive_file(path: Path, wait: timedelta, what: str) -> Iterator[None]:
    """An exclusive flock on `path`, held while the block runs.

    flock belongs to the open file, so two holders in one process exclude each other
    like two processes do; the lock goes when the file is closed, or the process dies.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait.total_seconds()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"another exchange of {what} has held its secret for over "
                        f"{wait.total_seconds():g} s"
                    ) from None
                time.sleep(_POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
