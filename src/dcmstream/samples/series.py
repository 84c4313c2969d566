"""A series of single-frame CT slices (CT Image Storage): :func:`write_series`."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage
from pydicom.valuerep import format_number_as_ds

from ..errors import InvalidArgumentError, PathExistsError
from .common import PATIENT_POSITION, add_equipment, make_uid
from .enhanced_ct import CT_KVP
from .pixels import CT_INTERCEPT_UNSIGNED, synthetic_frames
from .syntaxes import SYNTAXES, codec_for, layout_for

__all__ = ["write_series"]

def write_series(folder: str | Path, *, files: int, syntax: str = "explicit", seed: int = 0,
                 rows: int = 512, columns: int = 512) -> Path:
    """Write ``files`` single-frame CT slices of one series (CT Image Storage: one Series
    Instance UID, consecutive positions) into ``folder`` and return it.

    The slices are the frames of the synthetic CT stack (12 bits stored, unsigned) in any
    single-frame ``syntax`` of :data:`SYNTAXES` but big-endian and deflated. The folder
    appears whole (written under a temporary name, then renamed); an existing one is an error.
    """
    if syntax not in SYNTAXES or syntax in ("big-endian", "deflated"):
        raise InvalidArgumentError(f"syntax {syntax!r} is not offered for series")
    if files < 1:
        raise InvalidArgumentError("files must be >= 1")
    folder = Path(folder)
    if folder.exists():
        raise PathExistsError(folder)
    layout = layout_for("ct", False)
    codec = codec_for(syntax, layout, None)
    source = synthetic_frames("ct", rows=rows, columns=columns, seed=seed)
    study = make_uid("series-study", seed)
    series = make_uid("series", seed, syntax, rows, columns, files)
    tmp = folder.with_name(f".{folder.name}.part")
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = SYNTAXES[syntax]
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop = make_uid(series, i)
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.PatientName, ds.PatientID = "CT", f"Sample^Series{seed}", f"S{seed}"
        _add_slice_context(ds, seed=seed, series=series)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, -1.25 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.25
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, codec.photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT_UNSIGNED, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        frame = source(i)
        if codec.encode is None:
            ds.PixelData = frame.tobytes()
        else:
            encoded = codec.encode(frame)
            ds.PixelData = encapsulate([encoded])
            ds["PixelData"].VR = "OB"
            if codec.lossy_method is not None:
                ds.LossyImageCompression = "01"
                ds.LossyImageCompressionRatio = format_number_as_ds(frame.nbytes / len(encoded))
                ds.LossyImageCompressionMethod = codec.lossy_method
        ds.save_as(tmp / f"slice-{i:04d}.dcm", implicit_vr=syntax == "implicit",
                   enforce_file_format=True)
    tmp.rename(folder)
    return folder


def _add_slice_context(ds: Dataset, *, seed: int, series: str) -> None:
    """What CT Image Storage (PS3.3 A.3) requires beyond the image itself, the same for
    every slice of the series: the type 2 patient, study, series and equipment attributes
    (possibly empty), the Frame of Reference and the acquisition."""
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID, ds.AccessionNumber = "1", f"SR{seed:08d}"
    ds.SeriesNumber = 1
    ds.PatientPosition = PATIENT_POSITION
    # The stack cycles thorax -> abdomen, an unpaired part: Laterality (2C) is then absent.
    ds.BodyPartExamined = "CHESTABDOMEN"
    ds.FrameOfReferenceUID = make_uid(series, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    add_equipment(ds)
    ds.KVP = CT_KVP
    ds.AcquisitionNumber = 1
