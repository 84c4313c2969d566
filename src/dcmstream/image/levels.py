"""Resolution levels: level k is a frame at 1/2**k of its size per side.

Every path that produces a reduced frame agrees on its shape,
``ceil(rows / 2**k) x ceil(columns / 2**k)``: OpenJPEG's and OpenJPH's native
reduced decodes of a codestream with origin 0, and decimation
(``arr[::2**k, ::2**k]``), which is what syntaxes without a resolution pyramid
(native, RLE, JPEG, JPEG-LS) get. Decimation keeps every 2**k-th pixel: it is
fast and exact in value (no filtering), so a level-k frame of a lossless file
shows real stored values, at the price of aliasing on fine patterns.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["level_shape", "geometric_max_level", "level_for_size", "decimate", "check_level", "representation"]


def _ceil_div(n: int, level: int) -> int:
    return -(-n // (1 << level))


def level_shape(shape: tuple[int, ...], level: int) -> tuple[int, ...]:
    """Shape of a frame of ``shape`` (rows, columns[, samples]) at ``level``."""
    if not level:
        return tuple(shape)
    return (_ceil_div(shape[0], level), _ceil_div(shape[1], level), *shape[2:])


def geometric_max_level(rows: int, columns: int) -> int:
    """The level at which the longest side is 1 pixel (``ceil(n / 2**k) == 1``)."""
    return (max(rows, columns) - 1).bit_length()


def level_for_size(rows: int, columns: int, size: int, max_level: int) -> int:
    """The coarsest level whose longest side is still at least ``size`` pixels.

    Rendering at ``size`` then only ever shrinks (area average) by less than 2x,
    or uses level 0 when the frame is smaller than ``size``.
    """
    longest = max(rows, columns)
    level = 0
    while level < max_level and _ceil_div(longest, level + 1) >= size:
        level += 1
    return level


def decimate(arr: np.ndarray, level: int) -> np.ndarray:
    """Every 2**level-th row and column of ``arr``, as a new contiguous array."""
    if not level:
        return arr
    step = 1 << level
    return np.ascontiguousarray(arr[::step, ::step])


def check_level(level: object, max_level: int) -> int:
    """Validate a requested level: an int >= 0, clamped to ``max_level``.

    Raises TypeError for a non-integer and ValueError for a negative level; a
    level beyond what the frame offers gives the smallest level available.
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise InvalidArgumentTypeError(f"level must be an integer, not {type(level).__name__}")
    if level < 0:
        raise InvalidArgumentError(f"level must be >= 0, got {level}")
    return min(int(level), max_level)


def representation(level: int) -> str:
    """Cache-key representation of a decoded frame at ``level``."""
    return "full" if level == 0 else f"level{level}"
