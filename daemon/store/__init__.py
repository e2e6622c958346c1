"""The daemon's store: links, fingerprints, runs and casework on SQLite or PostgreSQL.

from daemon.store import Store
with Store.open("sqlite:///var/lib/pdsync/store.db", master_key=key) as store:
    state = store.load_state("acme")
"""

from __future__ import annotations

from daemon.store.audit import AuditRow
from daemon.store.errors import (
    DuplicateMember,
    KeyDestroyed,
    NotFound,
    RekeyInterrupted,
    StoreError,
    StoreUnavailable,
    WrongMasterKey,
)
from daemon.store.rows import (
    ApprovalRow,
    Counts,
    DisputeRow,
    DisputeStatus,
    ErasureItemRow,
    ErasureRow,
    ErasureState,
    EventLevel,
    EventRow,
    InstanceRow,
    JournalRow,
    JournalStatus,
    QuarantineRow,
    RunRow,
    RunStatus,
    TaskRow,
    TaskStatus,
    WorkItem,
)
from daemon.store.secrets import ConnectorSecret
from daemon.store.store import Store
from daemon.store.tokens import Role, TokenNameTaken, TokenRow

__all__ = [
    "ApprovalRow",
    "AuditRow",
    "ConnectorSecret",
    "Counts",
    "DisputeRow",
    "DisputeStatus",
    "DuplicateMember",
    "ErasureItemRow",
    "ErasureRow",
    "ErasureState",
    "EventLevel",
    "EventRow",
    "InstanceRow",
    "JournalRow",
    "JournalStatus",
    "KeyDestroyed",
    "NotFound",
    "QuarantineRow",
    "RekeyInterrupted",
    "Role",
    "RunRow",
    "RunStatus",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TaskRow",
    "TaskStatus",
    "TokenNameTaken",
    "TokenRow",
    "WorkItem",
    "WrongMasterKey",
]
