"""Connector secrets: rotating tokens kept in the store, shared by every instance.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "connector_secrets",
        sa.Column("system", sa.String(32), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("version > 0", name="ck_connector_secrets_version"),
        sa.PrimaryKeyConstraint("system", "account", name="pk_connector_secrets"),
    )


def downgrade() -> None:
    op.drop_table("connector_secrets")
