"""Frames as the transcoder reads, transforms, decodes back and fingerprints them."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..image import Instance
from ..image.frame_reader import codestream_reader
from ..index.pixel_spec import PixelSpec

__all__ = ["FrameTransform", "decode_codestream", "decode_raw", "digest", "raw_frame"]

# (data: any buffer, start value) -> checksum; imagecodecs' stubs name fewer buffer types
# than it accepts (a memoryview of a frame among them).
_Checksum = Callable[[Any, int], int]

try:  # libdeflate's checksums (20-40 GB/s); zlib's give the same values, slower
    from imagecodecs import deflate_adler32, deflate_crc32

    _adler32: _Checksum = deflate_adler32
    _crc32: _Checksum = deflate_crc32
except ImportError:  # pragma: no cover - imagecodecs without libdeflate
    import zlib

    _adler32 = zlib.adler32
    _crc32 = zlib.crc32


def digest(frame: np.ndarray | bytes, pad: bool = False) -> bytes:
    """Length, CRC-32 and Adler-32 of a frame's samples (with shape and dtype) or of a
    codestream (``pad``: followed by one 0x00, as an odd codestream is written).

    What it guards is the step from checked bytes in memory to bytes in the written file:
    a torn or misplaced write, a wrong offset, a storage error. CRC-32 catches every error
    burst up to 32 bits, and a different codestream of the same length passes both sums
    with odds near 2**-64. A cryptographic hash would add nothing against these and cost
    ~0.1 ms per frame (SHA-256 at 1.6 GB/s, twice per frame), 4 % of a 2-job transcode."""
    data: bytes | memoryview
    if isinstance(frame, np.ndarray):
        head = f"{frame.shape}{frame.dtype.str}".encode()
        data = np.ascontiguousarray(frame).data.cast("B")
    else:
        head, data = b"", frame
    crc, adler = _crc32(data, _crc32(head, 0)), _adler32(data, _adler32(head, 1))
    size = len(head) + len(data)
    if pad:
        crc, adler, size = _crc32(b"\0", crc), _adler32(b"\0", adler), size + 1
    return struct.pack("<QII", size, crc, adler)


def raw_frame(inst: Instance, i: int) -> np.ndarray:
    """Frame ``i`` as stored, without the YCbCr -> RGB conversion of :meth:`Instance.frame`
    (8-bit colour only: used to keep native YBR_FULL samples exactly)."""
    return np.array(inst.reader.decode_stored(inst.encoded_frame(i), i), copy=True)


def decode_codestream(data: bytes, syntax: str, spec: PixelSpec) -> np.ndarray:
    """Decode one frame as dcmstream does when it reads the written file."""
    return codestream_reader(syntax, spec).decode(data)


def decode_raw(data: bytes, syntax: str, spec: PixelSpec) -> np.ndarray:
    """Decode one frame without colour conversion (the counterpart of :func:`raw_frame`)."""
    return codestream_reader(syntax, spec).decode_stored(data)


@dataclass(frozen=True)
class FrameTransform:
    """A picklable change applied to every source frame before encoding (hybrid previews:
    block-average downsampling by ``factor``; ``nearest`` for palette indices)."""

    factor: int
    nearest: bool = False

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        f = self.factor
        if f == 1:
            return frame
        rows, cols = frame.shape[0] // f * f, frame.shape[1] // f * f
        cropped = frame[:rows, :cols]
        if self.nearest:
            return np.ascontiguousarray(cropped[::f, ::f])
        shape = (rows // f, f, cols // f, f) + frame.shape[2:]
        mean = cropped.reshape(shape).mean(axis=(1, 3), dtype=np.float64)
        return np.rint(mean).astype(frame.dtype)
