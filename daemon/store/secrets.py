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

Changing the master key (`rekey`) re-wraps every customer key, connector secret and the
API token pepper, one row per transaction, and resumes where a crash left it: a row is
always under the old key or the new one, and a marker in store_meta, encrypted with the
new key, says a change is under way. Only the last step makes the new key the store's
key; until then the store opens with neither (RekeyInterrupted), so no instance writes
under the old key behind the change.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon import crypto
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import RekeyInterrupted, StoreError, StoreUnavailable, WrongMasterKey
from daemon.store.keys import _CHECK_CONTEXT, _CHECK_NAME, _CHECK_PLAINTEXT, _wrap_context
from daemon.store.schema import connector_secrets, customer_keys, store_meta
from daemon.store.tokens import _PEPPER_CONTEXT, _PEPPER_NAME

# How long an exchange waits for another exchange of the same account (one HTTP call).
LOCK_WAIT = timedelta(seconds=120)
# The first key of pg_advisory_xact_lock(int, int) for secrets ("pdsv"); the second is
# derived from the account. The two-key form never meets the one-key locks (leader,
# migrations).
_LOCK_SPACE = 0x70647376
_LOCK_TIMEOUT_SQLSTATE = "55P03"
_POLL = 0.01


# store_meta row marking a master key change under way (encrypted with the new key).
_NEXT_NAME = "master_key_next"
_NEXT_CONTEXT = "pdsync/store/master-key-next"
_SELECT_NEXT = sa.select(store_meta.c.value).where(store_meta.c.name == _NEXT_NAME)


