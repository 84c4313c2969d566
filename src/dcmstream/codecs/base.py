"""What a frame decoder is, and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..index.pixel_spec import PixelSpec

__all__ = ["Decoded", "FrameDecoder"]


@dataclass
class Decoded:
    """A decoded frame before the pydicom-compatible post-processing.

    ``array`` has shape (rows, columns) or (rows, columns, samples), planar
    configuration 0. ``photometric`` is the colour space of ``array`` when the
    codec changed it (e.g. JPEG 2000 undoing its colour transform gives RGB).
    ``precision``/``signed`` describe the codestream, for sign correction.
    """

    array: np.ndarray
    photometric: str | None = None
    precision: int | None = None
    signed: bool | None = None


@dataclass(frozen=True)
class FrameDecoder:
    """One way of decoding the frames of some transfer syntaxes.

    ``decode(data, spec, level)`` decodes one frame; ``level`` > 0 asks for a
    reduced resolution (1/2**level per side) and is only passed when
    ``reduces`` is True. ``available()`` tells whether the backing package is
    importable; ``package`` names what to install when it is not.
    ``max_level(data)``, when set, tells from one encoded frame how many
    resolution levels the codestream holds (JPEG 2000: its decomposition levels).
    """

    name: str
    syntaxes: frozenset[str]
    decode: Callable[[bytes, PixelSpec, int], Decoded]
    package: str
    available: Callable[[], bool] = field(default=lambda: True)
    reduces: bool = False
    max_level: Callable[[bytes], int] | None = None
