"""Decoders built on imagecodecs (CharLS, OpenJPH, OpenJPEG, libjpeg-turbo, RLE).

Chosen deliberately: these are the fastest single-thread decoders measured on this
kind of machine (CharLS is ~4x faster than pydicom's default JPEG-LS plugin order)
and they release the GIL, so a thread pool decodes in parallel.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from pydicom.pixels.utils import _get_jpg_parameters, get_j2k_parameters
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
from .base import Decoded, FrameDecoder

__all__ = ["IMAGECODECS_DECODERS"]

_HAVE = importlib.util.find_spec("imagecodecs") is not None
if _HAVE:
    import imagecodecs


def _available() -> bool:
    return _HAVE


def _jpeg(data: bytes, spec: PixelSpec, level: int) -> Decoded:
    """JPEG baseline/extended/lossless through libjpeg-turbo 3 (8, 12 and 16 bit)."""
    if spec.samples_per_pixel == 1:
        return Decoded(imagecodecs.jpeg8_decode(data))
    info = _get_jpg_parameters(data)
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
        arr = imagecodecs.jpeg8_decode(data, colorspace="YCBCR", outcolorspace="RGB")
        return Decoded(arr, photometric="RGB")
    arr = imagecodecs.jpeg8_decode(data, colorspace="RGB", outcolorspace="RGB")
    return Decoded(arr, photometric=photometric if photometric != "YBR_FULL_422" else "RGB")


def _jpegls(data: bytes, spec: PixelSpec, level: int) -> Decoded:
    info = _get_jpg_parameters(data)
    return Decoded(imagecodecs.jpegls_decode(data), precision=info.get("precision"))


def _j2k_params(data: bytes) -> tuple[int | None, bool | None]:
    params = get_j2k_parameters(data)
    return params.get("precision"), params.get("is_signed")


def _j2k_photometric(spec: PixelSpec) -> str | None:
    # The codec undoes the multi-component transform, so YBR_RCT/YBR_ICT come out RGB.
    if spec.photometric_interpretation in ("YBR_RCT", "YBR_ICT"):
        return "RGB"
    return None


def _jpeg2k(data: bytes, spec: PixelSpec, level: int) -> Decoded:
    precision, signed = _j2k_params(data)
    arr = imagecodecs.jpeg2k_decode(data)
    if level:
        # OpenJPEG through imagecodecs exposes no reduce option: decimate.
        step = 1 << level
        arr = np.ascontiguousarray(arr[::step, ::step])
    return Decoded(arr, photometric=_j2k_photometric(spec), precision=precision, signed=signed)


def _htj2k(data: bytes, spec: PixelSpec, level: int) -> Decoded:
    precision, signed = _j2k_params(data)
    try:
        arr = imagecodecs.htj2k_decode(data, skipres=level or None)
    except imagecodecs.Htj2kError:
        # OpenJPH decodes only HT code-blocks; .203 (HTJ2K) may hold classic
        # JPEG 2000 blocks too, which OpenJPEG handles.
        return _jpeg2k(data, spec, level)
    return Decoded(arr, photometric=_j2k_photometric(spec), precision=precision, signed=signed)


def _rle(data: bytes, spec: PixelSpec, level: int) -> Decoded:
    raw = imagecodecs.dicomrle_decode(data, "u1")
    nbytes = spec.bits_allocated // 8 if spec.bits_allocated > 1 else 1
    expected = spec.pixels_per_frame * nbytes
    if len(raw) != expected:
        raise DecodeError(f"RLE frame decodes to {len(raw)} bytes, expected {expected}")
    spp, rows, cols = spec.samples_per_pixel, spec.rows, spec.columns
    # Segments are per sample, most significant byte first (PS3.5 G.2).
    planes = np.frombuffer(raw, np.uint8).reshape(spp, nbytes, rows * cols)
    if nbytes > 1:
        planes = np.ascontiguousarray(planes.transpose(0, 2, 1)).view(f">u{nbytes}")
    arr = planes.reshape(spp, rows, cols)
    arr = arr[0] if spp == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))
    return Decoded(arr.astype(arr.dtype.newbyteorder("=")), photometric=None)


IMAGECODECS_DECODERS = [
    FrameDecoder(
        "imagecodecs.jpeg8",
        frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}),
        _jpeg,
        package="imagecodecs",
        available=_available,
    ),
    FrameDecoder("imagecodecs.jpegls", frozenset({JPEGLSLossless, JPEGLSNearLossless}), _jpegls, "imagecodecs", _available),
    FrameDecoder("imagecodecs.jpeg2k", frozenset({JPEG2000Lossless, JPEG2000}), _jpeg2k, "imagecodecs", _available),
    FrameDecoder(
        "imagecodecs.htj2k",
        frozenset({HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}),
        _htj2k,
        "imagecodecs",
        _available,
        reduces=True,
    ),
    FrameDecoder("imagecodecs.dicomrle", frozenset({RLELossless}), _rle, "imagecodecs", _available),
]
