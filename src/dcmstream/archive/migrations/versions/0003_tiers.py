"""Storage tiers: each instance's tier and last access time, and the journal of tier moves.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``instances.tier`` stays NULL for existing rows: NULL means the archive's first tier
(the one new instances are written to), which is where every blob stored before tiers
is; the migration cannot know that tier's name (it comes from the archive's
configuration), and NULL keeps renaming the first tier free. ``last_access`` is NULL
until the instance is first read (rules then count from ``ingested_at``).
``blob_moves`` is the journal of tier moves in progress (``archive/lifecycle.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _text(length: int) -> sa.String:
    # Binary collation on PostgreSQL, as every text column since 0002.
    collation = "C" if op.get_bind().dialect.name == "postgresql" else None
    return sa.String(length, collation=collation)


def upgrade() -> None:
    op.add_column("instances", sa.Column("tier", _text(64)))
    op.add_column("instances", sa.Column("last_access", sa.Float))
    op.create_index("ix_instances_tier", "instances", ["tier"])
    op.create_table(
        "blob_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sop_uid", _text(64), nullable=False),
        sa.Column("source_tier", _text(64), nullable=False),
        sa.Column("source_key", _text(1024), nullable=False),
        sa.Column("target_tier", _text(64), nullable=False),
        sa.Column("target_key", _text(1024), nullable=False),
        sa.Column("state", _text(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blob_moves")
    op.drop_index("ix_instances_tier", "instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("last_access")
        batch.drop_column("tier")
