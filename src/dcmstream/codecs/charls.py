"""JPEG-LS encoding at any sample precision through CharLS's C API (ctypes).

Why not imagecodecs or pyjpegls' Python API:

* ``imagecodecs.jpegls_encode`` declares the precision of the array's dtype (8 or 16
  bits). DICOM wants Bits Stored (12-bit CT is coded with P=12, and signed data as its
  two's-complement pattern within Bits Stored so readers can sign-extend).
* pyjpegls' ``encode_buffer`` takes the precision but holds the GIL for the whole
  encode, so two threads encode no faster than one.

CharLS' C functions, called through :mod:`ctypes`, release the GIL (ctypes drops it
around every foreign call), take the precision, and write into a buffer we own. The
library is looked for in pyjpegls' extension module (its wheels link CharLS statically
and export the C API), then on the system (Debian's ``libcharls2``). When neither
loads, :func:`charls_available` is False and callers fall back to pyjpegls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sysconfig
import threading
from collections.abc import Iterator

import numpy as np

from ..errors import DcmstreamError, DecodeError

__all__ = ["charls_available", "charls_library", "encode", "CharlsError"]


class CharlsError(DecodeError):
    """CharLS refused the image or the parameters (its error message says why)."""


class CharlsMemoryError(DcmstreamError, MemoryError):
    """CharLS could not allocate an encoder."""


class _FrameInfo(ctypes.Structure):
    # charls_frame_info (charls/public_types.h)
    _fields_ = [
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("bits_per_sample", ctypes.c_int32),
        ("component_count", ctypes.c_int32),
    ]


#: charls_jpegls_errc::destination_buffer_too_small
_DESTINATION_TOO_SMALL = 3

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_path: str | None = None
_tried = False


def _candidates() -> Iterator[str]:
    """Library files to try, in order, each once; lazily, since ``find_library`` starts a
    subprocess (``ldconfig``) that the first candidates usually make unnecessary."""
    seen: set[str] = set()

    def paths() -> Iterator[str]:
        try:  # pyjpegls' extension: the same CharLS pydicom's JPEG-LS plugin uses
            import importlib.util

            spec = importlib.util.find_spec("_CharLS")
            if spec is not None and spec.origin:
                yield spec.origin
        except (ImportError, ValueError):  # pragma: no cover - broken environment
            pass
        purelib = sysconfig.get_paths().get("platlib") or ""
        yield from sorted(glob.glob(os.path.join(purelib, "_CharLS*.so")))
        yield from ("libcharls.so.2", "libCharLS.so.2")
        for name in ("charls", "CharLS"):
            found = ctypes.util.find_library(name)
            if found:
                yield found

    for path in paths():
        if path not in seen:
            seen.add(path)
            yield path


def _bind(lib: ctypes.CDLL) -> None:
    p, i32, u32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "charls_jpegls_encoder_create": ([], p),
        "charls_jpegls_encoder_destroy": ([p], None),
        "charls_jpegls_encoder_set_frame_info": ([p, ctypes.POINTER(_FrameInfo)], i32),
        "charls_jpegls_encoder_set_near_lossless": ([p, i32], i32),
        "charls_jpegls_encoder_set_interleave_mode": ([p, i32], i32),
        "charls_jpegls_encoder_get_estimated_destination_size": ([p, ctypes.POINTER(size)], i32),
        "charls_jpegls_encoder_set_destination_buffer": ([p, p, size], i32),
        "charls_jpegls_encoder_encode_from_buffer": ([p, p, size, u32], i32),
        "charls_jpegls_encoder_get_bytes_written": ([p, ctypes.POINTER(size)], i32),
        "charls_get_error_message": ([i32], ctypes.c_char_p),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res


def _load() -> ctypes.CDLL | None:
    global _lib, _lib_path, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            for path in _candidates():
                try:
                    lib = ctypes.CDLL(path)
                    _bind(lib)
                except (OSError, AttributeError):
                    continue
                _lib, _lib_path = lib, path
                break
            _tried = True
    return _lib


def charls_available() -> bool:
    """Whether CharLS' C API could be loaded."""
    return _load() is not None


