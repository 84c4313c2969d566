"""What the rest of dcmstream asks of something frames are read from (typing protocols).

Several classes hand out frames one at a time: :class:`~dcmstream.Instance` (a file),
the archive's ``StoredInstance`` (a blob read through its catalog record) and the
pipeline's ``DicomWebInstance`` (frames fetched over DICOMweb). Code that works with any
of them is typed with these protocols instead of ``Any``, so a type checker tells which
methods it may use.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pydicom.dataset import Dataset

from ..index import PixelSpec

__all__ = ["FrameSource", "ImageSource"]


class FrameSource(Protocol):
    """Frames as stored and decoded, one at a time (Instance, StoredInstance)."""

    @property
    def pixel_spec(self) -> PixelSpec:
        """Rows, columns, samples, bits and photometric interpretation of every frame."""
        ...

    @property
    def transfer_syntax(self) -> str:
        """The transfer syntax the frames are stored in."""
        ...

    def __len__(self) -> int: ...

    def encoded_frame(self, i: int) -> bytes:
        """The stored bytes of frame ``i`` (0-based): codestream or native pixel bytes."""
        ...

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based) decoded, as pydicom's ``pixel_array`` gives it."""
        ...


class ImageSource(Protocol):
    """An image with its header, as the pipeline reads it (Instance, DicomWebInstance):
    frames at resolution levels and the dataset for rendering, but not necessarily the
    stored bytes (DICOMweb frames arrive decoded)."""

    @property
    def pixel_spec(self) -> PixelSpec: ...

    @property
    def transfer_syntax(self) -> str: ...

    @property
    def dataset(self) -> Dataset: ...

    @property
    def max_level(self) -> int: ...

    def __len__(self) -> int: ...

    def frame(self, i: int, level: int = 0) -> np.ndarray: ...

    def render(self, i: int, window: tuple[float, float] | None = None) -> np.ndarray:
        """Frame ``i`` as uint8 for display (modality LUT, VOI window, MONOCHROME1 inverted)."""
        ...

    def close(self) -> None: ...
