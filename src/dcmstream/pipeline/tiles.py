"""Tiles: cutting large frames (and TILED_FULL whole-slide images) into processing tiles.

A processing tile grid over an image of ``height x width`` with ``tile_size`` T and
``overlap`` O: cores start at multiples of T and are T x T (smaller at the right and
bottom edges); a tile's region is its core grown by O on every side, clipped to the
image. Cores partition the image; regions overlap by up to 2 O.

A DICOM whole-slide image with Dimension Organization Type TILED_FULL stores its
*total pixel matrix* (Total Pixel Matrix Rows x Columns) as frames of Rows x Columns,
row-major, the last column and row of tiles padded. :class:`SlideGeometry` describes
it and :func:`read_region` assembles any region from the stored tiles it touches,
decoding only those. One focal plane and one optical path are supported (the first
``tiles_down x tiles_across`` frames).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["TileSpec", "tile_grid", "SlideGeometry", "slide_geometry", "read_region", "DEFAULT_TILE"]

DEFAULT_TILE = 1024


@dataclass(frozen=True)
class TileSpec:
    """One processing tile: region (y, x, height, width), core, and grid position."""

    y: int
    x: int
    height: int
    width: int
    core: tuple[int, int, int, int]
    grid: tuple[int, int]


def tile_grid(height: int, width: int, tile_size: int | tuple[int, int] = DEFAULT_TILE, overlap: int = 0) -> Iterator[TileSpec]:
    """Processing tiles of a ``height x width`` image, row-major (see the module docstring)."""
    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    if th < 1 or tw < 1:
        raise InvalidArgumentError("tile_size must be >= 1")
    if overlap < 0:
        raise InvalidArgumentError("overlap must be >= 0")
    for r, cy in enumerate(range(0, height, th)):
        ch = min(th, height - cy)
        y0, y1 = max(0, cy - overlap), min(height, cy + ch + overlap)
        for c, cx in enumerate(range(0, width, tw)):
            cw = min(tw, width - cx)
            x0, x1 = max(0, cx - overlap), min(width, cx + cw + overlap)
            yield TileSpec(y0, x0, y1 - y0, x1 - x0, (cy, cx, ch, cw), (r, c))


def grid_shape(height: int, width: int, tile_size: int | tuple[int, int]) -> tuple[int, int]:
    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    return math.ceil(height / th), math.ceil(width / tw)


@dataclass(frozen=True)
class SlideGeometry:
    """A TILED_FULL image: total pixel matrix, stored tile size, tiles across and down."""

    total_rows: int
    total_columns: int
    tile_rows: int
    tile_columns: int

    @property
    def tiles_across(self) -> int:
        return math.ceil(self.total_columns / self.tile_columns)

    @property
    def tiles_down(self) -> int:
        return math.ceil(self.total_rows / self.tile_rows)

    @property
    def tiles(self) -> int:
        return self.tiles_across * self.tiles_down

    def frame_of(self, row: int, column: int) -> int:
        """Frame index (0-based) of stored tile (row, column)."""
        return row * self.tiles_across + column


def slide_geometry(ds: object, rows: int, columns: int, frames: int) -> SlideGeometry | None:
    """The TILED_FULL geometry of a dataset, or None when it is not a tiled slide.

    Needs Total Pixel Matrix Rows/Columns larger than one frame, Dimension Organization
    Type TILED_FULL (absent is accepted when the frame count matches the tile grid
    exactly; TILED_SPARSE is not supported) and enough frames for the grid.
    """
    get = getattr(ds, "get", None)
    if get is None:
        return None
    try:
        total_rows = int(get("TotalPixelMatrixRows", 0) or 0)
        total_columns = int(get("TotalPixelMatrixColumns", 0) or 0)
        organisation = str(get("DimensionOrganizationType", "") or "").upper()
    except (TypeError, ValueError):
        return None
    if total_rows <= 0 or total_columns <= 0 or (total_rows <= rows and total_columns <= columns and frames == 1):
        return None
    geo = SlideGeometry(total_rows, total_columns, rows, columns)
    if organisation == "TILED_SPARSE":
        return None
    if organisation != "TILED_FULL" and frames != geo.tiles:
        return None
    if frames < geo.tiles:
        return None
    return geo


def read_region(
    geo: SlideGeometry,
    read_tile: Callable[[int], np.ndarray],
    y: int,
    x: int,
    height: int,
    width: int,
) -> np.ndarray:
    """Rows ``y:y+height``, columns ``x:x+width`` of the total pixel matrix.

    ``read_tile(frame)`` returns a stored tile (rows x columns[, samples]); only the tiles
    the region touches are read. A region that is exactly one stored tile returns that
    tile (cropped at the matrix edge) without copying.
    """
    if y < 0 or x < 0 or height <= 0 or width <= 0 or y + height > geo.total_rows or x + width > geo.total_columns:
        raise InvalidArgumentError(f"region {y},{x} {height}x{width} is outside the {geo.total_rows}x{geo.total_columns} image")
    th, tw = geo.tile_rows, geo.tile_columns
    r0, r1 = y // th, (y + height - 1) // th
    c0, c1 = x // tw, (x + width - 1) // tw
    if r0 == r1 and c0 == c1 and y % th == 0 and x % tw == 0:
        return read_tile(geo.frame_of(r0, c0))[:height, :width]
    out: np.ndarray | None = None
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            tile = read_tile(geo.frame_of(r, c))
            if out is None:
                out = np.empty((height, width, *tile.shape[2:]), tile.dtype)
            ty0, tx0 = r * th, c * tw
            sy0, sy1 = max(y, ty0), min(y + height, ty0 + th)
            sx0, sx1 = max(x, tx0), min(x + width, tx0 + tw)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0]
    assert out is not None
    return out


def tiles_touching(geo: SlideGeometry, y: int, x: int, height: int, width: int) -> list[int]:
    """Frames of the stored tiles a region touches."""
    th, tw = geo.tile_rows, geo.tile_columns
    return [
        geo.frame_of(r, c)
        for r in range(y // th, (y + height - 1) // th + 1)
        for c in range(x // tw, (x + width - 1) // tw + 1)
    ]
