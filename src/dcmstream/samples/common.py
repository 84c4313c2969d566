"""Header pieces every sample shares: deterministic UIDs, small dataset builders, equipment.

UIDs are derived deterministically (:func:`make_uid`), so the same call always writes the
same file.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

__all__ = ["FIELD_OF_VIEW_MM", "IMPLEMENTATION_CLASS_UID", "PATIENT_POSITION", "SLICE_SPACING_MM", "add_equipment",
           "code_item", "dataset_item", "make_uid", "one_item_sequence"]

IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["dcmstream", "implementation"])
FIELD_OF_VIEW_MM = 400.0
SLICE_SPACING_MM = 1.0
_DEVICE_SERIAL_NUMBER = "DCMSTREAM-0001"

# The sample generator's own version, not the package's: files stay byte-identical across
# package releases as long as this does not change.
_SOFTWARE_VERSIONS = "dcmstream samples 1"
PATIENT_POSITION = "HFS"  # head first supine: the stack runs head to feet (z decreasing)


def make_uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["dcmstream-samples", *map(str, parts)])


def dataset_item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def one_item_sequence(**elements: object) -> Sequence:
    return Sequence([dataset_item(**elements)])


def code_item(value: str, designator: str, meaning: str) -> Dataset:
    """A Code Sequence Macro item (PS3.3 8.8)."""
    return dataset_item(CodeValue=value, CodingSchemeDesignator=designator, CodeMeaning=meaning)


def add_equipment(ds: Dataset) -> None:
    # Enhanced General Equipment (Enhanced CT) makes all four type 1; harmless elsewhere.
    ds.Manufacturer = "dcmstream"
    ds.ManufacturerModelName = "synthetic sample"
    ds.DeviceSerialNumber = _DEVICE_SERIAL_NUMBER
    ds.SoftwareVersions = _SOFTWARE_VERSIONS