@dataclass(frozen=True, kw_only=True, slots=True)
class RekeyResult:
    """What a master key change re-wrapped (rows already under the new key not counted)."""

    customer_keys: int
    connector_secrets: int
    meta: int
    resumed: bool


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

    def rekey(self, new_master_key: bytes) -> RekeyResult:
        """Re-wrap everything under `new_master_key`; the store's key from then on.

        The store must be open with the current master key (Store.open with
        `finishing_rekey=True` when an earlier change was interrupted). Resumable: a
        crash leaves every row under one of the two keys, and calling it again with the
        same new key finishes the change. Stop the daemons first: they refuse to open
        the store until it is done. Raises ValueError for a key of the wrong length or
        the key in use, RekeyInterrupted when an interrupted change was to another key,
        WrongMasterKey for a row neither key opens.
        """
        if len(new_master_key) != crypto.KEY_BYTES:
            raise ValueError(f"the new master key must be {crypto.KEY_BYTES} bytes")
        if new_master_key == self._master_key:
            raise ValueError("the new master key is the one in use")
        old, new = self._master_key, new_master_key
        resumed = self._mark_rekey(new)
        counts = {"customer_keys": 0, "connector_secrets": 0, "meta": 0}
        with self._read() as conn:
            customers = conn.scalars(
                sa.select(customer_keys.c.customer_id)
                .where(customer_keys.c.wrapped_key.is_not(None))
                .order_by(customer_keys.c.customer_id)
            ).all()
            accounts = conn.execute(
                sa.select(connector_secrets.c.system, connector_secrets.c.account).order_by(
                    connector_secrets.c.system, connector_secrets.c.account
                )
            ).all()
        for customer_id in customers:
            counts["customer_keys"] += self._rewrap(
                customer_keys,
                customer_keys.c.customer_id == customer_id,
                customer_keys.c.wrapped_key,
                _wrap_context(customer_id),
                f"the key of customer {customer_id!r}",
                old,
                new,
            )
        for system, account in accounts:
            # Held as an exchange holds it, so a token rotating meanwhile is not lost.
            rewrap = functools.partial(
                self._rewrap,
                connector_secrets,
                (connector_secrets.c.system == system) & (connector_secrets.c.account == account),
                connector_secrets.c.value,
                _context(system, account),
                f"the secret of {system} {account}",
                old,
                new,
            )
            if self._dialect == "postgresql":
                counts["connector_secrets"] += rewrap(
                    before=functools.partial(
                        self._advisory_lock, system=system, account=account, wait=LOCK_WAIT
                    )
                )
            else:
                lock = self._secret_lock_path(system, account)
                with _exclusive_file(lock, LOCK_WAIT, f"{system} {account}"):
                    counts["connector_secrets"] += rewrap()
        counts["meta"] += self._rewrap(
            store_meta,
            store_meta.c.name == _PEPPER_NAME,
            store_meta.c.value,
            _PEPPER_CONTEXT,
            "the API token pepper",
            old,
            new,
        )
        with self._write() as conn:  # the last step: the new key becomes the store's
            conn.execute(
                sa.update(store_meta)
                .where(store_meta.c.name == _CHECK_NAME)
                .values(value=crypto.encrypt(new, _CHECK_PLAINTEXT, context=_CHECK_CONTEXT))
            )
            conn.execute(sa.delete(store_meta).where(store_meta.c.name == _NEXT_NAME))
        self._master_key = new
        return RekeyResult(resumed=resumed, **counts)

    def _mark_rekey(self, new: bytes) -> bool:
        """Record that a change to `new` is under way; True when it already was."""
        with self._write() as conn:
            marker = conn.scalar(
                sa.select(store_meta.c.value).where(store_meta.c.name == _NEXT_NAME)
            )
            if marker is not None:
                try:
                    crypto.decrypt(new, marker, context=_NEXT_CONTEXT)
                except crypto.CryptoError:
                    raise RekeyInterrupted(
                        "an earlier master key change to another key was interrupted: "
                        "finish it with that key first"
                    ) from None
                return True
            conn.execute(
                sa.insert(store_meta).values(
                    name=_NEXT_NAME,
                    value=crypto.encrypt(new, _CHECK_PLAINTEXT, context=_NEXT_CONTEXT),
                )
            )
            return False

    def _rewrap(
        self,
        table: sa.Table,
        where: sa.ColumnElement[bool],
        column: sa.Column[bytes],
        context: str,
        what: str,
        old: bytes,
        new: bytes,
        *,
        before: Callable[[Connection], object] | None = None,
    ) -> int:
        """Re-wrap one row's blob under `new`, in its own transaction (`before` runs
        first in it); 1 if it was, 0 if it was under `new` already."""
        with self._write() as conn:
            if before is not None:
                before(conn)
            blob = conn.scalar(sa.select(column).where(where))
            if blob is None:
                return 0
            try:
                plain = crypto.decrypt(old, blob, context=context)
            except crypto.CryptoError:
                try:
                    crypto.decrypt(new, blob, context=context)
                except crypto.CryptoError:
                    raise WrongMasterKey(
                        f"neither master key opens {what} (a damaged row?)"
                    ) from None
                return 0  # done before an interruption
            conn.execute(
                sa.update(table)
                .where(where)
                .values({column.name: crypto.encrypt(new, plain, context=context)})
            )
            return 1

    def rekey_interrupted(self) -> bool:
        """Whether a master key change was started and not finished."""
        with self._read() as conn:
            name = conn.scalar(sa.select(store_meta.c.name).where(store_meta.c.name == _NEXT_NAME))
        return name is not None

    def _refuse_interrupted_rekey(self, *, opened: bool) -> None:
        """Raise RekeyInterrupted when a master key change is under way. `opened`: the
        key given opened the store (the old key), else it may be the new one."""
        with self._read() as conn:
            marker = conn.scalar(
                sa.select(store_meta.c.value).where(store_meta.c.name == _NEXT_NAME)
            )
        if marker is None:
            return
        if opened:
            raise RekeyInterrupted(
                "a master key change was interrupted: run `pdsync store rekey` again with "
                "the same new key to finish it"
            )
        try:
            crypto.decrypt(self._master_key, marker, context=_NEXT_CONTEXT)
        except crypto.CryptoError:
            return  # neither key: the caller's WrongMasterKey stands
        raise RekeyInterrupted(
            "the store is being moved to this master key, but the change was interrupted: "
            "run `pdsync store rekey` with the old key in the config to finish it"
        )

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
