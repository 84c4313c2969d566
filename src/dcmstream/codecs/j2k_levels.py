"""JPEG 2000 resolution levels: how many a codestream has, and decoding fewer of them.

A JPEG 2000 codestream is a wavelet pyramid: with NL decomposition levels it can be
decoded at 1/2**k of its size for any k <= NL, doing only the work of that
resolution (no inverse transform of the finer levels, no decoding of their code
blocks). OpenJPH exposes this as ``htj2k_decode(skipres=k)``; imagecodecs'
``jpeg2k_decode`` (OpenJPEG) does not, so :func:`decode_reduced` calls OpenJPEG's
own ``opj_set_decoded_resolution_factor`` through ctypes, reading the codestream
from memory (no temporary file).

The OpenJPEG shared library is looked for next to imagecodecs (its wheels ship
``imagecodecs.libs/libopenjp2-*.so``) and then on the system (Debian's
``libopenjp2-7``). When neither loads, :func:`openjpeg_available` is False and
callers decode in full and decimate instead.

Output size at level k is ``ceil(rows / 2**k) x ceil(columns / 2**k)`` for a
codestream whose image origin is 0 - the same as OpenJPH's and as
``arr[::2**k, ::2**k]``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import struct
import threading

import numpy as np

from ..errors import DcmstreamError, DecodeError

__all__ = ["codestream_start", "decomposition_levels", "decode_reduced", "openjpeg_available", "openjpeg_library",
           "sample_dtype"]

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


# -- codestream header ---------------------------------------------------------------
class OpenJpegVersionError(DcmstreamError, OSError):
    """The libopenjp2 found is older than 2.3 (an OSError, like a library that fails to load,
    so the caller falls back to the next candidate)."""


def codestream_start(data: bytes) -> int:
    """Offset of the J2K codestream: 0 for a raw one, else the start of the JP2 file's
    jp2c box contents (DecodeError if there is none).

    The one JP2 box walk of dcmstream, bounded: pydicom's ``get_j2k_parameters`` loops
    forever on a box whose length field is 0, which a corrupt frame can contain.
    """
    if not data.startswith(_JP2_SIGNATURE):
        return 0
    offset = len(_JP2_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">L4s", data, offset)
        header = 8
        if length == 1 and offset + 16 <= len(data):  # XLBox: 64-bit length follows
            (length,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        if kind == b"jp2c":
            return offset + header
        if length < header:  # 0 ("to the end") or invalid: no codestream after it
            break
        offset += length
    raise DecodeError("JP2 file holds no contiguous codestream (jp2c) box")


def decomposition_levels(data: bytes) -> int:
    """The number of wavelet decompositions (NL) every component has in the main header.

    Reads the COD and COC marker segments of the main header (ISO 15444-1 A.6.1,
    A.6.2) and returns the smallest NL, i.e. the largest usable reduce factor.
    Raises :class:`DecodeError` when the main header cannot be walked.
    """
    return _main_header(data)[0]


def is_reversible(data: bytes) -> bool:
    """Whether every component uses the reversible 5-3 wavelet (lossless-capable).

    An irreversible (9-7) codestream can over- and undershoot the sample range
    when decoded, which decoders must clip.
    """
    return _main_header(data)[1]


def _main_header(data: bytes) -> tuple[int, bool]:
    """(smallest NL, all transforms reversible) from the COD/COC segments."""
    start = codestream_start(data)
    if data[start : start + 2] != b"\xff\x4f":
        raise DecodeError("JPEG 2000 codestream does not start with an SOC marker")
    pos = start + 2
    end = len(data)
    csiz = None
    levels: list[int] = []
    reversible = True
    while pos + 4 <= end:
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker in (0xFF90, 0xFF93, 0xFFD9):  # SOT, SOD, EOC: end of the main header
            break
        if marker >> 8 != 0xFF or length < 2:
            raise DecodeError(f"JPEG 2000 main header: bad marker {marker:#06x} at {pos - start}")
        body = pos + 4
        if marker == 0xFF51 and body + 38 <= end:  # SIZ
            (csiz,) = struct.unpack_from(">H", data, body + 34)
        elif marker == 0xFF52 and body + 6 <= end:  # COD: Scod, SGcod (4), SPcod: NL first
            levels.append(data[body + 5])
            # SPcod: NL, code-block width, height, style, then the transform (1 = 5-3).
            if body + 10 <= end:
                reversible &= data[body + 9] == 1
        elif marker == 0xFF53 and csiz is not None:  # COC: Ccoc (1 or 2), Scoc, SPcoc: NL first
            nl_at = body + (2 if csiz >= 257 else 1) + 1
            if nl_at < end:
                levels.append(data[nl_at])
            if nl_at + 5 <= end:
                reversible &= data[nl_at + 4] == 1
        pos += 2 + length
    if not levels:
        raise DecodeError("JPEG 2000 main header has no COD marker segment")
    return min(levels), reversible


# -- OpenJPEG through ctypes -----------------------------------------------------------
class _ImageComp(ctypes.Structure):
    # opj_image_comp_t (openjpeg.h, 2.x; ``bpp`` is deprecated but still there)
    _fields_ = [
        ("dx", ctypes.c_uint32),
        ("dy", ctypes.c_uint32),
        ("w", ctypes.c_uint32),
        ("h", ctypes.c_uint32),
        ("x0", ctypes.c_uint32),
        ("y0", ctypes.c_uint32),
        ("prec", ctypes.c_uint32),
        ("bpp", ctypes.c_uint32),
        ("sgnd", ctypes.c_uint32),
        ("resno_decoded", ctypes.c_uint32),
        ("factor", ctypes.c_uint32),
        ("data", ctypes.POINTER(ctypes.c_int32)),
        ("alpha", ctypes.c_uint16),
    ]


class _Image(ctypes.Structure):
    # opj_image_t
    _fields_ = [
        ("x0", ctypes.c_uint32),
        ("y0", ctypes.c_uint32),
        ("x1", ctypes.c_uint32),
        ("y1", ctypes.c_uint32),
        ("numcomps", ctypes.c_uint32),
        ("color_space", ctypes.c_int),
        ("comps", ctypes.POINTER(_ImageComp)),
        ("icc_profile_buf", ctypes.c_void_p),
        ("icc_profile_len", ctypes.c_uint32),
    ]


class _Buffer(ctypes.Structure):
    """The memory stream: the codestream's address, length and read position."""

    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_uint64), ("pos", ctypes.c_uint64)]


