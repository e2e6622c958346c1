"""A run's instance id takes a worker process's: the daemon's id and the worker's pid
(daemon/worker.py), up to 64 characters like work_items.claimed_by and instances.id.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

Written out by hand, like 0001. On SQLite (which does not enforce the length) alembic's
batch mode copies the runs table once, so that the schema reads as schema.py's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.alter_column(
            "instance_id", type_=sa.String(64), existing_type=sa.String(36), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.alter_column(
            "instance_id", type_=sa.String(36), existing_type=sa.String(64), existing_nullable=False
        )
