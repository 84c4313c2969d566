"""Fixtures of tests/image: small files written with pydicom, and the 5/3 wavelet oracle."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct(
    path: Path,
    arr: np.ndarray,
    *,
    series_uid: str,
    study_uid: str = "1.2.3.4",
    instance_number: int | None = None,
    position: tuple[float, float, float] | None = None,
    orientation: tuple[float, ...] | None = (1, 0, 0, 0, 1, 0),
    bits_stored: int | None = None,
    **extra: object,
) -> Path:
    """A minimal CT image file; ``arr`` is (rows, columns) or (frames, rows, columns)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Series", "T1"
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None and position is not None:
        ds.ImageOrientationPatient = list(orientation)
    frames = arr.shape[0] if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits_stored or bits, (bits_stored or bits) - 1
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def shuffled_series(tmp_path: Path):
    """Write ``n`` single-frame slices at z = 2.5 * k in shuffled file order.

    Instance Number runs *against* the position, so a sort by position and a
    sort by instance number disagree. Frame k holds the value k everywhere
    (and -1000 in its corner). Returns (folder, series UID).
    """

    def make(n: int = 12, folder: str = "series", rows: int = 16, columns: int = 12, **kw: object) -> tuple[Path, str]:
        out = tmp_path / folder
        out.mkdir(exist_ok=True)
        uid = generate_uid()
        order = list(range(n))
        random.Random(n).shuffle(order)
        for name, k in enumerate(order):
            arr = np.full((rows, columns), k, np.int16)
            arr[0, 0] = -1000
            write_ct(out / f"f{name:03d}.dcm", arr, series_uid=uid, instance_number=n - k, position=(0.0, 0.0, 2.5 * k), **kw)
        return out, uid

    return make


# -- the reversible 5/3 wavelet (ISO 15444-1 F.3.8 / F.4.8), an independent oracle ----------
def _lowpass_53(x: np.ndarray) -> np.ndarray:
    """Low band of one forward reversible 5/3 lifting step along axis 0 (origin 0)."""
    n = x.shape[0]
    if n == 1:
        return x.copy()
    xp = np.pad(x, [(1, 1)] + [(0, 0)] * (x.ndim - 1), mode="reflect")  # whole-sample symmetric
    # high-pass: Y(2m+1) = X(2m+1) - floor((X(2m) + X(2m+2)) / 2), for 2m+1 < n
    count = n // 2
    d = xp[2 : 2 + 2 * count : 2] - (xp[1 : 1 + 2 * count : 2] + xp[3 : 3 + 2 * count : 2]) // 2
    # Y(-1) = Y(1); Y(n) = Y(n-2) when n is odd
    parts = [d[:1], d] + ([d[-1:]] if n % 2 else [])
    dp = np.concatenate(parts)
    even = x[0::2]
    return even + (dp[:-1][: even.shape[0]] + dp[1:][: even.shape[0]] + 2) // 4


def ll_band(arr: np.ndarray, levels: int) -> np.ndarray:
    """The LL band after ``levels`` 2-D reversible 5/3 decompositions (vertical, then horizontal)."""
    out = arr.astype(np.int64)
    for _ in range(levels):
        out = _lowpass_53(out)  # VER_SD: along the columns (axis 0)
        out = np.swapaxes(_lowpass_53(np.swapaxes(out, 0, 1)), 0, 1)  # HOR_SD
    return out


def forward_rct(rgb: np.ndarray) -> np.ndarray:
    """Reversible colour transform (15444-1 G.2): RGB to (Y, Db, Dr)."""
    r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
    return np.stack([(r + 2 * g + b) // 4, b - g, r - g], axis=-1)


def inverse_rct(ycc: np.ndarray) -> np.ndarray:
    y, db, dr = (ycc[..., c] for c in range(3))
    g = y - (db + dr) // 4
    return np.stack([dr + g, g, db + g], axis=-1)