_READ_FN = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_MSG_FN = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)

_OPJ_CODEC_J2K = 0
_OPJ_CODEC_JP2 = 2
_DPARAMETERS_BYTES = 1 << 14  # opj_dparameters_t is ~8.3 KB in 2.x; room to spare


def _buffer(user: int) -> _Buffer:
    return _Buffer.from_address(user)


@_READ_FN
def _read(dest: int, nbytes: int, user: int) -> int:
    buf = _buffer(user)
    left = buf.size - buf.pos
    if left <= 0:
        return ctypes.c_size_t(-1).value  # (OPJ_SIZE_T)-1: end of stream
    n = min(nbytes, left)
    ctypes.memmove(dest, buf.data + buf.pos, n)
    buf.pos += n
    return n


@_SKIP_FN
def _skip(nbytes: int, user: int) -> int:
    buf = _buffer(user)
    new = min(max(buf.pos + nbytes, 0), buf.size)
    moved = new - buf.pos
    buf.pos = new
    return moved


@_SEEK_FN
def _seek(pos: int, user: int) -> int:
    buf = _buffer(user)
    if not 0 <= pos <= buf.size:
        return 0
    buf.pos = pos
    return 1


_messages = threading.local()


@_MSG_FN
def _on_error(msg: bytes | None, user: int) -> None:
    # OpenJPEG calls back on the decoding thread; collect what it says for the error.
    if msg:
        lst = getattr(_messages, "errors", None)
        if lst is not None and len(lst) < 8:
            lst.append(msg.decode("utf-8", "replace").strip())


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    env = os.environ.get("DCMSTREAM_OPENJPEG_LIBRARY")
    if env:
        paths.append(env)
    try:
        import imagecodecs

        site = os.path.dirname(os.path.dirname(imagecodecs.__file__))
        patterns = ("imagecodecs.libs/libopenjp2*.so*", "imagecodecs/.dylibs/libopenjp2*.dylib", "imagecodecs.libs/openjp2*.dll")
        for pattern in patterns:
            paths.extend(sorted(glob.glob(os.path.join(site, pattern))))
    except ImportError:
        pass
    found = ctypes.util.find_library("openjp2")
    if found:
        paths.append(found)
    paths.extend(["libopenjp2.so.7", "libopenjp2.so"])
    return paths


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    vp, u32, i32 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    sigs = {
        "opj_version": ([], ctypes.c_char_p),
        "opj_create_decompress": ([i32], vp),
        "opj_set_default_decoder_parameters": ([vp], None),
        "opj_setup_decoder": ([vp, vp], i32),
        "opj_set_error_handler": ([vp, _MSG_FN, vp], i32),
        "opj_stream_create": ([ctypes.c_size_t, i32], vp),
        "opj_stream_set_read_function": ([vp, _READ_FN], None),
        "opj_stream_set_skip_function": ([vp, _SKIP_FN], None),
        "opj_stream_set_seek_function": ([vp, _SEEK_FN], None),
        "opj_stream_set_user_data": ([vp, vp, vp], None),
        "opj_stream_set_user_data_length": ([vp, ctypes.c_uint64], None),
        "opj_read_header": ([vp, vp, ctypes.POINTER(ctypes.POINTER(_Image))], i32),
        "opj_set_decoded_resolution_factor": ([vp, u32], i32),
        "opj_decode": ([vp, vp, ctypes.POINTER(_Image)], i32),
        "opj_end_decompress": ([vp, vp], i32),
        "opj_stream_destroy": ([vp], None),
        "opj_destroy_codec": ([vp], None),
        "opj_image_destroy": ([ctypes.POINTER(_Image)], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    version = (lib.opj_version() or b"0").decode()
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if major_minor < (2, 3):  # opj_set_decoded_resolution_factor and this struct layout
        raise OpenJpegVersionError(f"libopenjp2 {version} is older than 2.3")
    return lib


_lib: ctypes.CDLL | None = None
_lib_path: str | None = None
_lib_tried = False
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL | None:
    global _lib, _lib_path, _lib_tried
    if _lib_tried:
        return _lib
    with _lib_lock:
        if not _lib_tried:
            for path in _candidate_paths():
                try:
                    _lib = _bind(ctypes.CDLL(path))
                    _lib_path = path
                    break
                except (OSError, AttributeError):
                    continue
            _lib_tried = True
    return _lib


def openjpeg_available() -> bool:
    """Whether a libopenjp2 >= 2.3 could be loaded for reduced-resolution decoding."""
    return _library() is not None


def openjpeg_library() -> str | None:
    """Path of the libopenjp2 in use (None when none loaded)."""
    _library()
    return _lib_path


def sample_dtype(prec: int, signed: bool) -> np.dtype:
    """The array type a decoder gives samples of ``prec`` bits (OpenJPEG's and imagecodecs' rule)."""
    size = 1 if prec <= 8 else 2 if prec <= 16 else 4
    return np.dtype(f"{'i' if signed else 'u'}{size}")


def decode_reduced(data: bytes, level: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int, bool]:
    """Decode a J2K codestream (or JP2 file) at 1/2**level of its size with OpenJPEG.

    Returns (array, precision, signed) with the array shaped (rows, columns) or
    (rows, columns, components), like ``imagecodecs.jpeg2k_decode``. ``level``
    must be within 0..NL (see :func:`decomposition_levels`). The multi-component
    transform is undone by OpenJPEG, as in a full decode. Raises
    :class:`DecodeError` when the library is missing or the decode fails. ``out``, when of
    the decoded shape and sample type, receives the samples (else a new array does).
    """
    lib = _library()
    if lib is None:
        raise DecodeError("reduced-resolution JPEG 2000 decoding needs libopenjp2 (imagecodecs wheel or Debian libopenjp2-7)")
    raw = bytes(data)
    fmt = _OPJ_CODEC_JP2 if raw.startswith(_JP2_SIGNATURE) else _OPJ_CODEC_J2K
    holder = ctypes.create_string_buffer(raw, len(raw))
    buf = _Buffer(ctypes.addressof(holder), len(raw), 0)
    params = ctypes.create_string_buffer(_DPARAMETERS_BYTES)
    image = ctypes.POINTER(_Image)()
    _messages.errors = []
    codec = lib.opj_create_decompress(fmt)
    stream = lib.opj_stream_create(max(len(raw), 1), 1)
    if not codec or not stream:
        raise DecodeError("OpenJPEG could not create a decoder")
    try:
        lib.opj_set_error_handler(codec, _on_error, None)
        lib.opj_set_default_decoder_parameters(params)
        lib.opj_stream_set_read_function(stream, _read)
        lib.opj_stream_set_skip_function(stream, _skip)
        lib.opj_stream_set_seek_function(stream, _seek)
        lib.opj_stream_set_user_data(stream, ctypes.addressof(buf), None)
        lib.opj_stream_set_user_data_length(stream, len(raw))
        ok = (
            lib.opj_setup_decoder(codec, params)
            and lib.opj_read_header(stream, codec, ctypes.byref(image))
            and lib.opj_set_decoded_resolution_factor(codec, level)
            and lib.opj_decode(codec, stream, image)
            and lib.opj_end_decompress(codec, stream)
        )
        if not ok:
            detail = "; ".join(_messages.errors) or "no detail"
            raise DecodeError(f"OpenJPEG failed to decode at reduce factor {level} ({detail})")
        img = image.contents
        comps = [img.comps[c] for c in range(img.numcomps)]
        if not comps:
            raise DecodeError("OpenJPEG decoded no components")
        h, w = comps[0].h, comps[0].w
        if any((c.h, c.w) != (h, w) for c in comps):
            raise DecodeError("JPEG 2000 components have different sizes (subsampled); not supported")
        prec, signed = comps[0].prec, bool(comps[0].sgnd)
        dtype = sample_dtype(prec, signed)
        shape = (h, w) if len(comps) == 1 else (h, w, len(comps))
        if out is None or out.shape != shape or out.dtype != dtype:
            out = np.empty(shape, dtype)
        planes = out.reshape(h, w, len(comps))
        for k, comp in enumerate(comps):
            if not comp.data:
                raise DecodeError("OpenJPEG returned a component without data")
            plane = np.ctypeslib.as_array(comp.data, shape=(h * w,))
            planes[:, :, k] = plane.reshape(h, w)
        return out, prec, signed
    finally:
        _messages.errors = None
        if image:
            lib.opj_image_destroy(image)
        lib.opj_stream_destroy(stream)
        lib.opj_destroy_codec(codec)
        del holder
