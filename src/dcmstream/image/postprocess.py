"""Turn a codec's output into exactly what pydicom's ``pixel_array`` returns.

The contract of :meth:`Instance.frame` is pixel identity with
``pydicom.pixels.pixel_array(ds)[i]`` under default options, so the rules here
mirror pydicom 3's ``Decoder.as_array``: the dtype from Bits Allocated and Pixel
Representation, JPEG 2000 / JPEG-LS sign correction, masking of unused high bits,
and YCbCr to RGB conversion.
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes

from ..codecs.base import Decoded
from ..index.pixel_spec import PixelSpec

__all__ = ["finish_frame"]

_J2K = frozenset(JPEG2000TransferSyntaxes)
_JLS = frozenset(JPEGLSTransferSyntaxes)


def _sign_extend(arr: np.ndarray, bits: int) -> None:
    shift = 8 * arr.dtype.itemsize - bits
    if shift > 0:
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)


def finish_frame(decoded: Decoded, spec: PixelSpec, transfer_syntax: str) -> np.ndarray:
    """Apply pydicom's default processing to one decoded frame (returns a new array)."""
    arr = decoded.array
    target = spec.dtype
    if arr.dtype != target:
        same_int = arr.dtype.itemsize == target.itemsize and arr.dtype.kind in "iu" and target.kind in "iu"
        arr = arr.view(target) if same_int else arr.astype(target)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, copy=True, order="C")

    photometric = decoded.photometric or spec.photometric_interpretation
    if transfer_syntax in _J2K:
        monochrome = photometric in ("MONOCHROME1", "MONOCHROME2")
        signed = spec.pixel_representation if decoded.signed is None else int(decoded.signed)
        if monochrome and signed != spec.pixel_representation:
            _sign_extend(arr, decoded.precision or spec.bits_stored)
    elif transfer_syntax in _JLS:
        # JPEG-LS cannot signal signedness: signed data always decodes unsigned.
        if spec.pixel_representation == 1:
            _sign_extend(arr, decoded.precision or spec.bits_stored)
    elif spec.pixel_keyword == "PixelData" and spec.bits_allocated > spec.bits_stored and spec.bits_allocated > 1:
        # PS3.5 8.1.1: bits above Bits Stored carry no meaning; pydicom masks
        # them (and sign-extends signed data), so must we.
        if arr.dtype.kind == "u":  # one pass: the same as shifting up and down again
            np.bitwise_and(arr, arr.dtype.type((1 << spec.bits_stored) - 1), out=arr)
        else:
            shift = spec.bits_allocated - spec.bits_stored
            np.left_shift(arr, shift, out=arr)
            np.right_shift(arr, shift, out=arr)

    if photometric in ("YBR_FULL", "YBR_FULL_422") and spec.samples_per_pixel == 3:
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    return arr
