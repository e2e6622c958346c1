"""Erasure requests and their located items.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("deadline", TS, nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("approved_at", TS, nullable=True),
        sa.Column("identifiers", sa.LargeBinary, nullable=True),
        sa.Column("masked", JSON, nullable=True),
        sa.Column("plan", JSON, nullable=True),
        sa.Column("outcome", JSON, nullable=True),
        sa.Column("certificate", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_erasure_requests"),
        sa.CheckConstraint("scope IN ('subject', 'customer')", name="ck_erasure_requests_scope"),
    )
    op.create_index(
        "ix_erasure_requests_customer_id_state", "erasure_requests", ["customer_id", "state"]
    )
    op.create_index("ix_erasure_requests_state", "erasure_requests", ["state"])
    op.create_table(
        "erasure_items",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("system", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("item_id", sa.String(512), nullable=False),
        sa.Column("scope", sa.String(512), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("request_id", "system", "kind", "item_id", name="pk_erasure_items"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["erasure_requests.id"],
            name="fk_erasure_items_request_id_erasure_requests",
        ),
    )
    op.create_index("ix_erasure_items_request_id_status", "erasure_items", ["request_id", "status"])


def downgrade() -> None:
    op.drop_table("erasure_items")
    op.drop_table("erasure_requests")
