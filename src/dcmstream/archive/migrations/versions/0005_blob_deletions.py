"""The journal of blob deletions: what a DELETE of studies, series or instances still owes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Why: deleting an instance removes its catalog row and its blob, which live in two systems
that share no transaction. ``Archive.delete`` removes the rows and inserts one row here per
blob in the same catalog transaction, then deletes the blobs, then these rows; a process
killed in between leaves rows here that the next archive opening (or a sweep) finishes
(``archive/deletion.py``). A key listed here is never reused by an ingest while listed.

Row 2 of ``catalog_revision`` counts deletes: other processes read it (at most once a second)
and drop the records they memoised, so none serves a deleted instance from its memory.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _text(length: int) -> sa.String:
    # Binary collation on PostgreSQL, as every text column since 0002.
    collation = "C" if op.get_bind().dialect.name == "postgresql" else None
    return sa.String(length, collation=collation)


def upgrade() -> None:
    op.create_table(
        "blob_deletions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sop_uid", _text(64), nullable=False),
        sa.Column("tier", _text(64), nullable=False),
        sa.Column("blob_key", _text(1024), nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
    )
    op.create_index("ix_blob_deletions_blob_key", "blob_deletions", ["blob_key"])
    counter = sa.table("catalog_revision", sa.column("id", sa.Integer), sa.column("value", sa.BigInteger))
    op.bulk_insert(counter, [{"id": 2, "value": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM catalog_revision WHERE id = 2")
    op.drop_index("ix_blob_deletions_blob_key", "blob_deletions")
    op.drop_table("blob_deletions")
