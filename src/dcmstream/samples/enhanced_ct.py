"""The Enhanced CT Image IOD (PS3.3 A.38) of the CT samples: its shared and per-frame groups.

Every acquisition attribute and frame time is derived from one plausible helical body
protocol, so the numbers agree with one another. The per-frame functional groups are
encoded by hand (:func:`ct_frame_groups`), for speed, and streamed by the writer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import datetime, timedelta

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import ItemTag, Tag
from pydicom.valuerep import format_number_as_ds

from ..compress import Encoding
from .common import (
    FIELD_OF_VIEW_MM,
    PATIENT_POSITION,
    SLICE_SPACING_MM,
    code_item,
    dataset_item,
    make_uid,
    one_item_sequence,
)

__all__ = ["CT_KVP", "add_enhanced_ct", "ct_frame_groups"]

# One plausible helical body protocol (64 x 0.625 mm, pitch 1, 0.5 s rotation, 120 kVp,
# 200 mA) from which every CT acquisition attribute and frame time below is derived, so the
# numbers agree with one another: the table feed is pitch x collimation per rotation, frame
# n starts when the table has advanced n slice spacings.
CT_KVP = 120.0
_CT_TUBE_CURRENT_MA = 200
_CT_REVOLUTION_S = 0.5
_CT_SINGLE_COLLIMATION_MM = 0.625
_CT_TOTAL_COLLIMATION_MM = 40.0
_CT_PITCH = 1.0
_CT_TABLE_FEED_MM = _CT_PITCH * _CT_TOTAL_COLLIMATION_MM  # per rotation
_CT_TABLE_SPEED_MM_S = _CT_TABLE_FEED_MM / _CT_REVOLUTION_S
_CT_FRAME_INTERVAL_US = round(1e6 * SLICE_SPACING_MM / _CT_TABLE_SPEED_MM_S)
_CT_FRAME_DURATION_MS = 1000 * _CT_REVOLUTION_S  # each slice is reconstructed from a rotation
_CT_CTDI_VOL_MGY = 8.0
_CT_ACQUISITION_START = datetime(2024, 1, 15, 12, 0, 0)  # = StudyDate/StudyTime


def add_enhanced_ct(ds: Dataset, *, seed: int, rows: int, columns: int, frames: int,
                     irradiation_event: str) -> None:
    """Enhanced CT Image IOD (PS3.3 A.38) attributes outside the per-frame groups."""
    # Enhanced CT describes geometry in functional groups; the top-level rescale and window
    # above are kept because simple readers look there (dciodvfy warns: Standard Extended).
    ds.ImageType = image_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    _add_image_description(ds)
    ds.PatientPosition = PATIENT_POSITION
    ds.FrameOfReferenceUID = make_uid("frame-of-reference", seed)
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionDateTime = _CT_ACQUISITION_START.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDuration = _ct_acquisition_duration_s(frames)
    ds.AcquisitionContextSequence = Sequence()  # type 2: nothing to say
    ds.ContentQualification = "RESEARCH"
    ds.PresentationLUTShape = "IDENTITY"
    organisation = make_uid("dimension-organisation", seed)
    ds.DimensionOrganizationSequence = one_item_sequence(DimensionOrganizationUID=organisation)
    ds.DimensionIndexSequence = one_item_sequence(
        DimensionOrganizationUID=organisation,
        DimensionIndexPointer=Tag("InStackPositionNumber"),
        FunctionalGroupPointer=Tag("FrameContentSequence"))
    spacing = FIELD_OF_VIEW_MM / max(rows, columns)
    spacing_ds = format_number_as_ds(spacing)  # a float's repr may pass DS's 16 characters
    shared = dataset_item(
        PixelMeasuresSequence=one_item_sequence(PixelSpacing=[spacing_ds, spacing_ds],
                                             SliceThickness=SLICE_SPACING_MM),
        PlaneOrientationSequence=one_item_sequence(ImageOrientationPatient=[1, 0, 0, 0, 1, 0]),
        PixelValueTransformationSequence=one_item_sequence(
            RescaleIntercept=ds.RescaleIntercept, RescaleSlope=1, RescaleType="HU"),
        FrameVOILUTSequence=one_item_sequence(WindowCenter=ds.WindowCenter,
                                           WindowWidth=ds.WindowWidth),
        FrameAnatomySequence=one_item_sequence(
            # The stack cycles thorax -> abdomen: (SCT 416550000) from CID 4030; unpaired.
            AnatomicRegionSequence=Sequence([code_item("416550000", "SCT", "Chest and Abdomen")]),
            FrameLaterality="U"),
        IrradiationEventIdentificationSequence=one_item_sequence(
            IrradiationEventUID=irradiation_event),
        CTImageFrameTypeSequence=Sequence([_ct_frame_type(image_type)]),
    )
    shared.update(_ct_acquisition_groups())
    shared.CTReconstructionSequence = one_item_sequence(
        ReconstructionAlgorithm="FILTER_BACK_PROJ", ConvolutionKernel="STANDARD",
        ConvolutionKernelGroup="SOFT_TISSUE", ReconstructionDiameter=FIELD_OF_VIEW_MM,
        ReconstructionPixelSpacing=[spacing, spacing], ReconstructionAngle=360.0,
        ImageFilter="NONE")
    ds.SharedFunctionalGroupsSequence = Sequence([shared])


def _add_image_description(ds: Dataset) -> None:
    # Common CT/MR Image Description macro, image level (PS3.3 C.8.16.2).
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"


def _ct_frame_type(frame_type: list[str]) -> Dataset:
    """CT Image Frame Type macro item: the image's type and description, for every frame."""
    item = dataset_item(FrameType=list(frame_type))
    _add_image_description(item)
    return item


