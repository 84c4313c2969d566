"""Frame positions for native (uncompressed) pixel data: pure arithmetic."""

from __future__ import annotations

from math import ceil

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
    if not isinstance(frame_len, float):
        offsets = pixel.value_offset + np.arange(n, dtype=np.int64) * int(frame_len)
        lengths = np.full(n, int(frame_len), dtype=np.int64)
        return FrameIndex(OffsetTableKind.NATIVE, offsets, lengths)
    # 1-bit data: frames may start inside a byte. Whole-array integer arithmetic
    # on bit positions: a per-frame Python loop took ~4 s (and Python lists of
    # 10^7 ints) for the 10^7 one-pixel frames a 1.25 MB file can declare.
    start_bit = np.arange(n, dtype=np.int64) * spec.pixels_per_frame
    first = start_bit // 8
    last = -(-(start_bit + spec.pixels_per_frame) // 8)  # ceiling division
    return FrameIndex(OffsetTableKind.NATIVE, pixel.value_offset + first, last - first, bit_offsets=start_bit % 8)
