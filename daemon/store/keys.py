"""Per-customer keys, wrapped with the master key; and their destruction (crypto-shredding)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon import crypto
from daemon.store._base import StoreBase
from daemon.store._db import utcnow
from daemon.store.errors import KeyDestroyed, NotFound, WrongMasterKey
from daemon.store.schema import customer_keys, customers, store_meta

_CHECK_NAME = "master_key_check"
_CHECK_CONTEXT = "pdsync/store/master-key-check"
_CHECK_PLAINTEXT = b"pdsync store"


def _wrap_context(customer_id: str) -> str:
    # Binding the customer id means a wrapped key copied onto another customer's row
    # does not open.
    return f"pdsync/customer-key/{customer_id}"


class KeysMixin(StoreBase):
    def _check_master_key(self) -> None:
        """Refuse a master key other than the one the store was first opened with."""
        select_check = sa.select(store_meta.c.value).where(store_meta.c.name == _CHECK_NAME)
        with self._read() as conn:
            blob = conn.scalar(select_check)
        if blob is None:  # a new store: this master key is the one from now on
            with self._write() as conn:
                conn.execute(
                    self._upsert(store_meta)
                    .values(
                        name=_CHECK_NAME,
                        value=crypto.encrypt(
                            self._master_key, _CHECK_PLAINTEXT, context=_CHECK_CONTEXT
                        ),
                    )
                    .on_conflict_do_nothing(index_elements=[store_meta.c.name])
                )
                blob = conn.scalar(select_check)  # another instance may have been first
        assert blob is not None
        try:
            crypto.decrypt(self._master_key, blob, context=_CHECK_CONTEXT)
        except crypto.CryptoError:
            raise WrongMasterKey(
                "the master key does not open this store: it was created with another one"
            ) from None

    def customer_key(self, customer_id: str) -> bytes:
        """The customer's 32-byte key for fingerprints and encryption.

        The first call for a customer creates the customer and a random key; callers
        racing on that first call (threads, processes, instances) all get the same key.
        Raises KeyDestroyed once the key was destroyed, and WrongMasterKey when the
        stored key does not open.
        """
        with self._read() as conn:
            key = self._stored_key(conn, customer_id)
        if key is not None:
            return key
        with self._write() as conn:
            return self._ensure_key(conn, customer_id)

    def destroy_customer_key(self, customer_id: str) -> None:
        """Crypto-shred the customer: the wrapped key is erased, for good.

        Idempotent; also works for a customer that never had a key. A marker (customer
        id and timestamps) stays, so customer_key raises KeyDestroyed from now on
        instead of making a new key. On SQLite the old page versions are pushed out
        of the write-ahead log; on PostgreSQL the old row version stays in the heap until
        VACUUM reuses it (it is still encrypted under the master key).
        """
        with self._write() as conn:
            self._shred_key(conn, customer_id, utcnow())
        self._scrub()

    def _stored_key(self, conn: Connection, customer_id: str) -> bytes | None:
        row = conn.execute(
            sa.select(customer_keys.c.wrapped_key).where(customer_keys.c.customer_id == customer_id)
        ).first()
        if row is None:
            return None
        wrapped: bytes | None = row.wrapped_key
        if wrapped is None:
            raise KeyDestroyed(customer_id)
        try:
            return crypto.decrypt(self._master_key, wrapped, context=_wrap_context(customer_id))
        except crypto.CryptoError:
            raise WrongMasterKey(
                f"the master key does not open the key of customer {customer_id!r} "
                "(another master key, or a damaged row)"
            ) from None

    def _existing_key(self, conn: Connection, customer_id: str) -> bytes:
        """The key of a customer that has data encrypted with it (so a key must exist)."""
        key = self._stored_key(conn, customer_id)
        if key is None:
            raise NotFound(f"customer {customer_id!r} has no key")
        return key

    def _ensure_key(self, conn: Connection, customer_id: str) -> bytes:
        """The customer's key, created inside the caller's write transaction if missing."""
        key = self._stored_key(conn, customer_id)
        if key is not None:
            return key
        now = utcnow()
        fresh = crypto.new_key()
        conn.execute(
            self._upsert(customers)
            .values(id=customer_id, created_at=now)
            .on_conflict_do_nothing(index_elements=[customers.c.id])
        )
        # Whoever inserts first wins; everyone else reads the winner's key back below.
        conn.execute(
            self._upsert(customer_keys)
            .values(
                customer_id=customer_id,
                wrapped_key=crypto.encrypt(
                    self._master_key, fresh, context=_wrap_context(customer_id)
                ),
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[customer_keys.c.customer_id])
        )
        key = self._stored_key(conn, customer_id)
        assert key is not None
        return key

    def _shred_key(self, conn: Connection, customer_id: str, now: datetime) -> None:
        conn.execute(
            self._upsert(customers)
            .values(id=customer_id, created_at=now)
            .on_conflict_do_nothing(index_elements=[customers.c.id])
        )
        stmt = self._upsert(customer_keys).values(
            customer_id=customer_id, wrapped_key=None, created_at=now, destroyed_at=now
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[customer_keys.c.customer_id],
                set_={
                    "wrapped_key": None,
                    "destroyed_at": sa.func.coalesce(
                        customer_keys.c.destroyed_at, stmt.excluded.destroyed_at
                    ),
                },
            )
        )
