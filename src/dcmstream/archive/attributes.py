"""Which DICOM attributes the catalog indexes, per level, and how they match.

The QIDO-RS matching keys of PS3.18 Table 10.6.1-5 (and a few more that viewers
send) are stored in columns so searches run in SQL; everything else of a study,
series or instance is kept as DICOM JSON for ``includefield``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from ..errors import InvalidArgumentError

__all__ = [
    "Column",
    "COLUMNS",
    "COLUMNS_BY_LEVEL",
    "LEVELS",
    "REQUIRED_STUDY",
    "REQUIRED_SERIES",
    "REQUIRED_INSTANCE",
    "resolve_attribute",
    "column_values",
]

LEVELS = ("study", "series", "instance")


@dataclass(frozen=True)
class Column:
    """One indexed attribute: its keyword, tag, level, VR and column name."""

    keyword: str
    level: str
    name: str
    vr: str

    @property
    def tag(self) -> int:
        return _dictionary_tag(self.keyword)

    @property
    def is_integer(self) -> bool:
        return self.vr in ("IS", "US", "UL", "SL", "SS")


def _dictionary_tag(keyword: str) -> int:
    """The tag of a keyword of the DICOM dictionary (the catalog's columns are all there)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise InvalidArgumentError(f"{keyword!r} is not a DICOM dictionary keyword")
    return tag


def _col(keyword: str, level: str, name: str) -> Column:
    vr = dictionary_VR(_dictionary_tag(keyword))
    return Column(keyword, level, name, "US" if vr == "US or SS" else vr)


COLUMNS: tuple[Column, ...] = (
    # study level (patient attributes live on the study: QIDO has no patient level)
    _col("StudyInstanceUID", "study", "study_uid"),
    _col("PatientName", "study", "patient_name"),
    _col("PatientID", "study", "patient_id"),
    _col("IssuerOfPatientID", "study", "issuer_of_patient_id"),
    _col("PatientBirthDate", "study", "patient_birth_date"),
    _col("PatientSex", "study", "patient_sex"),
    _col("StudyDate", "study", "study_date"),
    _col("StudyTime", "study", "study_time"),
    _col("AccessionNumber", "study", "accession_number"),
    _col("StudyID", "study", "study_id"),
    _col("StudyDescription", "study", "study_description"),
    _col("ReferringPhysicianName", "study", "referring_physician_name"),
    # series level
    _col("SeriesInstanceUID", "series", "series_uid"),
    _col("Modality", "series", "modality"),
    _col("SeriesNumber", "series", "series_number"),
    _col("SeriesDescription", "series", "series_description"),
    _col("SeriesDate", "series", "series_date"),
    _col("SeriesTime", "series", "series_time"),
    _col("BodyPartExamined", "series", "body_part_examined"),
    _col("PerformedProcedureStepStartDate", "series", "pps_start_date"),
    _col("PerformedProcedureStepStartTime", "series", "pps_start_time"),
    # instance level
    _col("SOPInstanceUID", "instance", "sop_uid"),
    _col("SOPClassUID", "instance", "sop_class_uid"),
    _col("InstanceNumber", "instance", "instance_number"),
    _col("Rows", "instance", "rows"),
    _col("Columns", "instance", "columns"),
    _col("NumberOfFrames", "instance", "number_of_frames"),
    _col("ContentDate", "instance", "content_date"),
    _col("ContentTime", "instance", "content_time"),
)

COLUMNS_BY_KEYWORD = {c.keyword: c for c in COLUMNS}
COLUMNS_BY_LEVEL = {level: tuple(c for c in COLUMNS if c.level == level) for level in LEVELS}

#: Attributes computed from the catalog, matchable at study level.
COMPUTED = {"ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
            "NumberOfSeriesRelatedInstances", "SOPClassesInStudy"}

#: PS3.18 Table 10.6.3-3 .. -5: returned for every match (when the value exists).
REQUIRED_STUDY = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyDescription",
)
REQUIRED_SERIES = (
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence", "SeriesDate", "SeriesTime",
)
REQUIRED_INSTANCE = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
)


def resolve_attribute(name: str) -> tuple[int, str] | None:
    """(tag, keyword) for a query key given as keyword or 8-digit hex tag; None if unknown.

    Keywords of private or unknown tags come back as "" (they can be returned by
    ``includefield`` but never matched).
    """
    name = name.strip()
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        tag = int(name, 16)
        return tag, keyword_for_tag(tag) or ""
    known = tag_for_keyword(name)
    if known is None:
        return None
    return known, name


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    # Columns are VARCHAR(256) (PostgreSQL enforces it); the full value stays in the JSON.
    return text[:256] or None


def column_values(ds: Dataset) -> dict[str, Any]:
    """Column name -> value for every indexed attribute present in ``ds``."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        try:
            value = ds.get(column.keyword)
        except Exception:  # noqa: BLE001 - a corrupt value is not indexed
            value = None
        if column.is_integer:
            try:
                out[column.name] = None if value is None or value == "" else int(
                    value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else value
                )
            except (TypeError, ValueError):
                out[column.name] = None
        else:
            out[column.name] = _text(value)
    return out
