"""Decoders built on imagecodecs (CharLS, OpenJPH, OpenJPEG, libjpeg-turbo, RLE).

Chosen deliberately: these are the fastest single-thread decoders measured on this
kind of machine (CharLS is ~4x faster than pydicom's default JPEG-LS plugin order)
and they release the GIL, so a thread pool decodes in parallel.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.pixels.utils import _get_jpg_parameters
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from ..errors import DecodeError
from ..index.pixel_spec import PixelSpec
from .base import Decoded, FrameDecoder, out_view
from .j2k_levels import (
    codestream_start,
    decode_reduced,
    decomposition_levels,
    is_reversible,
    openjpeg_available,
    sample_dtype,
)
from .unraisable import caught_unraisable

__all__ = ["IMAGECODECS_DECODERS", "openjph_ready"]

_HAVE = importlib.util.find_spec("imagecodecs") is not None
if _HAVE:
    import imagecodecs


def _available() -> bool:
    return _HAVE


def _check_geometry(codec: str, rows: int | None, columns: int | None, samples: int | None, spec: PixelSpec) -> None:
    """Refuse a codestream whose own header disagrees with Rows/Columns/Samples.

    The codecs size their output from the codestream header, not the dataset: a
    300-byte frame claiming 65535 x 65535 would make them allocate gigabytes
    before failing. Such a frame could never pass the shape check after decoding
    anyway, so it is refused before the codec sees it.
    """
    found = (rows, columns, samples)
    expected = (spec.rows, spec.columns, spec.samples_per_pixel)
    if found != expected:
        raise DecodeError(
            f"{codec} codestream header gives rows x columns x samples {found}, the dataset says {expected}"
        )


def _jpg_info(codec: str, data: bytes, spec: PixelSpec) -> dict:
    info = _get_jpg_parameters(data)
    _check_geometry(codec, info.get("height"), info.get("width"), info.get("components"), spec)
    return info


def _into(decode: Callable[..., np.ndarray], data: bytes, out: np.ndarray | None, **kwargs: Any) -> np.ndarray:
    """``decode(data, out=out, **kwargs)``, or without ``out`` when there is none or it does not fit.

    imagecodecs checks ``out`` (shape and sample type) after reading the header and before
    decoding, raising ValueError("invalid out..."): a codestream whose sample type differs
    from what the caller guessed is decoded into fresh memory instead, at the cost of one
    header parse.
    """
    if out is None:
        return decode(data, **kwargs)
    try:
        return decode(data, out=out, **kwargs)
    except ValueError as exc:
        if "out" not in str(exc):
            raise
    return decode(data, **kwargs)


def _jpg_dtype(info: dict) -> np.dtype:
    return np.dtype(np.uint8 if (info.get("precision") or 8) <= 8 else np.uint16)


def _jpeg(data: bytes, spec: PixelSpec, level: int, out: np.ndarray | None = None) -> Decoded:
    """JPEG baseline/extended/lossless through libjpeg-turbo 3 (8, 12 and 16 bit)."""
    info = _jpg_info("JPEG", data, spec)
    into = out_view(out, _jpg_dtype(info))
    if spec.samples_per_pixel == 1:
        return Decoded(_into(imagecodecs.jpeg8_decode, data, into))
    photometric = spec.photometric_interpretation
    # Same colour-space decisions as pydicom (_conform_jpg_colorspace): component
    # ids "RGB"/"rgb" mean no transform; a JFIF marker means YCbCr.
    if info.get("component_ids") in ([82, 71, 66], [114, 103, 98]):
        ybr = False
    elif any(bytes(m).startswith(b"JFIF") for m in info.get("app", {}).values()):
        ybr = True
    else:
        ybr = photometric.startswith("YBR_FULL")
    if ybr:
        # libjpeg-turbo converts YCbCr to RGB itself (fixed point, within +-1 of
        # pydicom's float conversion) - far faster than converting afterwards.
        arr = _into(imagecodecs.jpeg8_decode, data, into, colorspace="YCBCR", outcolorspace="RGB")
        return Decoded(arr, photometric="RGB")
    arr = _into(imagecodecs.jpeg8_decode, data, into, colorspace="RGB", outcolorspace="RGB")
    return Decoded(arr, photometric=photometric if photometric != "YBR_FULL_422" else "RGB")


def _jpegls(data: bytes, spec: PixelSpec, level: int, out: np.ndarray | None = None) -> Decoded:
    info = _jpg_info("JPEG-LS", data, spec)
    arr = _into(imagecodecs.jpegls_decode, data, out_view(out, _jpg_dtype(info)))
    return Decoded(arr, precision=info.get("precision"))


def _j2k_params(data: bytes, spec: PixelSpec) -> tuple[int | None, bool | None]:
    """Check the SIZ geometry (15444-1 A.5.1) and return the first component's precision and sign."""
    start = codestream_start(data)
    if data[start : start + 4] != b"\xff\x4f\xff\x51" or len(data) < start + 43:
        raise DecodeError("JPEG 2000 codestream does not start with SOC and SIZ markers")
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">4L", data, start + 8)
    (csiz,) = struct.unpack_from(">H", data, start + 40)
    _check_geometry("JPEG 2000", ysiz - yosiz, xsiz - xosiz, csiz, spec)
    ssiz = data[start + 42]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def _j2k_photometric(spec: PixelSpec) -> str | None:
    # The codec undoes the multi-component transform, so YBR_RCT/YBR_ICT come out RGB.
    if spec.photometric_interpretation in ("YBR_RCT", "YBR_ICT"):
        return "RGB"
    return None


