"""Fixtures of tests/pipeline: small multiframes, single-frame series, whole-slide images."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from dcmstream.samples import write_multiframe

from ..image.conftest import write_ct

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def write_wsi(
    path: Path,
    image: np.ndarray,
    tile: int = 64,
    *,
    series_uid: str | None = None,
    j2k: bool = False,
    image_type: str = "VOLUME",
) -> Path:
    """A TILED_FULL whole-slide image of ``image`` (rows, columns[, 3], uint8): frames are
    ``tile x tile`` tiles in row-major order, the last row and column padded with zeros."""
    rows, cols = image.shape[:2]
    samples = 1 if image.ndim == 2 else image.shape[2]
    down, across = -(-rows // tile), -(-cols // tile)
    padded = np.zeros((down * tile, across * tile, *image.shape[2:]), image.dtype)
    padded[:rows, :cols] = image
    tiles = [np.ascontiguousarray(padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])
             for r in range(down) for c in range(across)]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless if j2k else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, sop
    ds.StudyInstanceUID = "1.2.3.99"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "SM", "Slide^Test", "S1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = rows, cols
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfFrames = len(tiles)
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if j2k:
        ds.PixelData = encapsulate([imagecodecs.jpeg2k_encode(t, level=0, reversible=True, codecformat="j2k",
                                                              resolutions=4) for t in tiles])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.stack(tiles).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """Two multiframes (JPEG-LS, HTJ2K) and one 6-slice single-frame series (int16)."""
    root = tmp_path_factory.mktemp("cohort")
    write_multiframe(root / "ct-jls.dcm", frames=12, syntax="jpeg-ls", kind="ct", rows=64, columns=48, seed=1)
    write_multiframe(root / "mr-htj2k.dcm", frames=8, syntax="htj2k-lossless", kind="mr", rows=40, columns=56, seed=2)
    series = root / "series"
    series.mkdir()
    rng = np.random.default_rng(5)
    for k in range(6):
        arr = rng.integers(-1000, 2000, (32, 32)).astype(np.int16)
        write_ct(series / f"slice{k}.dcm", arr, series_uid="1.2.3.4.5", instance_number=6 - k,
                 position=(0.0, 0.0, 2.5 * (6 - k)), RescaleIntercept=0, RescaleSlope=1)
    (root / "notes.txt").write_text("not DICOM")
    return root
