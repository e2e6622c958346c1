"""Run events found by time: `pdsync log --since`, the dashboard's incidents, without
reading every event kept (issue 15: a year of history).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_run_events_ts", "run_events", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_run_events_ts", table_name="run_events")
