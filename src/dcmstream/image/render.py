"""From stored values to display pixels: modality rescale, VOI window, 8-bit.

The path every viewer needs (16-bit CT to 8-bit screen). Linear windowing
follows PS3.3 C.11.2.1.2; MONOCHROME1 is inverted so that the result always
displays with 0 = black.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = ["default_window", "rescale_params", "window_to_uint8"]


def _first_float(value: object) -> float | None:
    """First value of a (possibly multi-valued) DS/IS element, or None."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def rescale_params(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) of the modality LUT; (1, 0) when absent."""
    slope = _first_float(ds.get("RescaleSlope")) or 1.0
    intercept = _first_float(ds.get("RescaleIntercept")) or 0.0
    return slope, intercept


def default_window(ds: Dataset, frame: np.ndarray | None = None) -> tuple[float, float] | None:
    """The file's first (center, width), or the frame's full range after rescale."""
    center = _first_float(ds.get("WindowCenter"))
    width = _first_float(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        return center, width
    if frame is None:
        return None
    slope, intercept = rescale_params(ds)
    lo = float(frame.min()) * slope + intercept
    hi = float(frame.max()) * slope + intercept
    lo, hi = min(lo, hi), max(lo, hi)
    return (lo + hi) / 2, max(hi - lo, 1.0)


def window_to_uint8(
    frame: np.ndarray, ds: Dataset, window: tuple[float, float] | None = None, photometric: str | None = None
) -> np.ndarray:
    """Map a decoded frame to uint8 for display.

    Grayscale: rescale, then the linear VOI window (the given one, else the file's,
    else the frame's range); MONOCHROME1 is inverted. Colour frames are scaled
    from their bit depth to 8 bits.
    """
    photometric = photometric or str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if frame.ndim == 3:
        if frame.dtype == np.uint8:
            return frame
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(frame.astype(np.float32) * (255.0 / ((1 << bits) - 1)), 0, 255).astype(np.uint8)
    slope, intercept = rescale_params(ds)
    center, width = window or default_window(ds, frame) or (0.0, 1.0)
    values = frame.astype(np.float32) * slope + intercept
    # PS3.3 C.11.2.1.2.1: linear function with the -0.5 / width-1 convention.
    low = center - 0.5 - (width - 1) / 2
    scale = 255.0 / max(width - 1, 1e-6)
    out = np.clip((values - low) * scale, 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out
