"""The Store: everything the daemon keeps, on SQLite (embedded) or PostgreSQL.

One class, assembled from one mixin per concern (keys.py, directory.py, runs.py,
casework.py, decisions.py, journal.py, ledger.py, erasures.py, tokens.py, audit.py,
work.py, secrets.py, history.py); each public method is one short transaction, but for
`secret_exchange`, which spans one exchange with an outside system. It holds no
plaintext personal data: links, versions, keyed fingerprints, ids, counts, the ledger,
blobs encrypted with the customer's key (which itself is wrapped with the master key),
and connector secrets encrypted with the master key.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa

from daemon.crypto import KEY_BYTES
from daemon.store import _db
from daemon.store.audit import AuditMixin
from daemon.store.casework import CaseworkMixin
from daemon.store.decisions import DecisionsMixin
from daemon.store.directory import DirectoryMixin
from daemon.store.erasures import ErasuresMixin
from daemon.store.errors import StoreError, WrongMasterKey
from daemon.store.history import HistoryMixin
from daemon.store.journal import JournalMixin
from daemon.store.ledger import LedgerMixin
from daemon.store.rows import Counts, DisputeStatus, JournalStatus, TaskStatus
from daemon.store.runs import RunsMixin
from daemon.store.schema import (
    CUSTOMER_TABLES,
    disputes,
    fingerprints,
    link_members,
    links,
    manual_tasks,
    op_journal,
    quarantine,
)
from daemon.store.secrets import SecretsMixin
from daemon.store.tokens import TokensMixin
from daemon.store.work import WorkMixin


class Store(
    DirectoryMixin,
    RunsMixin,
    CaseworkMixin,
    DecisionsMixin,
    JournalMixin,
    LedgerMixin,
    ErasuresMixin,
    TokensMixin,
    AuditMixin,
    WorkMixin,
    SecretsMixin,
    HistoryMixin,
):
    """The daemon's durable state. Open with `Store.open(url, master_key=...)`.

    Thread-safe (one connection pool); several processes may share a PostgreSQL
    database, and SQLite serialises writers. Errors: see daemon.store.errors.
    """

    @classmethod
    def open(
        cls,
        url: str,
        *,
        master_key: bytes,
        finishing_rekey: bool = False,
        instance_id: str | None = None,
    ) -> Store:
        """Connect, migrate the database to the newest schema, and check the master key.

        `url`: `sqlite:///path/to/file.db` (created if missing, readable by its owner
        only, as are its -wal and -shm) or `postgresql+psycopg://user@host/db` (the
        database must exist).
        Raises ValueError for a bad URL or key length, WrongMasterKey when the store
        was created with another master key, RekeyInterrupted when a change of master
        key was not finished (`finishing_rekey`: open anyway, to finish it with
        `rekey`), StoreUnavailable when the database cannot be reached, StoreError when
        its schema is newer than this code. `instance_id` names this process in runs,
        work items and heartbeats (at most 64 characters; default: a new UUID).
        """
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"the master key must be {KEY_BYTES} bytes")
        _create_private(url)
        engine = _db.make_engine(url)
        try:
            _db.migrate(engine)
            store = cls(engine, master_key=master_key, instance_id=instance_id or str(uuid.uuid4()))
            try:
                store._check_master_key()
            except WrongMasterKey:
                store._refuse_interrupted_rekey(opened=False)
                raise
            if not finishing_rekey:
                store._refuse_interrupted_rekey(opened=True)
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        """Close all connections; the Store cannot be used afterwards. Idempotent."""
        if not self._closed:
            self._close_audit()  # queued API audit records are written first
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    # Bumped whenever a credential stops being valid in this process (a token revoked,
    # a session ended), so the API's credential cache drops what it verified earlier
    # at once rather than after its TTL (daemon/api/auth.py).
    credentials_version = 0

    def revoke_token(self, name: str, *, by: str) -> bool:
        try:
            return super().revoke_token(name, by=by)
        finally:
            self.credentials_version += 1

    def end_session(self, session: str) -> bool:
        try:
            return super().end_session(session)
        finally:
            self.credentials_version += 1

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        return self._engine.url.render_as_string(hide_password=True)

    def purge_customer(self, customer_id: str) -> dict[str, int]:
        """Delete everything the store holds of the customer, and shred its key.

        For the end of a whole-customer erasure, as its last step (nothing of the
        customer can be decrypted afterwards). Returns the rows deleted per table,
        for the certificate. What stays: runs and their events and the ledger (no
        personal data; the ledger proves the erasure), and the destroyed-key marker
        (customer id and timestamps), so that customer_key raises KeyDestroyed instead
        of quietly starting the customer afresh.
        """
        now = _db.utcnow()
        deleted: dict[str, int] = {}
        with self._write() as conn:
            for table, condition in _customer_rows(customer_id):
                deleted[table.name] = conn.execute(sa.delete(table).where(condition)).rowcount
            self._shred_key(conn, customer_id, now)
        self._scrub()
        return deleted

    def customer_rows(self, customer_id: str) -> dict[str, int]:
        """What purge_customer would delete, per table, without deleting it."""
        with self._read() as conn:
            return {
                table.name: int(
                    conn.scalar(sa.select(sa.func.count()).select_from(table).where(condition)) or 0
                )
                for table, condition in _customer_rows(customer_id)
            }

    def counts(self, customer_id: str) -> Counts:
        """Sizes of the customer's state, for status output."""

        def count(table: sa.Table, *conditions: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
            return (
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.customer_id == customer_id, *conditions)
                .scalar_subquery()
            )

        with self._read(snapshot=True) as conn:
            totals = conn.execute(
                sa.select(
                    count(links).label("links"),
                    count(disputes, disputes.c.status == DisputeStatus.OPEN.value).label(
                        "disputes"
                    ),
                    count(manual_tasks, manual_tasks.c.status == TaskStatus.OPEN.value).label(
                        "tasks"
                    ),
                    count(quarantine, quarantine.c.released_at.is_(None)).label("quarantined"),
                    count(op_journal, op_journal.c.status == JournalStatus.PENDING.value).label(
                        "pending"
                    ),
                )
            ).one()
            per_system = conn.execute(
                sa.select(link_members.c.system, sa.func.count())
                .where(link_members.c.customer_id == customer_id)
                .group_by(link_members.c.system)
                .order_by(link_members.c.system)
            ).all()
        return Counts(
            links=totals.links,
            members={system: n for system, n in per_system},
            open_disputes=totals.disputes,
            open_tasks=totals.tasks,
            quarantined=totals.quarantined,
            pending_ops=totals.pending,
        )

    def customer_counts(self, customer_ids: Sequence[str]) -> dict[str, Counts]:
        """`counts` of each customer, in six statements however many customers (the
        dashboard and `GET /api/v1/customers` list hundreds)."""
        wanted = list(dict.fromkeys(customer_ids))

        def per_customer(
            conn: sa.Connection, table: sa.Table, *conditions: sa.ColumnElement[bool]
        ) -> dict[str, int]:
            found: dict[str, int] = {}
            for start in range(0, len(wanted), 500):
                query = (
                    sa.select(table.c.customer_id, sa.func.count())
                    .where(table.c.customer_id.in_(wanted[start : start + 500]), *conditions)
                    .group_by(table.c.customer_id)
                )
                found.update({customer: int(n) for customer, n in conn.execute(query)})
            return found

        with self._read(snapshot=True) as conn:
            linked = per_customer(conn, links)
            disputed = per_customer(conn, disputes, disputes.c.status == DisputeStatus.OPEN.value)
            tasks = per_customer(conn, manual_tasks, manual_tasks.c.status == TaskStatus.OPEN.value)
            held = per_customer(conn, quarantine, quarantine.c.released_at.is_(None))
            pending = per_customer(
                conn, op_journal, op_journal.c.status == JournalStatus.PENDING.value
            )
            members: dict[str, dict[str, int]] = {c: {} for c in wanted}
            for start in range(0, len(wanted), 500):
                for customer, system, n in conn.execute(
                    sa.select(link_members.c.customer_id, link_members.c.system, sa.func.count())
                    .where(link_members.c.customer_id.in_(wanted[start : start + 500]))
                    .group_by(link_members.c.customer_id, link_members.c.system)
                    .order_by(link_members.c.customer_id, link_members.c.system)
                ):
                    members[customer][system] = int(n)
        return {
            c: Counts(
                links=linked.get(c, 0),
                members=members[c],
                open_disputes=disputed.get(c, 0),
                open_tasks=tasks.get(c, 0),
                quarantined=held.get(c, 0),
                pending_ops=pending.get(c, 0),
            )
            for c in wanted
        }


def _create_private(url: str) -> None:
    """Create a new SQLite database file readable by its owner only (0600), whatever the
    umask: SQLite gives the -wal and -shm files it makes the mode of the database file."""
    parsed = sa.make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or parsed.query.get("uri")
        or database
        in (
            "",
            ":memory:",
        )
    ):
        return
    path = Path(database)  # as SQLite opens it
    if path.exists():
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return  # make_engine says what is wrong
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process was first
    except OSError as exc:
        raise StoreError(f"cannot create the store database {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _customer_rows(customer_id: str) -> list[tuple[sa.Table, sa.ColumnElement[bool]]]:
    """Every table holding rows of the customer, with the condition that picks them;
    fingerprints first (they hang off the links)."""
    link_ids = sa.select(links.c.id).where(links.c.customer_id == customer_id)
    return [
        (fingerprints, fingerprints.c.link_id.in_(link_ids)),
        *((table, table.c.customer_id == customer_id) for table in CUSTOMER_TABLES),
    ]
