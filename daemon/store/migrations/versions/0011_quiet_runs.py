"""Quiet runs: a sync that found nothing to do is marked, kept a short while and then
only counted, per customer and day (issue 15: at a sync a minute, nearly every run is
one, and half a year of them is tens of gigabytes).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

Written out by hand, like 0001. Runs recorded before this revision are not quiet: they
stay for `history.runs_days`, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
CUSTOMER_ID = sa.String(200)


def upgrade() -> None:
    op.add_column("runs", sa.Column("quiet", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_runs_quiet_started_at", "runs", ["quiet", "started_at"])
    op.create_table(
        "run_tallies",
        sa.Column("customer_id", CUSTOMER_ID, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("last_finished", TS, nullable=True),
        sa.PrimaryKeyConstraint("customer_id", "day", "kind", "status", name="pk_run_tallies"),
    )


def downgrade() -> None:
    op.drop_table("run_tallies")
    op.drop_index("ix_runs_quiet_started_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("quiet")
