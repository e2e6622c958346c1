"""What the store raises.

Exception tree (database driver exceptions are translated here, at the boundary)::

    StoreError
    ├── StoreUnavailable      the database cannot be reached or is busy: retry later
    ├── NotFound              the row named by an id is not there
    ├── DuplicateMember       a record is already a member of another link
    ├── WrongMasterKey        the master key does not open this store   (also a CryptoError)
    ├── RekeyInterrupted      a master key change was started and not finished
    └── KeyDestroyed          the customer's key was shredded            (also a CryptoError)

Messages name tables, ids and systems, never personal data.
"""

from __future__ import annotations

from daemon.crypto import CryptoError


class StoreError(Exception):
    """Root of every error the store raises."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, or stayed locked past the busy timeout (retriable)."""


class NotFound(StoreError, LookupError):
    """The row an id names does not exist (or belongs to another customer)."""


class DuplicateMember(StoreError):
    """The record (customer, system, external_id) is already a member of another link.

    A record is linked to at most one contact; re-linking it is a decision (remove the
    old membership first), never a side effect.
    """

    def __init__(self, *, customer_id: str, system: str, external_id: str, link_id: str) -> None:
        super().__init__(
            f"{system} record {external_id!r} of customer {customer_id!r} "
            f"is already a member of link {link_id}"
        )
        self.customer_id = customer_id
        self.system = system
        self.external_id = external_id
        self.link_id = link_id


class WrongMasterKey(StoreError, CryptoError):
    """The master key given does not open the keys in this store."""


class RekeyInterrupted(StoreError):
    """A change of master key was started and not finished: rerun `pdsync store rekey`."""


class KeyDestroyed(StoreError, CryptoError):
    """The customer's key was destroyed (crypto-shredding); nothing of theirs can be read.

    Raised instead of silently creating a fresh key, which would let a sync re-create
    data for a customer that was erased.
    """

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"the key of customer {customer_id!r} was destroyed")
        self.customer_id = customer_id