def charls_library() -> str | None:
    """The file CharLS was loaded from (None when unavailable)."""
    _load()
    return _lib_path


def _check(lib: ctypes.CDLL, code: int, what: str) -> None:
    if code:
        message = lib.charls_get_error_message(code)
        text = message.decode("utf-8", "replace") if message else f"error {code}"
        raise CharlsError(f"CharLS {what}: {text}")


def _configured(lib: ctypes.CDLL, info: _FrameInfo, near: int, samples: int) -> int:
    """A new encoder set up for one frame (the caller destroys it)."""
    encoder = lib.charls_jpegls_encoder_create()
    if not encoder:
        raise CharlsMemoryError("CharLS could not create an encoder")
    try:
        _check(lib, lib.charls_jpegls_encoder_set_frame_info(encoder, ctypes.byref(info)), "frame info")
        if near:
            _check(lib, lib.charls_jpegls_encoder_set_near_lossless(encoder, near), "near-lossless")
        if samples > 1:
            _check(lib, lib.charls_jpegls_encoder_set_interleave_mode(encoder, 2), "interleave mode")
    except BaseException:
        lib.charls_jpegls_encoder_destroy(encoder)
        raise
    return encoder


def encode(frame: np.ndarray, bits_stored: int, *, near: int = 0) -> bytes:
    """One JPEG-LS codestream of ``frame`` (rows x columns [x samples], 8- or 16-bit
    unsigned samples below ``2**bits_stored``), precision ``bits_stored``, colour by pixel
    (interleave mode 2, as DICOM stores colour). The GIL is released while CharLS runs."""
    lib = _load()
    if lib is None:
        raise CharlsError("CharLS is not available (install pyjpegls or libcharls2)")
    if frame.ndim not in (2, 3) or frame.dtype not in (np.uint8, np.uint16):
        raise CharlsError(f"cannot encode a {frame.dtype} array of shape {frame.shape}")
    if not 2 <= bits_stored <= 8 * frame.dtype.itemsize:
        raise CharlsError(f"{bits_stored}-bit precision does not fit {frame.dtype} samples")
    data = np.ascontiguousarray(frame)
    rows, columns = data.shape[:2]
    samples = data.shape[2] if data.ndim == 3 else 1
    info = _FrameInfo(columns, rows, bits_stored, samples)
    encoder = _configured(lib, info, near, samples)
    try:
        estimate = ctypes.c_size_t()
        _check(lib, lib.charls_jpegls_encoder_get_estimated_destination_size(encoder, ctypes.byref(estimate)),
               "size estimate")
        stride = columns * samples * data.dtype.itemsize
        # CharLS' estimate covers typical images; noise can code larger (JPEG-LS limits the
        # growth per sample), so a refusal for a small buffer is retried once with room for
        # the worst case.
        for size in (estimate.value, 2 * data.nbytes + 4096):
            out = np.empty(size, np.uint8)  # not zero-filled, unlike create_string_buffer
            _check(lib, lib.charls_jpegls_encoder_set_destination_buffer(encoder, out.ctypes.data, size), "buffer")
            code = lib.charls_jpegls_encoder_encode_from_buffer(encoder, data.ctypes.data, data.nbytes, stride)
            if code != _DESTINATION_TOO_SMALL:
                break
            lib.charls_jpegls_encoder_destroy(encoder)
            encoder = _configured(lib, info, near, samples)
        _check(lib, code, "encode")
        written = ctypes.c_size_t()
        _check(lib, lib.charls_jpegls_encoder_get_bytes_written(encoder, ctypes.byref(written)), "size")
        return out[: written.value].tobytes()
    finally:
        lib.charls_jpegls_encoder_destroy(encoder)
