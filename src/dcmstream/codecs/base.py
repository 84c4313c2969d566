"""What a frame decoder is, and what it hands back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..index.pixel_spec import PixelSpec

__all__ = ["Decoded", "FrameDecoder", "out_view"]


@dataclass
class Decoded:
    """A decoded frame before the pydicom-compatible post-processing.

    ``array`` has shape (rows, columns) or (rows, columns, samples), planar
    configuration 0. ``photometric`` is the colour space of ``array`` when the
    codec changed it (e.g. JPEG 2000 undoing its colour transform gives RGB).
    ``precision``/``signed`` describe the codestream, for sign correction.
    When the decoder was given ``out=`` and used it, ``array`` is ``out`` or a
    view of it (callers tell with ``np.may_share_memory(array, out)``).
    """

    array: np.ndarray
    photometric: str | None = None
    precision: int | None = None
    signed: bool | None = None


def out_view(out: np.ndarray | None, dtype: Any) -> np.ndarray | None:
    """``out`` seen as ``dtype`` when a codec producing ``dtype`` can write into it, else None.

    Why a view: a caller sizes ``out`` from the dataset (``PixelSpec.dtype``, e.g. int16 for
    signed CT), while the codec produces its own sample type (JPEG-LS always unsigned).
    Any integer type of the same width holds the same bytes, and the post-processing views
    them as the dataset's type again, so no copy is made either way (floats only as the
    same type). ``out`` must be C-contiguous and writeable; anything else gives None
    (decode into fresh memory).
    """
    if out is None:
        return None
    dtype = np.dtype(dtype)
    if (
        not isinstance(out, np.ndarray)
        or out.dtype.itemsize != dtype.itemsize
        or not (out.dtype == dtype or (out.dtype.kind in "iub" and dtype.kind in "iub"))
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        return None
    return out.view(dtype)


@dataclass(frozen=True)
class FrameDecoder:
    """One way of decoding the frames of some transfer syntaxes.

    ``decode(data, spec, level)`` decodes one frame; ``level`` > 0 asks for a
    reduced resolution (1/2**level per side) and is only passed when
    ``reduces`` is True. ``available()`` tells whether the backing package is
    importable; ``package`` names what to install when it is not.
    ``max_level(data)``, when set, tells from one encoded frame how many
    resolution levels the codestream holds (JPEG 2000: its decomposition levels).

    ``takes_out``: ``decode`` also accepts ``out=``, an array of the decoded frame's
    shape (at that level) and of ``PixelSpec.dtype`` or any integer type of the same
    width, to decode into instead of allocating (so a cache can recycle frame buffers).
    The decoder may ignore it (another layout or sample type than it produces); call
    through :meth:`decode_frame`, which passes ``out`` only to decoders that take it.
    """

    name: str
    syntaxes: frozenset[str]
    decode: Callable[..., Decoded]
    package: str
    available: Callable[[], bool] = field(default=lambda: True)
    reduces: bool = False
    max_level: Callable[[bytes], int] | None = None
    takes_out: bool = False

    def decode_frame(self, data: bytes | bytearray, spec: PixelSpec, level: int = 0, *, out: np.ndarray | None = None) -> Decoded:
        """Decode one frame, into ``out`` when given and this decoder can (see ``takes_out``)."""
        if out is not None and self.takes_out:
            return self.decode(data, spec, level, out=out)
        return self.decode(data, spec, level)
