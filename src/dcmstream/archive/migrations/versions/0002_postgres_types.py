"""PostgreSQL: 64-bit instance sizes and binary ("C") collation of the text columns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Why: INTEGER is 32-bit on PostgreSQL (a whole-slide image can exceed 2 GiB; SQLite's
INTEGER is already 64-bit), and the database's default collation (e.g. en_US) orders
and compares text by language rules, which would make QIDO's range matching on times
("101500.5" vs "1015") and the ModalitiesInStudy order differ from SQLite's byte
order. With "C" the text columns compare exactly as on SQLite, and LIKE 'prefix%'
can use their indexes. SQLite needs neither change (types there are affinities).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TEXT_COLUMNS = {
    "studies": {
        "study_uid": 64, "patient_name": 256, "patient_id": 256, "issuer_of_patient_id": 256,
        "patient_birth_date": 256, "patient_sex": 256, "study_date": 256, "study_time": 256,
        "accession_number": 256, "study_id": 256, "study_description": 256, "referring_physician_name": 256,
    },
    "series": {
        "series_uid": 64, "study_uid": 64, "modality": 256, "series_description": 256, "series_date": 256,
        "series_time": 256, "body_part_examined": 256, "pps_start_date": 256, "pps_start_time": 256,
    },
    "instances": {
        "sop_uid": 64, "series_uid": 64, "study_uid": 64, "sop_class_uid": 256, "content_date": 256,
        "content_time": 256, "transfer_syntax": 64, "blob_key": 1024,
    },
}


def _alter(collation: str | None, size_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    clause = f' COLLATE "{collation}"' if collation else ""
    # Foreign keys compare the referencing and referenced columns: change the whole chain
    # in one statement per table, parents first, with the constraints checked at the end.
    for table, columns in _TEXT_COLUMNS.items():
        alters = ", ".join(f'ALTER COLUMN "{name}" TYPE VARCHAR({n}){clause}' for name, n in columns.items())
        op.execute(f"ALTER TABLE {table} {alters}")
    op.execute(f"ALTER TABLE instances ALTER COLUMN size TYPE {size_type}")


def upgrade() -> None:
    _alter("C", "BIGINT")


def downgrade() -> None:
    _alter(None, "INTEGER")
