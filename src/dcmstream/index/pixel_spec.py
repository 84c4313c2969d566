"""The Image Pixel description of an instance, validated before any pixel is read.

Every size dcmstream allocates for a frame is derived from a :class:`PixelSpec`,
and a spec is only built after its values have been checked against sane ranges,
so an attacker's ``Rows`` of 65535 x ``Columns`` of 65535 x 10^6 frames never turns
into an allocation before the data has been found to exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..errors import DicomFormatError

__all__ = ["PixelSpec", "pixel_spec_from_dataset", "dataset_value", "PIXEL_KEYWORDS"]

#: Top-level pixel data elements, by tag.
PIXEL_KEYWORDS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}

_MAX_FRAMES = 10_000_000  # far beyond any real instance; stops absurd claims early


@dataclass(frozen=True)
class PixelSpec:
    """What one frame looks like: geometry, sample layout and bit depth."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int
    pixel_keyword: str = "PixelData"

    @property
    def pixels_per_frame(self) -> int:
        """Number of samples in one frame (rows x columns x samples)."""
        return self.rows * self.columns * self.samples_per_pixel

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of decoded pixels (pydicom's rules, native byte order)."""
        if self.pixel_keyword == "FloatPixelData":
            return np.dtype("float32")
        if self.pixel_keyword == "DoubleFloatPixelData":
            return np.dtype("float64")
        if self.bits_allocated == 1:
            return np.dtype("uint8")
        kind = "ui"[self.pixel_representation]
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one decoded frame: (rows, columns) or (rows, columns, samples)."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def decoded_frame_bytes(self) -> int:
        """Bytes of one decoded frame in memory."""
        return self.pixels_per_frame * self.dtype.itemsize

    def native_frame_length(self) -> float:
        """Bytes of one frame in native (uncompressed) encoding; fractional for 1-bit data."""
        length: float = self.pixels_per_frame
        if self.bits_allocated == 1:
            length = length / 8
            return int(length) if float(length).is_integer() else length
        length *= self.bits_allocated // 8
        if self.photometric_interpretation == "YBR_FULL_422":
            # PS3.3 C.7.6.3.1.2: two luminance samples share one Cb and one Cr
            length = length // 3 * 2
        return int(length)

    def native_total_length(self) -> int:
        """Bytes all frames need in native encoding (without the even-length pad)."""
        return ceil(self.native_frame_length() * self.number_of_frames)


def dataset_value(ds: Dataset, keyword: str, where: str) -> Any:
    """``ds.get(keyword)``, with a value pydicom cannot convert as DicomFormatError.

    pydicom converts an element's raw bytes on first access, and a corrupt element
    (unknown VR, bad length) raises there: NotImplementedError, ValueError, ...
    """
    try:
        return ds.get(keyword, None)
    except Exception as exc:  # noqa: BLE001 - pydicom's converters raise many types
        raise DicomFormatError(f"{where}: {keyword} cannot be read ({type(exc).__name__}: {exc})") from exc


#: Image Pixel attributes whose VR is US: read straight from their raw bytes when they are
#: still raw (two little-endian bytes), which costs a tenth of pydicom's conversion.
_US_TAGS = {
    "Rows": 0x00280010, "Columns": 0x00280011, "SamplesPerPixel": 0x00280002,
    "BitsAllocated": 0x00280100, "BitsStored": 0x00280101, "PixelRepresentation": 0x00280103,
    "PlanarConfiguration": 0x00280006,
}
_NOT_RAW = object()


def _raw_us(ds: Dataset, keyword: str) -> Any:
    tag = _US_TAGS.get(keyword)
    if tag is None:
        return _NOT_RAW
    try:
        elem = ds.get_item(tag, keep_deferred=True)
    except Exception:  # noqa: BLE001 - let the general path report it
        return _NOT_RAW
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.VR == "US" and elem.is_little_endian \
            and isinstance(elem.value, bytes) and len(elem.value) == 2:
        return int.from_bytes(elem.value, "little")
    return _NOT_RAW


def _require_int(ds: Dataset, keyword: str, where: str, default: int | None = None) -> int:
    value = _raw_us(ds, keyword)
    if value is _NOT_RAW:
        value = dataset_value(ds, keyword, where)
    if value is None or value == "":
        if default is not None:
            return default
        raise DicomFormatError(f"{where}: required element {keyword} is missing or empty")
    if isinstance(value, (list, tuple, MultiValue)):
        # A multi-valued US/IS is malformed for these attributes; take the first.
        if not value:
            raise DicomFormatError(f"{where}: {keyword} is empty")
        value = value[0]
    return _to_int(value, keyword, where)


def _to_int(value: Any, keyword: str, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an FL/FD infinity
        raise DicomFormatError(f"{where}: {keyword} is not an integer ({value!r})") from exc
    if isinstance(value, float) and value != number:
        # pydicom reads IS "1.5" as a float (ISfloat); int() would truncate it silently.
        raise DicomFormatError(f"{where}: {keyword} is not an integer ({value!r})")
    return number


def pixel_spec_from_dataset(ds: Dataset, pixel_keyword: str, where: str) -> PixelSpec:
    """Read and check the Image Pixel module of ``ds``.

    ``where`` names the file for messages. Raises :class:`DicomFormatError` for a
    missing attribute, a value outside what DICOM allows, or a combination that
    cannot describe an image.
    """
    rows = _require_int(ds, "Rows", where)
    columns = _require_int(ds, "Columns", where)
    float_data = pixel_keyword != "PixelData"
    samples = _require_int(ds, "SamplesPerPixel", where, default=1)
    float_bits = 32 if pixel_keyword == "FloatPixelData" else 64 if float_data else None
    bits_allocated = _require_int(ds, "BitsAllocated", where, default=float_bits)
    bits_stored = _require_int(ds, "BitsStored", where, default=bits_allocated if float_data else None)
    representation = _require_int(ds, "PixelRepresentation", where, default=0 if float_data else None)
    photometric = str(dataset_value(ds, "PhotometricInterpretation", where) or "").strip().upper()
    if not photometric:
        if samples == 1:
            photometric = "MONOCHROME2"
        else:
            raise DicomFormatError(f"{where}: PhotometricInterpretation is missing")
    planar = _require_int(ds, "PlanarConfiguration", where, default=0) if samples > 1 else 0
    frames_value = dataset_value(ds, "NumberOfFrames", where)
    frames = _to_int(frames_value, "NumberOfFrames", where) if frames_value not in (None, "") else 1
    if frames == 0:
        # pydicom treats an explicit 0 as "one frame" with a warning; so do we.
        frames = 1

    if not (1 <= rows <= 0xFFFF and 1 <= columns <= 0xFFFF):
        raise DicomFormatError(f"{where}: Rows x Columns {rows} x {columns} is outside 1..65535")
    if samples not in (1, 3, 4):
        raise DicomFormatError(f"{where}: SamplesPerPixel {samples} is not 1, 3 or 4")
    if bits_allocated != 1 and (bits_allocated % 8 or not 8 <= bits_allocated <= 64):
        raise DicomFormatError(f"{where}: BitsAllocated {bits_allocated} is not 1 or a multiple of 8 up to 64")
    if not 1 <= bits_stored <= bits_allocated:
        raise DicomFormatError(f"{where}: BitsStored {bits_stored} is not within 1..BitsAllocated ({bits_allocated})")
    if representation not in (0, 1):
        raise DicomFormatError(f"{where}: PixelRepresentation {representation} is not 0 or 1")
    if planar not in (0, 1):
        raise DicomFormatError(f"{where}: PlanarConfiguration {planar} is not 0 or 1")
    if not 1 <= frames <= _MAX_FRAMES:
        raise DicomFormatError(f"{where}: NumberOfFrames {frames} is outside 1..{_MAX_FRAMES}")
    if bits_allocated in (24, 40, 48, 56) and not float_data:
        raise DicomFormatError(f"{where}: BitsAllocated {bits_allocated} has no numpy integer type")

    return PixelSpec(
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=representation,
        photometric_interpretation=photometric,
        planar_configuration=planar,
        number_of_frames=frames,
        pixel_keyword=pixel_keyword,
    )
