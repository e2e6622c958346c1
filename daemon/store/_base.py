"""State and helpers shared by the parts of the Store (see store.py for the whole)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from daemon.store import _db
from daemon.store.errors import StoreError


class StoreBase:
    """Owns the engine; each public method of the store runs in its own transaction."""

    def __init__(self, engine: Engine, *, master_key: bytes, instance_id: str) -> None:
        self._engine = engine
        self._dialect = cast(_db.Dialect, engine.dialect.name)
        self._master_key = master_key
        self._instance_id = instance_id
        self._closed = False

    @property
    def dialect(self) -> _db.Dialect:
        """The backend: "sqlite" or "postgresql"."""
        return self._dialect

    @property
    def instance_id(self) -> str:
        """This Store object's id, recorded on the runs it starts (see mark_interrupted_runs)."""
        return self._instance_id

    def _live_engine(self) -> Engine:
        if self._closed:
            raise StoreError("the store is closed")
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _db.write_transaction(self._live_engine()) as conn:
            yield conn

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        with _db.read_transaction(self._live_engine(), snapshot=snapshot) as conn:
            yield conn

    def _upsert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        return _db.upsert(self._dialect, table)

    def _scrub(self) -> None:
        """After shredding: push old page versions out of SQLite's WAL (see _db)."""
        if self._dialect == "sqlite":
            with _db.translated_errors():
                _db.scrub_sqlite(self._live_engine())
