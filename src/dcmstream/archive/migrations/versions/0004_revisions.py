"""Row revisions: a catalog-wide change counter, stamped on every instance row that changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Why: ``Catalog.version`` keys caches that other processes must not keep stale (the web's
series metadata). (count, max ``seq``) changed on add and remove only; a blob swap (the
compression policy's ``replace_blob``, a lifecycle ``switch_move``) changes a row's
transfer syntax, DICOM JSON or tier without changing either. Every writing transaction
now takes the next value of ``catalog_revision`` (one row, updated as the transaction's
last statement, so values are in commit order on PostgreSQL too) and stamps it on the
instance row it added or changed; (count, max ``revision``) then changes on every change.
Rows from before get 0 (nothing is stale about them yet).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"))
    counter = op.create_table(
        "catalog_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("catalog_revision")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("revision")
