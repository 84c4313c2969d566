"""Content-aware analysis: how much of each frame is background, and what near-lossless
coding of the background alone would save. Reported only - nothing is written.

Background is what carries no diagnosis: air around the body in CT/MR/CR, black outside
the ultrasound sector. The mask is deliberately cheap and conservative (numpy only):

1. foreground = pixels clearly above the darkest level - for 8-bit colour/ultrasound,
   any channel above a small threshold; otherwise 10 % of the way from the minimum to the
   99.5th percentile (CT air is at the minimum, with noise well below that);
2. noise specks are ignored by thresholding 4x4 block means, not single pixels;
3. the body/sector is the intersection of the row-wise and column-wise spans of foreground
   (a "hull" that fills the lungs, the bowel gas and dark cysts: they are not background).

The saving is measured, not modelled: the frame is coded with JPEG-LS lossless as is; the
region-of-interest alternative is coded as two JPEG-LS images - the body losslessly with the
background flattened to one value (run mode makes it nearly free), and the background with
NEAR=``near`` with the body flattened - and the two sizes are added. No body sample changes
(checked: ``max_body_error`` is 0); no background sample moves by more than ``near``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..image import open as open_instance
from .encoders import JpegLsEncoder

__all__ = ["BackgroundEstimate", "analyse_background", "background_mask"]

_BLOCK = 4
_US_THRESHOLD = 12  # 8-bit: JPEG ringing and speckle floor outside the sector stay below


def background_mask(frame: np.ndarray, *, ultrasound: bool = False) -> np.ndarray:
    """Boolean mask, True where ``frame`` is background (see the module notes)."""
    grey = frame.max(axis=2) if frame.ndim == 3 else frame
    rows, cols = grey.shape
    br, bc = max(rows // _BLOCK, 1), max(cols // _BLOCK, 1)
    f = _BLOCK if rows >= _BLOCK and cols >= _BLOCK else 1
    blocks = grey[:br * f, :bc * f].reshape(br, f, bc, f).mean(axis=(1, 3), dtype=np.float64)
    if ultrasound or (frame.ndim == 3 and frame.dtype == np.uint8):
        threshold: float = _US_THRESHOLD
    else:
        low = float(blocks.min())
        high = float(np.percentile(blocks, 99.5))
        if high <= low:
            return np.zeros(grey.shape, dtype=bool)  # flat image: nothing to tell apart
        threshold = low + 0.1 * (high - low)
    fg = blocks > threshold
    hull = np.zeros_like(fg)
    any_row, any_col = fg.any(axis=1), fg.any(axis=0)
    if not any_row.any():
        return np.ones(grey.shape, dtype=bool)
    idx = np.arange(bc)
    first = np.where(any_row, fg.argmax(axis=1), bc)
    last = np.where(any_row, bc - 1 - fg[:, ::-1].argmax(axis=1), -1)
    row_span = (idx[None, :] >= first[:, None]) & (idx[None, :] <= last[:, None])
    jdx = np.arange(br)
    top = np.where(any_col, fg.argmax(axis=0), br)
    bottom = np.where(any_col, br - 1 - fg[::-1, :].argmax(axis=0), -1)
    col_span = (jdx[:, None] >= top[None, :]) & (jdx[:, None] <= bottom[None, :])
    hull = row_span & col_span
    # Back to full resolution; the cropped right/bottom edge follows its neighbours.
    body = np.repeat(np.repeat(hull, f, axis=0), f, axis=1)
    full = np.zeros(grey.shape, dtype=bool)
    full[:body.shape[0], :body.shape[1]] = body
    if body.shape[0] < rows:
        full[body.shape[0]:, :body.shape[1]] = body[-1:, :]
    if body.shape[1] < cols:
        full[:, body.shape[1]:] = full[:, body.shape[1] - 1:body.shape[1]]
    return ~full


@dataclass
class BackgroundEstimate:
    """Background share and the saving near-lossless background coding would bring."""

    source: str
    frames_analysed: int
    background_fraction: float  # mean over the analysed frames
    near: int
    lossless_bytes: int  # JPEG-LS lossless of the analysed frames
    background_near_bytes: int  # body lossless + background near-lossless, coded apart
    max_body_error: int  # always 0: the body is untouched (checked)

    @property
    def saving(self) -> float:
        """Fraction of the lossless size that near-lossless background coding saves."""
        if not self.lossless_bytes:
            return 0.0
        return 1.0 - self.background_near_bytes / self.lossless_bytes

    def as_dict(self) -> dict[str, object]:
        data = dict(self.__dict__)
        data["saving"] = self.saving
        return data


def _fill(frame: np.ndarray, where: np.ndarray, value: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[where] = value
    return out


def analyse_background(path: str | os.PathLike[str], *, near: int | None = None,
                       max_frames: int = 8) -> BackgroundEstimate | None:
    """Measure background on up to ``max_frames`` evenly spaced frames of ``path``.

    ``near`` defaults to 2 for 8-bit data and 16 above (+-16 HU in the air of a CT).
    Returns None for images this analysis does not apply to (palette, bitmap, more than 16
    bits).
    """
    with open_instance(path, cache=False) as inst:
        if not inst.has_pixels:
            return None
        spec = inst.pixel_spec
        if spec.photometric_interpretation == "PALETTE COLOR" or spec.bits_allocated not in (8, 16) \
                or spec.pixel_keyword != "PixelData" or spec.samples_per_pixel not in (1, 3) \
                or spec.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2", "RGB",
                                                           "YBR_FULL", "YBR_FULL_422",
                                                           "YBR_RCT", "YBR_ICT"):
            return None
        bits, signed = spec.bits_stored, bool(spec.pixel_representation)
        if near is None:
            near = 2 if bits <= 8 else 16
        near = max(1, min(near, 255, ((1 << bits) - 1) // 2))  # CharLS' range
        ultrasound = str(inst.dataset.get("Modality", "")) == "US"
        encoder = JpegLsEncoder(bits, spec.bits_allocated, signed, spec.samples_per_pixel)
        near_encoder = JpegLsEncoder(bits, spec.bits_allocated, signed, spec.samples_per_pixel,
                                     near)
        n = len(inst)
        picks = sorted({round(k * (n - 1) / max(max_frames - 1, 1)) for k in range(min(n, max_frames))})
        fractions, lossless, reduced, worst = [], 0, 0, 0
        for i in picks:
            frame = np.asarray(inst.frame(i))
            if spec.photometric_interpretation == "MONOCHROME1":
                # Air is bright in MONOCHROME1: analyse the inverted image.
                mask = background_mask((1 << bits) - 1 - frame.astype(np.int64) if not signed
                                       else -frame.astype(np.int64))
            else:
                mask = background_mask(frame, ultrasound=ultrasound)
            fractions.append(float(mask.mean()))
            lossless += len(encoder(frame))
            if not mask.any() or mask.all():
                reduced += len(encoder(frame) if not mask.all() else near_encoder(frame))
                continue
            # Body alone, losslessly (background flattened: JPEG-LS run mode makes it ~free),
            # plus background alone, near-lossless (body flattened): what ROI coding costs.
            flat = np.median(frame[mask], axis=0).astype(frame.dtype)
            body_only = _fill(frame, mask, flat)
            background_only = _fill(frame, ~mask, flat)
            reduced += len(encoder(body_only)) + len(near_encoder(background_only))
            worst = max(worst, int(np.abs(body_only[~mask].astype(np.int64)
                                          - frame[~mask]).max(initial=0)))
    return BackgroundEstimate(str(path), len(picks), float(np.mean(fractions)), near,
                              lossless, reduced, worst)
