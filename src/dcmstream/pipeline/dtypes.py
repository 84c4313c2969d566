"""dtype handling: compute in the narrowest type that holds every value exactly.

Three views of a frame, chosen with ``values=`` in :func:`dcmstream.pipeline.run`:

* ``"stored"`` (default): the stored values in the decoder's dtype (uint16 for 12-bit
  CT). Nothing is converted.
* ``"modality"``: Rescale Slope/Intercept applied, in the narrowest type that is exact:
  an integer type when slope and intercept are integers and the rescaled range of
  Bits Stored fits (CT: stored 0..4095, intercept -1024 -> int16), float32 when the
  values are exactly representable in it (24 bits of mantissa), float64 otherwise.
  pydicom's ``apply_modality_lut`` always returns float64: 4x the memory of int16.
* ``"uint8"``: the windowed 8-bit display view of :meth:`Instance.render`
  (``window=(center, width)`` or the file's window).

:func:`storage_dtype` is the narrowest type that holds Bits Stored (8-bit data stored
in 16-bit words is written as uint8 by the Zarr sink, halving it).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DcmstreamError

__all__ = ["narrowest_int", "storage_dtype", "modality_dtype", "to_modality", "VALUES"]

VALUES = ("stored", "modality", "uint8")

class IntegerRangeError(DcmstreamError, OverflowError):
    """No integer dtype holds the range of values asked for."""


_INTS = [np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")]


def narrowest_int(lo: int, hi: int) -> np.dtype:
    """The smallest integer dtype holding every value of ``lo..hi`` (unsigned preferred)."""
    for dt in _INTS:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    raise IntegerRangeError(f"no integer type holds {lo}..{hi}")


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def storage_dtype(dtype: np.dtype | str, bits_stored: int, signed: bool) -> np.dtype:
    """The narrowest dtype that holds the stored values of ``dtype`` data (floats unchanged)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" or bits_stored <= 0:
        return dtype
    narrow = narrowest_int(*stored_range(min(bits_stored, dtype.itemsize * 8), signed))
    return narrow if narrow.itemsize <= dtype.itemsize else dtype


def modality_dtype(bits_stored: int, signed: bool, slope: float, intercept: float) -> np.dtype:
    """Narrowest exact dtype of ``stored * slope + intercept`` (see the module docstring)."""
    lo, hi = stored_range(bits_stored, signed)
    if float(slope).is_integer() and float(intercept).is_integer():
        # The stored values and the products are held in the type on the way too.
        values = [lo, hi, lo * slope, hi * slope, lo * slope + intercept, hi * slope + intercept]
        return narrowest_int(int(min(values)), int(max(values)))
    # float32 is exact when every result needs at most 24 significant bits; a decimal
    # slope (0.5 is fine, 0.1 is not) is never exact, so it gets float64.
    bound = max(abs(lo), abs(hi)) * abs(slope) + abs(intercept)
    exact32 = float(np.float32(slope)) == slope and float(np.float32(intercept)) == intercept and bound < 2**24
    return np.dtype("float32") if exact32 and math.isfinite(bound) else np.dtype("float64")


def to_modality(arr: np.ndarray, slope: float, intercept: float, dtype: np.dtype) -> np.ndarray:
    """``arr * slope + intercept`` computed in ``dtype`` (the result of :func:`modality_dtype`)."""
    out = arr.astype(dtype, copy=True)
    if dtype.kind in "iu":
        if slope != 1:
            out *= dtype.type(int(slope))
        if intercept:
            out += dtype.type(int(intercept))
        return out
    if slope != 1:
        out *= dtype.type(slope)
    if intercept:
        out += dtype.type(intercept)
    return out
