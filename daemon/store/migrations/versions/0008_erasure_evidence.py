"""Erasure evidence: why each item was found, which items an admin included, and how
the plan weighed the subject's identifiers; and how many documents a card took with it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("erasure_requests", sa.Column("strengths", JSON, nullable=True))
    op.add_column("erasure_requests", sa.Column("includes", JSON, nullable=True))
    op.add_column("erasure_requests", sa.Column("card_documents", sa.Integer, nullable=True))
    op.add_column("erasure_items", sa.Column("evidence", JSON, nullable=True))
    op.add_column("erasure_items", sa.Column("included_by", sa.String(200), nullable=True))
    op.add_column("erasure_items", sa.Column("included_at", TS, nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy of erasure_requests
    # would have to drop the table erasure_items refers to.
    for column in ("included_at", "included_by", "evidence"):
        op.drop_column("erasure_items", column)
    for column in ("card_documents", "includes", "strengths"):
        op.drop_column("erasure_requests", column)