def _split_level(data: bytes, level: int) -> tuple[int, int]:
    """(levels the codestream can reduce natively, levels left to decimate)."""
    if not level:
        return 0, 0
    native = min(level, decomposition_levels(data))
    return native, level - native


def _decimate(arr: np.ndarray, levels: int) -> np.ndarray:
    # ceil(ceil(n / 2**a) / 2**b) == ceil(n / 2**(a + b)): shapes agree with a native reduce.
    if not levels:
        return arr
    step = 1 << levels
    return np.ascontiguousarray(arr[::step, ::step])


def _j2k_out(out: np.ndarray | None, precision: int | None, signed: bool | None, rest: int) -> np.ndarray | None:
    # Levels left to decimate make the decoded array larger than ``out``: no use for it.
    if out is None or rest or precision is None:
        return None
    return out_view(out, sample_dtype(precision, bool(signed)))


def _jpeg2k(data: bytes, spec: PixelSpec, level: int, out: np.ndarray | None = None) -> Decoded:
    precision, signed = _j2k_params(data, spec)
    native, rest = _split_level(data, level)
    if native and openjpeg_available():
        # imagecodecs' jpeg2k_decode has no reduce option: OpenJPEG's own
        # resolution factor, through ctypes, decodes only the coarser levels.
        arr, _, _ = decode_reduced(data, native, out=_j2k_out(out, precision, signed, rest))
    else:
        rest = level
        arr = _into(imagecodecs.jpeg2k_decode, data, _j2k_out(out, precision, signed, rest))
    arr = _decimate(arr, rest)
    return Decoded(arr, photometric=_j2k_photometric(spec), precision=precision, signed=signed)


_OJPH_LOCK = threading.Lock()
_ojph_warm = False


def openjph_ready() -> None:
    """Run OpenJPH once (encode and decode a small image) under a lock, before any thread
    uses it (4 ms, once per process).

    Seen here: a corrupt decode ("ojph error") in 2 of about 50 two-thread transcodes,
    both on the very first frames - the signature of state built on first use, not of a
    steady race. With the first use made alone, 20 further runs showed none; should it
    still happen, a transcode's check catches it (see ``compress.transcode``)."""
    global _ojph_warm
    if _ojph_warm:
        return
    with _OJPH_LOCK:
        if not _ojph_warm:
            sample = (np.arange(64 * 64, dtype=np.uint16) * 7 % 4096).reshape(64, 64)
            for rgb in (False, True):
                image = np.dstack([sample] * 3) if rgb else sample
                imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(image, reversible=True, rgb=rgb or None))
            imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(sample, level=0.01, reversible=False))
            _ojph_warm = True


def _htj2k(data: bytes, spec: PixelSpec, level: int, out: np.ndarray | None = None) -> Decoded:
    openjph_ready()
    precision, signed = _j2k_params(data, spec)
    native, rest = _split_level(data, level)
    try:
        with caught_unraisable("imagecodecs._htj2k") as ojph_errors:
            arr = _into(imagecodecs.htj2k_decode, data, _j2k_out(out, precision, signed, rest), skipres=native or None)
    except imagecodecs.Htj2kError:
        # OpenJPH decodes only HT code-blocks; .203 (HTJ2K) may hold classic
        # JPEG 2000 blocks too, which OpenJPEG handles.
        return _jpeg2k(data, spec, level, out)
    if ojph_errors:
        # OpenJPH threw while imagecodecs copied its lines out (a corrupt codestream):
        # the exception could only be printed and ``arr`` is half filled. OpenJPEG
        # decodes it again, and reports the corruption as an error.
        return _jpeg2k(data, spec, level, out)
    if native or not is_reversible(data):
        arr = _htj2k_clip_range(arr, data, native, spec, precision)
    arr = _decimate(arr, rest)
    return Decoded(arr, photometric=_j2k_photometric(spec), precision=precision, signed=signed)


