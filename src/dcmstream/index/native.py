"""Frame positions for native (uncompressed) pixel data: pure arithmetic."""

from __future__ import annotations

from math import ceil, floor

import numpy as np

from ..errors import DicomFormatError
from .frame_index import FrameIndex, OffsetTableKind
from .header import PixelElement
from .pixel_spec import PixelSpec

__all__ = ["native_frame_index"]


def native_frame_index(pixel: PixelElement, spec: PixelSpec, source_size: int, name: str, strict: bool = True) -> FrameIndex:
    """Compute every frame's byte range from the pixel description.

    The element length and the real file size are both checked before the index
    is trusted; with ``strict=False`` a short file yields an index of the frames
    that are complete instead of an error.
    """
    if pixel.length is None:
        raise DicomFormatError(f"{name}: native pixel data (7FE0,0010) has an undefined length")
    frame_len = spec.native_frame_length()
    available = min(pixel.length, max(0, source_size - pixel.value_offset))
    n = spec.number_of_frames
    complete = int(available // frame_len) if frame_len else 0
    if complete < n:
        where = "the file ends" if available < pixel.length else "the element length is"
        message = (
            f"{name}: pixel data holds {available} bytes ({where} short) but "
            f"{n} frame(s) of {frame_len} bytes need {ceil(frame_len * n)}"
        )
        if strict or complete == 0:
            raise DicomFormatError(message)
        n = complete
    starts = np.arange(n, dtype=np.float64) * frame_len if isinstance(frame_len, float) else None
    if starts is None:
        offsets = pixel.value_offset + np.arange(n, dtype=np.int64) * int(frame_len)
        lengths = np.full(n, int(frame_len), dtype=np.int64)
        return FrameIndex(OffsetTableKind.NATIVE, offsets, lengths)
    # 1-bit data: frames may start inside a byte.
    first = np.array([floor(i * frame_len) for i in range(n)], dtype=np.int64)
    last = np.array([ceil((i + 1) * frame_len) for i in range(n)], dtype=np.int64)
    bits = np.array([(i * spec.pixels_per_frame) % 8 for i in range(n)], dtype=np.int64)
    return FrameIndex(OffsetTableKind.NATIVE, pixel.value_offset + first, last - first, bit_offsets=bits)
