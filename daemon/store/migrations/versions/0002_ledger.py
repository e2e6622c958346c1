"""The ledger: entries (Merkle tree leaves) and signed checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
CUSTOMER_ID = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("customer_id", CUSTOMER_ID, nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger_entries"),
        sa.CheckConstraint("seq >= 0", name="ck_ledger_entries_seq"),
    )
    op.create_index("ix_ledger_entries_customer_id_seq", "ledger_entries", ["customer_id", "seq"])
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_ledger_checkpoints"),
        sa.CheckConstraint("size >= 0", name="ck_ledger_checkpoints_size"),
    )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_entries")
