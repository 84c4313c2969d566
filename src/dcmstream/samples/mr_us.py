"""What the MR (Multi-frame Grayscale Word Secondary Capture) and ultrasound (Ultrasound
Multi-frame) samples add to the common header."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .common import SLICE_SPACING_MM

__all__ = ["add_secondary_capture", "add_ultrasound"]

_US_FRAME_TIME_MS = 33.3


def add_secondary_capture(ds: Dataset, *, frames: int) -> None:
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    # An unpaired body part: Laterality (type 2C) is then absent rather than empty.
    ds.BodyPartExamined = "HEAD"
    # No Image Orientation (Patient) in an SC image: rows run to the patient's left,
    # columns to posterior, as in an axial slice seen from the feet.
    ds.PatientOrientation = ["L", "P"]
    if ds.PhotometricInterpretation == "MONOCHROME2":
        # Required then (1C). The IOD allows no MONOCHROME1: that override stays invalid.
        ds.PresentationLUTShape = "IDENTITY"
    ds.FrameIncrementPointer = Tag("SliceLocationVector")
    ds.SliceLocationVector = [round(-n * SLICE_SPACING_MM, 3) for n in range(frames)]


def add_ultrasound(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.BodyPartExamined = "ABDOMEN"  # unpaired: no Laterality (type 2C)
    ds.PatientOrientation = ""  # type 2C: a probe's orientation is not a patient direction
    ds.FrameTime = _US_FRAME_TIME_MS
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.CineRate = round(1000 / _US_FRAME_TIME_MS)
