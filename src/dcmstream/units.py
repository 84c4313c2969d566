"""Values people type and read: byte sizes ("64MB", "1.2 GiB") and display windows ("40,400").

One parser and one formatter each, shared by the command line (``--budget``,
``--window``), the pipeline's memory budget, the compression report and the web
server's ``window=`` parameter, so "2G" or "40,400" mean the same everywhere. Bad input
raises :class:`InvalidValueError` (a :class:`~dcmstream.DcmstreamError` and a
``ValueError``); callers turn it into their own usage error (``typer.BadParameter``,
HTTP 400).

Bottom layer (like :mod:`dcmstream.errors`): imports nothing else of dcmstream.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .errors import DcmstreamError

__all__ = ["InvalidValueError", "Window", "check_window", "format_bytes", "parse_size", "parse_window"]

#: (center, width) of a linear VOI window, as in DICOM's Window Center / Window Width.
Window = tuple[float, float]


class InvalidValueError(DcmstreamError, ValueError):
    """A size, window or similar value given by the user cannot be understood."""


_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_size(value: int | float | str) -> int:
    """Bytes from ``2GB``, ``512MiB``, ``1.5G``, ``64mb`` or a plain positive number of bytes.

    Decimal prefixes (kB, MB, GB, TB) are powers of 1000 and binary ones (KiB, MiB,
    GiB, TiB) powers of 1024, as the names say; a bare letter (``2G``) is decimal.
    """
    if isinstance(value, bool):
        raise InvalidValueError("a size must be a number of bytes or a string like '2GB'")
    if isinstance(value, (int, float)):
        if not value > 0 or not math.isfinite(value):
            raise InvalidValueError(f"a size must be positive, got {value}")
        return int(value)
    m = _SIZE.fullmatch(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise InvalidValueError(f"not a size: {value!r} (examples: 2GB, 512MiB, 1.5G, 1000000)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise InvalidValueError(f"a size must be positive, got {value!r}")
    return n


def format_bytes(n: float) -> str:
    """``1.2 GiB``-style text (binary units, thousands separated: ``1,000.0 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def check_window(window: Iterable[float] | object) -> Window:
    """``(center, width)`` as floats; the width must be positive and both finite."""
    try:
        center, width = (float(v) for v in window)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"window must be (center, width), got {window!r}") from exc
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise InvalidValueError(f"window width must be a positive finite number, got {window!r}")
    return center, width


def parse_window(text: str) -> Window:
    """``(center, width)`` from ``"CENTER,WIDTH"`` (e.g. ``"40,400"``)."""
    parts = str(text).split(",")
    if len(parts) != 2:
        raise InvalidValueError(f"window {str(text)[:80]!r}: use CENTER,WIDTH, e.g. 40,400")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidValueError(f"window {str(text)[:80]!r}: use CENTER,WIDTH, e.g. 40,400") from None
    return check_window(values)
