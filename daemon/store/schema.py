"""The store's tables (SQLAlchemy Core).

The database is created and changed only by the Alembic migrations in `migrations/`;
this module describes the head revision for queries, and a test checks that the two
agree. No table holds plaintext personal data: ids, versions, keyed fingerprints,
counts, and blobs encrypted with the customer's key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

# Deterministic constraint names, so later migrations can refer to them by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zones and hands back naive values; they were written as UTC, so
    UTC is attached on the way out. Naive values are refused on the way in, because
    their meaning would depend on the host's clock settings.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite makes only an INTEGER PRIMARY KEY an alias of the rowid (autoincrementing).
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

CUSTOMER_ID = sa.String(200)
UUID = sa.String(36)
SYSTEM = sa.String(32)
EXTERNAL_ID = sa.String(512)
FP = sa.String(64)
OPEN_ONLY = sa.text("status = 'open'")

# One row: a value encrypted with the master key, to tell a wrong master key at open.
store_meta = sa.Table(
    "store_meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", CUSTOMER_ID, primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

customer_keys = sa.Table(
    "customer_keys",
    metadata,
    sa.Column(
        "customer_id",
        CUSTOMER_ID,
        sa.ForeignKey("customers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # The 32-byte customer key, AES-GCM under the master key; NULL once destroyed.
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("destroyed_at", UTCDateTime, nullable=True),
    sa.CheckConstraint(
        "(wrapped_key IS NULL) = (destroyed_at IS NOT NULL)", name="key_or_destroyed"
    ),
)

links = sa.Table(
    "links",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Target of link_members' composite foreign key: a member's customer is its link's.
    sa.UniqueConstraint("id", "customer_id"),
)

link_members = sa.Table(
    "link_members",
    metadata,
    sa.Column("link_id", UUID, primary_key=True),
    sa.Column("system", SYSTEM, primary_key=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    sa.Column("external_id", EXTERNAL_ID, nullable=False),
    sa.Column("version", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(
        ["link_id", "customer_id"], ["links.id", "links.customer_id"], ondelete="CASCADE"
    ),
    # A record belongs to at most one link.
    sa.UniqueConstraint("customer_id", "system", "external_id"),
)

fingerprints = sa.Table(
    "fingerprints",
    metadata,
    sa.Column("link_id", UUID, primary_key=True),
    sa.Column("system", SYSTEM, primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
    sa.Column("fp", FP, nullable=False),
    sa.ForeignKeyConstraint(
        ["link_id", "system"],
        ["link_members.link_id", "link_members.system"],
        ondelete="CASCADE",
    ),
)

tombstones = sa.Table(
    "tombstones",
    metadata,
    sa.Column("customer_id", CUSTOMER_ID, primary_key=True),
    sa.Column("fp", FP, primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("customer_id", CUSTOMER_ID, primary_key=True),
    sa.Column("system", SYSTEM, primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("customer_id", CUSTOMER_ID, nullable=True),
    sa.Column("trigger", sa.String(200), nullable=False),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("instance_id", sa.String(64), nullable=False),  # a daemon's, or its worker's
    sa.Column("started_at", UTCDateTime, nullable=False, index=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("summary", JSON, nullable=False),
    # A sync that found nothing to do and had nothing to say (issue 15): at a sync a
    # minute nearly every run; kept for `history.quiet_runs_days`, then only counted.
    sa.Column("quiet", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint(
        "status IN ('running', 'completed', 'failed', 'awaiting_approval', 'interrupted')",
        name="status",
    ),
    sa.Index(None, "customer_id", "started_at"),
    sa.Index(None, "quiet", "started_at"),
)

# Quiet runs pruned, counted per customer, day (UTC, of the start), kind and status: what
# the processing report says of a month of runs after the runs themselves are gone.
run_tallies = sa.Table(
    "run_tallies",
    metadata,
    sa.Column("customer_id", CUSTOMER_ID, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(32), primary_key=True),
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("last_finished", UTCDateTime, nullable=True),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("run_id", UUID, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("customer_id", CUSTOMER_ID, nullable=True),
    sa.Column("system", SYSTEM, nullable=True),
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("detail", JSON, nullable=False),
    sa.CheckConstraint("level IN ('debug', 'info', 'warning', 'error')", name="level"),
    sa.Index(None, "run_id", "id"),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "ts"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    sa.Column("system", SYSTEM, nullable=False),
    sa.Column("external_id", EXTERNAL_ID, nullable=True),
    # What the upsert matches on: "id:<external_id>", or "fp:<keyed fingerprint of the
    # payload>" for records that came without an id (NULLs never conflict in SQL).
    sa.Column("record_key", sa.String(600), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("released_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("customer_id", "system", "record_key"),
)

disputes = sa.Table(
    "disputes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    # No foreign key: a dispute is history and outlives its link.
    sa.Column("link_id", UUID, nullable=False),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("fingerprints", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("resolution", JSON, nullable=True),
    sa.CheckConstraint("status IN ('open', 'resolved')", name="status"),
    # At most one open dispute per link and field; resolved ones accumulate.
    sa.Index(
        "uq_disputes_open",
        "customer_id",
        "link_id",
        "field",
        unique=True,
        sqlite_where=OPEN_ONLY,
        postgresql_where=OPEN_ONLY,
    ),
)

manual_tasks = sa.Table(
    "manual_tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    sa.Column("system", SYSTEM, nullable=False),
    sa.Column("link_id", UUID, nullable=False),
    sa.Column("op_kind", sa.String(16), nullable=False),
    sa.Column("op_fingerprint", FP, nullable=False),
    sa.Column("instruction", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.CheckConstraint("status IN ('open', 'done')", name="status"),
    sa.Index(
        "uq_manual_tasks_open",
        "customer_id",
        "system",
        "link_id",
        "op_kind",
        unique=True,
        sqlite_where=OPEN_ONLY,
        postgresql_where=OPEN_ONLY,
    ),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("max_count", sa.Integer, nullable=False),
    sa.Column("approved_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("consumed_at", UTCDateTime, nullable=True),
    sa.Column("consumed_by_run", UUID, nullable=True),
    sa.CheckConstraint("max_count >= 0", name="max_count"),
    sa.Index(None, "customer_id", "kind", "consumed_at"),
)

op_journal = sa.Table(
    "op_journal",
    metadata,
    sa.Column("op_id", sa.String(64), primary_key=True),
    sa.Column("run_id", UUID, nullable=False),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    sa.Column("link_id", UUID, nullable=False),
    sa.Column("system", SYSTEM, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("external_id", EXTERNAL_ID, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="status"),
    sa.Index(None, "customer_id", "status"),
)

# The tamper-evident ledger (daemon/ledger): append-only, never purged. Rows hold ids,
# counts, field names and fingerprints, never personal data; `payload` is canonical JSON
# text, kept as text because the leaf hash covers its exact bytes.
ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("customer_id", CUSTOMER_ID, nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("leaf_hash", sa.String(64), nullable=False),
    sa.CheckConstraint("seq >= 0", name="seq"),
    sa.Index(None, "customer_id", "seq"),
)

ledger_checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.String(64), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.CheckConstraint("size >= 0", name="size"),
)

# Erasure requests (daemon/erasure.py) and the items located for them. They outlive a
# whole-customer purge like runs do: no personal data (identifiers are encrypted with
# the customer's key and dropped on completion; items are system ids), and they are
# the proof of what was erased.
erasure_requests = sa.Table(
    "erasure_requests",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("customer_id", CUSTOMER_ID, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("deadline", UTCDateTime, nullable=False),
    sa.Column("approved_by", sa.String(200), nullable=True),
    sa.Column("approved_at", UTCDateTime, nullable=True),
    sa.Column("identifiers", sa.LargeBinary, nullable=True),
    sa.Column("masked", JSON, nullable=True),
    sa.Column("plan", JSON, nullable=True),
    sa.Column("outcome", JSON, nullable=True),
    sa.Column("certificate", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    # How the plan weighed the subject's identifiers ([{kind, position, strength}]: no
    # values), so later phases never count an identifier as stronger than it was then.
    sa.Column("strengths", JSON, nullable=True),
    # Items an admin included before the plan existed ([{item, by, at}]), applied by it.
    sa.Column("includes", JSON, nullable=True),
    # The documents a whole-customer erasure deleted with the card (all below it).
    sa.Column("card_documents", sa.Integer, nullable=True),
    sa.CheckConstraint("scope IN ('subject', 'customer')", name="scope"),
    sa.Index(None, "customer_id", "state"),
    sa.Index(None, "state"),
)

erasure_items = sa.Table(
    "erasure_items",
    metadata,
    sa.Column("request_id", UUID, sa.ForeignKey("erasure_requests.id"), nullable=False),
    sa.Column("system", SYSTEM, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("item_id", EXTERNAL_ID, nullable=False),
    sa.Column("scope", sa.String(512), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("done_at", UTCDateTime, nullable=True),
    # Why the item was found: [{kind, position, strength}] of the subject's identifiers
    # it holds (no values); None for a whole-customer erasure.
    sa.Column("evidence", JSON, nullable=True),
    # An ambiguous item an admin decided to erase all the same: who, and when.
    sa.Column("included_by", sa.String(200), nullable=True),
    sa.Column("included_at", UTCDateTime, nullable=True),
    sa.PrimaryKeyConstraint("request_id", "system", "kind", "item_id"),
    sa.Index(None, "request_id", "status"),
)

# Bearer tokens of the admin API (daemon/api): only a keyed hash of each token is kept
# (HMAC-SHA256 with a per-store pepper, itself encrypted in store_meta). A name is unique
# among the tokens not revoked; revoked ones stay, so the audit log keeps its meaning.
ACTIVE_ONLY = sa.text("revoked_at IS NULL")

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
    sa.CheckConstraint("role IN ('admin', 'operator', 'auditor')", name="role"),
    sa.Index(
        "uq_api_tokens_active_name",
        "name",
        unique=True,
        sqlite_where=ACTIVE_ONLY,
        postgresql_where=ACTIVE_ONLY,
    ),
)

# Dashboard sign-ins: the cookie holds a random session id, the store only its keyed
# hash, the token it stands for (revoking the token ends it) and when it expires.
api_sessions = sa.Table(
    "api_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_hash", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "token_id",
        sa.Integer,
        sa.ForeignKey("api_tokens.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# Every call to the admin API: who (token name and role), what (method and the route's
# path template, never the raw path or query, which may carry personal data), and the
# status. Never bodies.
api_audit = sa.Table(
    "api_audit",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("ts", UTCDateTime, nullable=False, index=True),
    sa.Column("token_name", sa.String(64), nullable=True),
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Index(None, "token_name", "id"),
)

# Tables whose rows belong to one customer through a `customer_id` column, children
# first; purge_customer walks them. fingerprints hang off link_members (by link), and
# customers, customer_keys, runs and run_events are left out on purpose (see there), as
# are ledger_entries and erasure_requests/items: the proof of the erasure must outlive
# the customer.
CUSTOMER_TABLES: tuple[sa.Table, ...] = (
    link_members,
    links,
    tombstones,
    cursors,
    quarantine,
    disputes,
    manual_tasks,
    approvals,
    op_journal,
)

# Work shared by several daemons on one PostgreSQL (daemon/store/work.py): at most one
# item of a kind and key is queued or running (the partial unique index), so a
# duplicate trigger does nothing and no customer is synced twice at once.
work_items = sa.Table(
    "work_items",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("enqueued_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # What asked for it: None for the leader's schedules, "api:<token name>:<nonce>" for
    # POST /api/v1/sync (the run it starts carries the same trigger).
    sa.Column("trigger", sa.String(200), nullable=True),
    sa.Index(
        "uq_work_items_active",
        "kind",
        "key",
        unique=True,
        sqlite_where=sa.text("state IN ('queued', 'running')"),
        postgresql_where=sa.text("state IN ('queued', 'running')"),
    ),
    sa.Index(None, "state", "id"),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("is_leader", sa.Boolean, nullable=False),
)

# Secrets a connector must keep between uses and share across instances: Zisson's
# rotating refresh tokens (daemon/store/secrets.py). `value` is AES-GCM under the master
# key, bound to the system and account; `version` counts the values an account has had.
connector_secrets = sa.Table(
    "connector_secrets",
    metadata,
    sa.Column("system", SYSTEM, primary_key=True),
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("version > 0", name="version"),
)