def _htj2k_clip_range(arr: np.ndarray, data: bytes, level: int, spec: PixelSpec, precision: int | None) -> np.ndarray:
    """Bring an OpenJPH decode into the sample range, as OpenJPEG does.

    A reduced frame (the wavelet's low band) and any irreversible (9-7, lossy)
    decode over- and undershoot at sharp edges (e.g. -261 next to air in CT,
    256 in bright 8-bit ultrasound). OpenJPEG clips to the codestream's range;
    OpenJPH wraps around in its unsigned output (-261 -> 65275, 256 -> 0).
    Below the container's width the wrap is undone exactly by reading the
    samples as signed and clipping to Bits Stored; at full width (8 bits in
    uint8, 16 in uint16) it cannot be told apart, so OpenJPEG decodes instead.
    """
    bits = min(precision or spec.bits_stored, spec.bits_stored)
    container = 8 * arr.dtype.itemsize
    if arr.dtype.kind == "i":
        return np.clip(arr, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, out=arr)
    if bits < container:
        signed = arr.view(f"i{arr.dtype.itemsize}")
        np.clip(signed, 0, (1 << bits) - 1, out=signed)
        return arr
    # OpenJPEG decodes again, over the wrapped samples (so into the same memory).
    if level == 0:
        return _into(imagecodecs.jpeg2k_decode, data, arr)
    if openjpeg_available():
        return decode_reduced(data, level, out=arr)[0]
    return arr


_RLE_HEADER = struct.Struct("<16L")


def _check_rle_header(data: bytes, segments: int) -> None:
    """Validate the RLE header (PS3.5 G.5) before imagecodecs reads it.

    imagecodecs trusts the segment offsets: one at or beyond 2**31 crashes the
    process (segmentation fault), so every offset must lie within the frame.
    """
    if len(data) < _RLE_HEADER.size:
        raise DecodeError(f"RLE frame of {len(data)} bytes is shorter than its 64-byte header")
    header = _RLE_HEADER.unpack_from(data)
    if header[0] != segments:
        raise DecodeError(f"RLE header declares {header[0]} segments, the dataset implies {segments}")
    offsets = header[1 : 1 + segments]
    bounds = (_RLE_HEADER.size, *offsets, len(data))
    if any(a > b for a, b in zip(bounds, bounds[1:], strict=False)):
        raise DecodeError(f"RLE segment offsets {list(offsets)} are not increasing within the {len(data)}-byte frame")


def _rle(data: bytes, spec: PixelSpec, level: int, out: np.ndarray | None = None) -> Decoded:
    nbytes = spec.bits_allocated // 8 if spec.bits_allocated > 1 else 1
    expected = spec.pixels_per_frame * nbytes
    _check_rle_header(data, spec.samples_per_pixel * nbytes)
    spp, rows, cols = spec.samples_per_pixel, spec.rows, spec.columns
    dtype = np.dtype(f"u{nbytes}")
    into = out_view(out, dtype) if out is not None and out.shape == spec.shape else None
    final = np.empty(spec.shape, dtype) if into is None else into
    direct = spp == 1 and nbytes == 1  # segments are the frame itself
    # Decode into a buffer of the frame's size, so the output never grows with
    # what the run lengths expand to (a longer frame fails instead).
    into_raw = final.reshape(-1) if direct else np.empty(expected, np.uint8)
    raw = imagecodecs.dicomrle_decode(data, "u1", out=into_raw)  # type: ignore[arg-type]  # its stubs omit arrays, which it takes
    if len(raw) != expected:
        raise DecodeError(f"RLE frame decodes to {len(raw)} bytes, expected {expected}")
    if not direct:
        # Segments are per sample, most significant byte first (PS3.5 G.2): one strided
        # copy puts every byte where the native-order frame (rows, columns[, samples]) has it.
        planes = np.frombuffer(raw, np.uint8).reshape(spp, nbytes, rows * cols)
        if sys.byteorder == "little":
            planes = planes[:, ::-1, :]
        final.view(np.uint8).reshape(rows * cols, spp, nbytes)[...] = planes.transpose(2, 0, 1)
    return Decoded(final, photometric=None)


IMAGECODECS_DECODERS = [
    FrameDecoder(
        "imagecodecs.jpeg8",
        frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}),
        _jpeg,
        package="imagecodecs",
        available=_available,
        takes_out=True,
    ),
    FrameDecoder(
        "imagecodecs.jpegls", frozenset({JPEGLSLossless, JPEGLSNearLossless}), _jpegls, "imagecodecs", _available, takes_out=True
    ),
    FrameDecoder(
        "imagecodecs.jpeg2k",
        frozenset({JPEG2000Lossless, JPEG2000}),
        _jpeg2k,
        "imagecodecs",
        _available,
        reduces=True,
        max_level=decomposition_levels,
        takes_out=True,
    ),
    FrameDecoder(
        "imagecodecs.htj2k",
        frozenset({HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}),
        _htj2k,
        "imagecodecs",
        _available,
        reduces=True,
        max_level=decomposition_levels,
        takes_out=True,
    ),
    FrameDecoder("imagecodecs.dicomrle", frozenset({RLELossless}), _rle, "imagecodecs", _available, takes_out=True),
]
