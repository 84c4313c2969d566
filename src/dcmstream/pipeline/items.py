"""What a pipeline hands to ``fn`` (one dataclass per unit) and what it records.

* ``unit="frame"``    -> :class:`Frame`: one decoded frame with where it came from.
* ``unit="tile"``     -> :class:`Tile`: a region of a frame (or of a whole-slide image's
  total pixel matrix) with its coordinates, overlap included, and its *core* (the part
  that belongs to this tile alone; cores partition the image).
* ``unit="instance"`` -> :class:`InstanceItem`: one lazily opened instance; ``fn`` reads
  the frames it needs (``item.instance.frames()``), so the memory it takes is ``fn``'s.
* ``unit="series"``   -> :class:`SeriesItem`: one lazily opened series.

Sinks get an :class:`ItemInfo` (everything but the pixels, picklable) with each result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..image import Series
    from .sources import PipelineImage

__all__ = ["Frame", "Tile", "InstanceItem", "SeriesItem", "ItemInfo", "Failure", "UNITS"]

UNITS = ("frame", "instance", "series", "tile")


@dataclass(frozen=True)
class ItemInfo:
    """Where one item comes from, without its pixels (what a sink places a result by).

    ``image_shape`` is the full-resolution shape of one frame, (rows, columns[, samples])
    (for a whole-slide image: its total pixel matrix); ``frames`` the frames of the
    instance or series; ``core`` (y, x, height, width) the part of a tile that is its own.
    """

    seq: int
    unit: str
    source: str
    frame: int | None = None
    frames: int = 1
    image_shape: tuple[int, ...] = ()
    dtype: str = ""
    level: int = 0
    y: int | None = None
    x: int | None = None
    height: int | None = None
    width: int | None = None
    core: tuple[int, int, int, int] | None = None
    grid: tuple[int, int] | None = None  # (row, column) of the tile in its grid
    grid_shape: tuple[int, int] | None = None
    series_uid: str | None = None
    bits_stored: int = 0
    nbytes: int = 0  # decoded bytes of the item (throughput accounting)

    @property
    def key(self) -> str:
        """A readable, unique name: ``source``, ``source#frame`` or ``source#frame@y,x``."""
        out = self.source
        if self.frame is not None:
            out += f"#{self.frame}"
        if self.y is not None:
            out += f"@{self.core[0] if self.core else self.y},{self.core[1] if self.core else self.x}"
        return out

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "unit": self.unit}
        if self.frame is not None:
            d["frame"] = self.frame
        if self.core is not None:
            d.update(y=self.core[0], x=self.core[1], height=self.core[2], width=self.core[3])
        return d


@dataclass
class Frame:
    """One decoded frame: ``source`` (file path or archive/DICOMweb name), ``frame`` (0-based)."""

    source: str
    frame: int
    array: np.ndarray
    level: int = 0
    info: ItemInfo | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.source}#{self.frame}"


@dataclass
class Tile:
    """A region of frame ``frame`` of ``instance``: rows ``y:y+height``, columns ``x:x+width``.

    Coordinates are full-resolution pixels of the frame (for a TILED_FULL whole-slide
    image: of its total pixel matrix; ``frame`` is then 0). The region includes the
    overlap; ``core`` (y, x, height, width) is the part owned by this tile alone, and
    :attr:`core_array` that part of :attr:`array`. Cores of one frame cover it exactly once.
    """

    instance: str
    frame: int
    y: int
    x: int
    height: int
    width: int
    array: np.ndarray
    core: tuple[int, int, int, int] = (0, 0, 0, 0)
    level: int = 0
    grid: tuple[int, int] = (0, 0)
    info: ItemInfo | None = field(default=None, repr=False)

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Slices of :attr:`array` that select the core."""
        cy, cx, ch, cw = self.core
        return slice(cy - self.y, cy - self.y + ch), slice(cx - self.x, cx - self.x + cw)

    @property
    def core_array(self) -> np.ndarray:
        return self.array[self.core_slices]

    @property
    def key(self) -> str:
        return f"{self.instance}#{self.frame}@{self.core[0]},{self.core[1]}"


@dataclass
class InstanceItem:
    """One instance, opened lazily (``instance`` is a :class:`dcmstream.Instance` or a
    :class:`~.sources.DicomWebInstance`: see :class:`~.sources.PipelineImage`)."""

    source: str
    instance: PipelineImage
    info: ItemInfo | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.source


@dataclass
class SeriesItem:
    """One series, opened lazily (``series`` is a :class:`dcmstream.Series`)."""

    series_uid: str | None
    paths: tuple[str, ...]
    series: Series
    info: ItemInfo | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.series_uid or self.paths[0]


@dataclass(frozen=True)
class Failure:
    """An item whose reading or ``fn`` raised: what it was, the error and its traceback."""

    key: str
    stage: str  # "open", "read" or "fn" (or "task" when a remote task died)
    error: str  # "ExceptionType: message"
    traceback: str

    @classmethod
    def of(cls, key: str, stage: str, exc: BaseException) -> Failure:
        """The failure of ``key`` at ``stage`` that raised ``exc`` (its traceback formatted now)."""
        import traceback

        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(key, stage, f"{type(exc).__name__}: {exc}", trace)

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)
