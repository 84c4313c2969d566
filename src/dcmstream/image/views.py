"""Zero-copy frames: native pixel data mapped from the file (``numpy.memmap``).

A frame can be a view of the file only when its stored bytes already are the
array that :meth:`Instance.frame` would return: nothing to byte-swap, mask,
unpack, convert or reorder. That rules out big-endian and deflated files, 1-bit
data, Bits Stored < Bits Allocated (pydicom masks the unused high bits, and
proving them zero would mean reading every pixel), YBR colour (converted to RGB),
planar configuration 1 (reordered), and frames not aligned to the sample size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..errors import SourceError

if TYPE_CHECKING:
    from .instance import Instance

__all__ = ["can_view", "frame_view"]

_VIEW_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"})


def _path(inst: "Instance") -> str | None:
    if inst.pixel_value_source is not inst.source or inst.transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None  # an inflated temporary copy or a non-file source
    path = getattr(inst.source, "path", None)
    return None if path is None else str(path)


def can_view(inst: "Instance") -> bool:
    """Whether every frame of ``inst`` can be a read-only view of its file."""
    index = inst.frame_index
    spec = inst.pixel_spec
    if index.kind != "native" or index.bit_offsets is not None or len(index) == 0:
        return False
    if not inst.is_little_endian or inst.reader.be_swap_ow or _path(inst) is None:
        return False
    if spec.bits_allocated not in (8, 16, 32, 64):
        return False
    if spec.pixel_keyword == "PixelData" and spec.bits_stored != spec.bits_allocated:
        return False
    if spec.photometric_interpretation not in _VIEW_PHOTOMETRICS or spec.planar_configuration != 0:
        return False
    first = int(index.offsets[0])
    itemsize = spec.dtype.itemsize
    return first % itemsize == 0 and index.lengths[0] == spec.pixels_per_frame * itemsize


def frame_view(inst: "Instance") -> np.ndarray:
    """All frames of ``inst`` as one read-only memmap, shape (frames, *frame shape)."""
    spec = inst.pixel_spec
    index = inst.frame_index
    dtype = spec.dtype.newbyteorder("<")
    path = _path(inst)
    if path is None:
        raise SourceError(f"{inst.name}: frames are not in a local file to map (check can_view first)")
    return np.memmap(path, dtype=dtype, mode="r", offset=int(index.offsets[0]), shape=(len(index), *spec.shape))
