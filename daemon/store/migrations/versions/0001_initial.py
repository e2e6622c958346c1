"""The store's tables: keys, links, fingerprints, runs, casework, journal.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out by hand (not generated from schema.py) so that this revision stays what it
was when schema.py moves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CUSTOMER_ID = sa.String(200)
UUID = sa.String(36)
SYSTEM = sa.String(32)
EXTERNAL_ID = sa.String(512)
FP = sa.String(64)
OPEN_ONLY = sa.text("status = 'open'")


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_meta"),
    )
    op.create_table(
        "customers",
        sa.Column("id", CUSTOMER_ID, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
    )
    op.create_table(
        "customer_keys",
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("destroyed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_keys"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_customer_keys_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "(wrapped_key IS NULL) = (destroyed_at IS NOT NULL)",
            name="ck_customer_keys_key_or_destroyed",
        ),
    )
    op.create_table(
        "links",
        sa.Column("id", UUID, nullable=False),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_links"),
        sa.UniqueConstraint("id", "customer_id", name="uq_links_id_customer_id"),
    )
    op.create_index("ix_links_customer_id", "links", ["customer_id"])
    op.create_table(
        "link_members",
        sa.Column("link_id", UUID, nullable=False),
        sa.Column("system", SYSTEM, nullable=False),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("external_id", EXTERNAL_ID, nullable=False),
        sa.Column("version", sa.Text, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("link_id", "system", name="pk_link_members"),
        sa.ForeignKeyConstraint(
            ["link_id", "customer_id"],
            ["links.id", "links.customer_id"],
            name="fk_link_members_link_id_links",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "customer_id",
            "system",
            "external_id",
            name="uq_link_members_customer_id_system_external_id",
        ),
    )
    op.create_table(
        "fingerprints",
        sa.Column("link_id", UUID, nullable=False),
        sa.Column("system", SYSTEM, nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("fp", FP, nullable=False),
        sa.PrimaryKeyConstraint("link_id", "system", "field", name="pk_fingerprints"),
        sa.ForeignKeyConstraint(
            ["link_id", "system"],
            ["link_members.link_id", "link_members.system"],
            name="fk_fingerprints_link_id_link_members",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "tombstones",
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("fp", FP, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "fp", name="pk_tombstones"),
    )
    op.create_table(
        "cursors",
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("system", SYSTEM, nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "system", "scope", name="pk_cursors"),
    )
    op.create_table(
        "runs",
        sa.Column("id", UUID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("customer_id", CUSTOMER_ID, nullable=True),
        sa.Column("trigger", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("instance_id", UUID, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("summary", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'awaiting_approval', 'interrupted')",
            name="ck_runs_status",
        ),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_index("ix_runs_customer_id_started_at", "runs", ["customer_id", "started_at"])
    op.create_table(
        "run_events",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("run_id", UUID, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("customer_id", CUSTOMER_ID, nullable=True),
        sa.Column("system", SYSTEM, nullable=True),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_run_events"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_events_run_id_runs", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "level IN ('debug', 'info', 'warning', 'error')", name="ck_run_events_level"
        ),
    )
    op.create_index("ix_run_events_run_id_id", "run_events", ["run_id", "id"])
    op.create_index("ix_run_events_customer_id_ts", "run_events", ["customer_id", "ts"])
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("system", SYSTEM, nullable=False),
        sa.Column("external_id", EXTERNAL_ID, nullable=True),
        sa.Column("record_key", sa.String(600), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("released_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint(
            "customer_id",
            "system",
            "record_key",
            name="uq_quarantine_customer_id_system_record_key",
        ),
    )
    op.create_table(
        "disputes",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("link_id", UUID, nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("fingerprints", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolution", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_disputes"),
        sa.CheckConstraint("status IN ('open', 'resolved')", name="ck_disputes_status"),
    )
    op.create_index(
        "uq_disputes_open",
        "disputes",
        ["customer_id", "link_id", "field"],
        unique=True,
        sqlite_where=OPEN_ONLY,
        postgresql_where=OPEN_ONLY,
    )
    op.create_table(
        "manual_tasks",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("system", SYSTEM, nullable=False),
        sa.Column("link_id", UUID, nullable=False),
        sa.Column("op_kind", sa.String(16), nullable=False),
        sa.Column("op_fingerprint", FP, nullable=False),
        sa.Column("instruction", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_manual_tasks"),
        sa.CheckConstraint("status IN ('open', 'done')", name="ck_manual_tasks_status"),
    )
    op.create_index(
        "uq_manual_tasks_open",
        "manual_tasks",
        ["customer_id", "system", "link_id", "op_kind"],
        unique=True,
        sqlite_where=OPEN_ONLY,
        postgresql_where=OPEN_ONLY,
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("max_count", sa.Integer, nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("consumed_at", TS, nullable=True),
        sa.Column("consumed_by_run", UUID, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
        sa.CheckConstraint("max_count >= 0", name="ck_approvals_max_count"),
    )
    op.create_index(
        "ix_approvals_customer_id_kind_consumed_at",
        "approvals",
        ["customer_id", "kind", "consumed_at"],
    )
    op.create_table(
        "op_journal",
        sa.Column("op_id", sa.String(64), nullable=False),
        sa.Column("run_id", UUID, nullable=False),
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("link_id", UUID, nullable=False),
        sa.Column("system", SYSTEM, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("external_id", EXTERNAL_ID, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("op_id", name="pk_op_journal"),
        sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="ck_op_journal_status"),
    )
    op.create_index("ix_op_journal_customer_id_status", "op_journal", ["customer_id", "status"])


def downgrade() -> None:
    for table in (
        "op_journal",
        "approvals",
        "manual_tasks",
        "disputes",
        "quarantine",
        "run_events",
        "runs",
        "cursors",
        "tombstones",
        "fingerprints",
        "link_members",
        "links",
        "customer_keys",
        "customers",
        "store_meta",
    ):
        op.drop_table(table)
