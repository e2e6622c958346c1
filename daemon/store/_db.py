"""Engines, transactions and migrations: the plumbing every part of the store shares."""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from daemon.store.errors import StoreError, StoreUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# How long a SQLite writer waits for another one before giving up (StoreUnavailable).
SQLITE_BUSY_TIMEOUT_MS = 15_000
# pg_advisory_xact_lock key held while migrating, so instances starting together
# migrate one after the other instead of racing on the DDL ("pdsync" + 1).
_MIGRATION_LOCK_KEY = 0x706473796E630001
# Execution option that makes a transaction take SQLite's write lock at BEGIN.
_WRITE_OPTION = "pdsync_write"

Dialect = Literal["sqlite", "postgresql"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine for `sqlite:///path` or `postgresql+psycopg://...`, set up for the store."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite":
            raise ValueError(f"unsupported SQLite driver {parsed.drivername!r}; use sqlite:///path")
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError(
                "the store needs a SQLite file (sqlite:///path), not a memory database"
            )
        if not parsed.query.get("uri"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise ValueError(f"unsupported driver {parsed.drivername!r}; use postgresql+psycopg://")
        # pre_ping: a pooled connection may have been cut by a failover or idle timeout.
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"unsupported store URL scheme {parsed.drivername!r} (sqlite or postgresql)")


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # The sqlite3 module's own transaction handling skips BEGIN before SELECT and DDL;
    # turn it off and let _sqlite_begin emit BEGIN (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",  # first: the next ones may wait
            "journal_mode = WAL",  # readers do not block the writer, nor it them
            "synchronous = NORMAL",  # durable enough in WAL mode, far fewer fsyncs
            "foreign_keys = ON",  # off by default in SQLite
            "secure_delete = ON",  # deleted content (shredded keys) is zeroed, not left behind
        ):
            _pragma(cursor, pragma)
    finally:
        cursor.close()


def _pragma(cursor: sqlite3.Cursor, pragma: str) -> None:
    """Run a PRAGMA, waiting out "database is locked" as busy_timeout would.

    Switching a new database to WAL needs its exclusive lock, and SQLite answers BUSY at
    once, without its busy handler, while another connection opening the same new file
    holds a lock (daemons or a CLI starting together): retry for the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute(f"PRAGMA {pragma}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock at BEGIN: a deferred transaction that reads and then
    # writes fails at once with SQLITE_BUSY when another writer got there first, whereas
    # BEGIN IMMEDIATE waits its turn (busy_timeout). Readers stay deferred and never wait.
    immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def translated_errors() -> Iterator[None]:
    """Driver errors that mean "try again later" become StoreUnavailable."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise StoreUnavailable(f"the store's database is unavailable: {exc.orig}") from exc


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    with translated_errors(), engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine, *, snapshot: bool = False) -> Iterator[Connection]:
    """A read-only transaction; `snapshot` makes all its statements see one point in time.

    SQLite transactions always do; PostgreSQL's default READ COMMITTED takes a new
    snapshot per statement, so a multi-statement read asks for REPEATABLE READ.
    """
    with translated_errors(), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(
                postgresql_readonly=True,
                **({"isolation_level": "REPEATABLE READ"} if snapshot else {}),
            )
        with conn.begin():
            yield conn


def upsert(dialect: Dialect, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take ON CONFLICT clauses (same API on both backends)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def migrate(engine: Engine) -> None:
    """Bring the database to the newest revision; a no-op when it is there already.

    A database at the newest revision is told apart with one read, without importing
    alembic (and mako, ~10 MB that a long-running daemon would keep for nothing); only
    a database that needs migrating, or whose revision we cannot tell, goes to alembic.
    """
    head = head_revision()
    if head is not None and current_revisions(engine) == (head,):
        return
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    # ConfigParser interpolation would read a % in the path as a variable.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    try:
        with write_transaction(engine) as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            # env.py runs the migrations on this connection, inside this transaction.
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except CommandError as exc:
        raise StoreError(f"cannot migrate the store (is it from a newer pdsync?): {exc}") from exc


_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*[\"']([^\"']+)[\"']\s*$", re.M)
_DOWN_REVISION = re.compile(
    r"^down_revision(?:\s*:[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])\s*$", re.M
)


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision, read from versions/*.py as alembic would find it
    (the one revision nobody names as its down_revision); None when the files are not
    that plain one-line chain (a merge, a tuple), and alembic must decide."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.search(text)
        if not revision and down is None:
            continue  # __init__.py and the like
        if len(revision) != 1 or down is None:
            return None
        revisions.add(revision[0])
        if down.group(1) is not None:
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def current_revisions(engine: Engine) -> tuple[str, ...] | None:
    """The revisions alembic recorded in the database; None when it cannot be read (a
    new database, or one that is unreachable: alembic then says what is wrong)."""
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    except sa.exc.DBAPIError:
        return None


def scrub_sqlite(engine: Engine) -> None:
    """Move the WAL into the database file and truncate it (best effort).

    With secure_delete on, overwritten or deleted content is zeroed in the database file,
    but the previous page versions still sit in the WAL until a checkpoint; this pushes
    them out, so shredded keys do not linger on disk. A reader in another process can
    keep the checkpoint from completing; the next scrub or automatic checkpoint finishes it.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()
