"""The catalog's tables as they were before alembic (catalogs from then are stamped with this).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Frozen: the columns are listed here, not taken from ``attributes.py``, so this
revision means the same tables forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STUDY_TEXT = (
    "patient_name", "patient_id", "issuer_of_patient_id", "patient_birth_date", "patient_sex", "study_date",
    "study_time", "accession_number", "study_id", "study_description", "referring_physician_name",
)
_STUDY_INDEXED = ("patient_id", "patient_name", "study_date", "accession_number")


def _value(name: str) -> sa.Column:
    return sa.Column(name, sa.String(256))


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
        *(_value(name) for name in _STUDY_TEXT),
        sa.Column("attrs_json", sa.Text, nullable=False),
    )
    for name in _STUDY_INDEXED:
        op.create_index(f"ix_studies_{name}", "studies", [name])

    op.create_table(
        "series",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("series_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_uid", sa.String(64), sa.ForeignKey("studies.study_uid"), nullable=False),
        _value("modality"),
        sa.Column("series_number", sa.Integer),
        *(_value(name) for name in ("series_description", "series_date", "series_time", "body_part_examined",
                                    "pps_start_date", "pps_start_time")),
        sa.Column("attrs_json", sa.Text, nullable=False),
    )
    op.create_index("ix_series_study_uid", "series", ["study_uid"])
    op.create_index("ix_series_modality", "series", ["modality"])

    op.create_table(
        "instances",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sop_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("series_uid", sa.String(64), sa.ForeignKey("series.series_uid"), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        _value("sop_class_uid"),
        sa.Column("instance_number", sa.Integer),
        sa.Column("rows", sa.Integer),
        sa.Column("columns", sa.Integer),
        sa.Column("number_of_frames", sa.Integer),
        _value("content_date"),
        _value("content_time"),
        sa.Column("transfer_syntax", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(1024), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("attrs_json", sa.Text, nullable=False),
        sa.Column("dataset_json", sa.Text, nullable=False),
        sa.Column("frame_index_json", sa.Text),
        sa.Column("pixel_json", sa.Text),
        sa.Column("ingested_at", sa.Float, nullable=False),
    )
    op.create_index("ix_instances_study_uid", "instances", ["study_uid"])
    op.create_index("ix_instances_series_number", "instances", ["series_uid", "instance_number"])


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_table("series")
    op.drop_table("studies")
