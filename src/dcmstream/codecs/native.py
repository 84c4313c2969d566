"""Native (uncompressed) frames: bytes to array, the way pydicom lays them out."""

from __future__ import annotations

import numpy as np

from ..errors import DecodeError
from ..index.pixel_spec import PixelSpec
from .base import Decoded, out_view

__all__ = ["decode_native"]


def _expand_ybr422(flat: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # PS3.3 C.7.6.3.1.2: Y1 Y2 Cb Cr -> Y1 Cb Cr Y2 Cb Cr
    if out is None:
        out = np.empty(flat.shape[0] // 2 * 3, dtype=flat.dtype)
    out[::6] = flat[::4]
    out[3::6] = flat[1::4]
    out[1::6] = out[4::6] = flat[2::4]
    out[2::6] = out[5::6] = flat[3::4]
    return out


def decode_native(
    data: bytes | bytearray | np.ndarray,
    spec: PixelSpec,
    little_endian: bool,
    bit_offset: int = 0,
    out: np.ndarray | None = None,
) -> Decoded:
    """Turn one frame's native bytes into an array of shape ``spec.shape``.

    ``data`` must be writeable-copyable bytes of exactly this frame (plus the
    partial bytes around a 1-bit frame, located by ``bit_offset``). It may be ``out``'s
    own memory (a uint8 view of it, the frame read straight into the buffer): the samples
    are then put in order in place.

    Without ``out`` the array is a view of ``data`` when it is writeable and in native
    byte order (no copy). With ``out`` (``spec.shape``, ``spec.dtype`` or an integer
    type of its width) the samples are copied into it, byte-swapped, de-interleaved or
    expanded on the way: one pass, and the frame then lives in memory the caller
    recycles (a cache's buffer pool) instead of in ``data``.
    """
    pixels = spec.pixels_per_frame
    if out is not None and out.shape != spec.shape:
        out = None
    if spec.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        flat = bits[bit_offset : bit_offset + pixels]
        if flat.shape[0] != pixels:
            raise DecodeError(f"1-bit frame holds {flat.shape[0]} pixels, expected {pixels}")
        into = out_view(out, np.uint8)
        if into is not None:
            into.reshape(-1)[...] = flat
            return Decoded(into)
        return Decoded(flat.reshape(spec.shape))
    dtype = spec.dtype.newbyteorder("<" if little_endian else ">")
    flat = np.frombuffer(data, dtype=dtype)
    into = out_view(out, spec.dtype)
    photometric = None
    rows, cols, spp = spec.rows, spec.columns, spec.samples_per_pixel
    if into is not None and np.may_share_memory(flat, into):
        # The bytes were read straight into ``out``: in the stored layout they are the frame
        # already (byte order aside), anything else is rearranged from a copy.
        same = flat.ctypes.data == into.ctypes.data and flat.nbytes == into.nbytes
        if same and spec.photometric_interpretation != "YBR_FULL_422" and (spp == 1 or spec.planar_configuration == 0):
            if not dtype.isnative:
                into.byteswap(inplace=True)
            return Decoded(into)
        flat = flat.copy()
    if spec.photometric_interpretation == "YBR_FULL_422":
        if flat.shape[0] // 2 * 3 != pixels:
            raise DecodeError(f"native frame holds {flat.shape[0] // 2 * 3} samples, expected {pixels}")
        photometric = "YBR_FULL"
        if into is not None and dtype.isnative:
            return Decoded(_expand_ybr422(flat, into.reshape(-1)).reshape(spec.shape), photometric=photometric)
        flat = _expand_ybr422(flat)
    if flat.shape[0] != pixels:
        raise DecodeError(f"native frame holds {flat.shape[0]} samples, expected {pixels}")
    if into is not None:
        # One copy into the caller's buffer; byte order and planar layout on the way.
        if spp == 1 or spec.planar_configuration == 0 or photometric == "YBR_FULL":
            src = flat.reshape(spec.shape)
        else:
            src = flat.reshape(spp, rows, cols).transpose(1, 2, 0)
        np.copyto(into, src)  # the same type, in another byte order at most
        return Decoded(into, photometric=photometric)
    if not dtype.isnative:
        flat = flat.byteswap().view(dtype.newbyteorder("="))
    elif not flat.flags.writeable:
        flat = flat.copy()
    arr: np.ndarray
    if spp == 1:
        arr = flat.reshape(rows, cols)
    elif spec.planar_configuration == 0 or photometric == "YBR_FULL":
        arr = flat.reshape(rows, cols, spp)
    else:
        arr = np.ascontiguousarray(flat.reshape(spp, rows, cols).transpose(1, 2, 0))
    return Decoded(arr, photometric=photometric)
