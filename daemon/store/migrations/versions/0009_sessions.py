"""Dashboard sessions kept in the store: the cookie is a session id, not the API token.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_sessions",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_sessions"),
        sa.UniqueConstraint("session_hash", name="uq_api_sessions_session_hash"),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name="fk_api_sessions_token_id_api_tokens",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_api_sessions_token_id", "api_sessions", ["token_id"])
    op.create_index("ix_api_sessions_expires_at", "api_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("api_sessions")