def _ct_acquisition_groups() -> Dataset:
    """The acquisition macros of the (single, helical, single-energy) protocol above.

    Each is one item: several are only allowed for multi-energy acquisitions. None varies
    from frame to frame, so they all go to the Shared Functional Groups."""
    exposure_ms = 1000 * _CT_REVOLUTION_S
    return dataset_item(
        CTAcquisitionTypeSequence=one_item_sequence(
            AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO"),
        CTAcquisitionDetailsSequence=one_item_sequence(
            RotationDirection="CW", RevolutionTime=_CT_REVOLUTION_S,
            SingleCollimationWidth=_CT_SINGLE_COLLIMATION_MM,
            TotalCollimationWidth=_CT_TOTAL_COLLIMATION_MM, TableHeight=150.0,
            GantryDetectorTilt=0.0, DataCollectionDiameter=500.0),
        CTTableDynamicsSequence=one_item_sequence(
            TableSpeed=_CT_TABLE_SPEED_MM_S, TableFeedPerRotation=_CT_TABLE_FEED_MM,
            SpiralPitchFactor=_CT_PITCH),
        CTGeometrySequence=one_item_sequence(
            DistanceSourceToDetector=1040.0, DistanceSourceToDataCollectionCenter=570.0),
        CTExposureSequence=one_item_sequence(
            ExposureTimeInms=exposure_ms, XRayTubeCurrentInmA=_CT_TUBE_CURRENT_MA,
            ExposureInmAs=_CT_TUBE_CURRENT_MA * exposure_ms / 1000,
            ExposureModulationType="NONE", CTDIvol=_CT_CTDI_VOL_MGY,
            # CTDIvol means nothing without its phantom (CID 4052).
            CTDIPhantomTypeCodeSequence=Sequence([
                code_item("113691", "DCM", "IEC Body Dosimetry Phantom")])),
        CTXRayDetailsSequence=one_item_sequence(
            KVP=CT_KVP, FocalSpots=1.2, FilterType="BUTTERFLY", FilterMaterial="ALUMINUM"),
    )


def _ct_acquisition_duration_s(frames: int) -> float:
    return ((frames - 1) * _CT_FRAME_INTERVAL_US / 1000 + _CT_FRAME_DURATION_MS) / 1000


# Tags of the per-frame functional groups, which are encoded by hand (see ct_frame_groups).
_CT_POSITION_SEQUENCE = 0x00189326
_FRAME_CONTENT_SEQUENCE = 0x00209111
_PLANE_POSITION_SEQUENCE = 0x00209113
_FRAME_ACQUISITION_DATETIME = 0x00189074
_FRAME_REFERENCE_DATETIME = 0x00189151
_FRAME_ACQUISITION_DURATION = 0x00189220
_STACK_ID = 0x00209056
_IN_STACK_POSITION_NUMBER = 0x00209057
_DIMENSION_INDEX_VALUES = 0x00209157
_IMAGE_POSITION_PATIENT = 0x00200032
_TABLE_POSITION = 0x00189327
_DATA_COLLECTION_CENTER_PATIENT = 0x00189313
_RECONSTRUCTION_TARGET_CENTER_PATIENT = 0x00189318


def ct_frame_groups(enc: Encoding, frames: int, rows: int,
                     columns: int) -> Iterator[bytes]:
    """Per-frame functional groups of a head-to-feet axial stack: one encoded item (its
    contents) per frame, with what changes from frame to frame - timing, plane and table
    position; everything else is in the Shared Functional Groups.

    Encoded by hand rather than through pydicom Datasets, which cost ~0.7 ms a frame for
    these three small sequences (more than generating a 512 x 512 frame); this takes a few
    tens of microseconds. Elements are in tag order within each item, as PS3.5 7.1 requires.
    """
    spacing = FIELD_OF_VIEW_MM / max(rows, columns)
    origin = f"{format_number_as_ds(-spacing * columns / 2)}\\" \
             f"{format_number_as_ds(-spacing * rows / 2)}\\"
    fd = struct.Struct(f"{enc.byte_order}d")
    ul = struct.Struct(f"{enc.byte_order}I")
    # Constant elements are encoded once.
    duration = _element(enc, _FRAME_ACQUISITION_DURATION, "FD", fd.pack(_CT_FRAME_DURATION_MS))
    stack_id = _element(enc, _STACK_ID, "SH", b"1")
    interval = timedelta(microseconds=_CT_FRAME_INTERVAL_US)
    # Each frame's data is centred half a rotation after its acquisition starts.
    to_reference = timedelta(milliseconds=_CT_FRAME_DURATION_MS / 2)
    for n in range(frames):
        start = _CT_ACQUISITION_START + n * interval
        z = round(-n * SLICE_SPACING_MM, 3) + 0.0  # + 0.0: no negative zero
        # The image (and reconstruction) centre is the isocentre: x = y = 0.
        centre = fd.pack(0.0) + fd.pack(0.0) + fd.pack(z)
        ct_position = _sequence(enc, _CT_POSITION_SEQUENCE, b"".join((
            _element(enc, _DATA_COLLECTION_CENTER_PATIENT, "FD", centre),
            _element(enc, _RECONSTRUCTION_TARGET_CENTER_PATIENT, "FD", centre),
            _element(enc, _TABLE_POSITION, "FD", fd.pack(z)))))
        index = ul.pack(n + 1)
        frame_content = _sequence(enc, _FRAME_CONTENT_SEQUENCE, b"".join((
            _element(enc, _FRAME_ACQUISITION_DATETIME, "DT", _datetime(start)),
            _element(enc, _FRAME_REFERENCE_DATETIME, "DT", _datetime(start + to_reference)),
            duration, stack_id,
            _element(enc, _IN_STACK_POSITION_NUMBER, "UL", index),
            _element(enc, _DIMENSION_INDEX_VALUES, "UL", index))))
        position = (origin + format_number_as_ds(z)).encode("ascii")
        plane_position = _sequence(enc, _PLANE_POSITION_SEQUENCE,
                                   _element(enc, _IMAGE_POSITION_PATIENT, "DS", position))
        yield ct_position + frame_content + plane_position


def _datetime(moment: datetime) -> bytes:
    return moment.strftime("%Y%m%d%H%M%S.%f").encode("ascii")


def _element(enc: Encoding, tag: int, vr: str, value: bytes) -> bytes:
    """An element of a VR with a 16-bit explicit length (all the per-frame groups use but
    SQ). Text values (DS, DT, SH here) are padded to even length with a space."""
    if len(value) % 2:
        value += b" "
    head = struct.pack(f"{enc.byte_order}HH", tag >> 16, tag & 0xFFFF)
    if enc.implicit:
        return head + struct.pack(f"{enc.byte_order}I", len(value)) + value
    return head + vr.encode("ascii") + struct.pack(f"{enc.byte_order}H", len(value)) + value


def _sequence(enc: Encoding, tag: int, item: bytes) -> bytes:
    """A sequence of one item, both of defined length."""
    return (enc.element_header(tag, "SQ", len(item) + 8)
            + enc.delimiter(ItemTag, len(item)) + item)
