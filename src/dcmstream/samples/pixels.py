"""Synthetic pixel data: anatomy-like CT/MR slices and ultrasound cine frames.

:func:`synthetic_frames` returns a cheap ``frame_number -> ndarray`` function. Images vary
smoothly with the frame number and carry realistic noise, so codecs reach realistic
compression ratios (JPEG-LS lossless ~3-4x on CT) instead of the extremes of flat or
white-noise images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["CT_INTERCEPT_UNSIGNED", "KINDS", "FrameSource", "synthetic_frames"]

KINDS = ("ct", "mr", "us")
FrameSource = Callable[[int], np.ndarray]

# Anatomy is precomputed at a few key positions along the stack and cross-faded in between:
# per frame that costs a handful of vectorised operations (~0.5 ms for 512x512) instead of
# rasterising shapes. The cycle is closed (last key blends back into the first).
_KEYFRAMES = 4
_FRAMES_PER_KEY = 32

# Noise is a rotation between two fixed fields; a period incommensurate with the anatomy
# cycle avoids exact repeats of whole frames.
_NOISE_PERIOD = 53
_CT_AIR_HU = -1000
CT_INTERCEPT_UNSIGNED = -1024  # Stored value = HU + 1024, so air is stored as 24.
_TWELVE_BITS = 4095


def synthetic_frames(
    kind: str = "ct",
    *,
    rows: int = 512,
    columns: int = 512,
    seed: int = 0,
    signed: bool = False,
) -> FrameSource:
    """Return ``frame_number -> ndarray`` producing synthetic frames of the given kind.

    * ``"ct"``: 12-bit stored values of an axial body slice (air, fat, soft tissue with ~40 HU
      noise, lungs, organs, spine and ribs). Unsigned (default): ``uint16`` with
      stored = HU + 1024 (rescale intercept -1024, air stored as 24). ``signed=True``:
      ``int16`` with stored = HU (rescale intercept 0, air stored as -1000).
    * ``"mr"``: ``uint16``, 12-bit, a T1-like head slice, noisy everywhere (background too).
    * ``"us"``: ``uint8`` RGB ``(rows, columns, 3)``: a speckled sector on black with a small
      pulsating colour-Doppler patch.

    Frames are deterministic in ``(kind, rows, columns, seed, signed, frame_number)`` and any
    frame number can be requested in any order. The returned arrays are fresh (callers may
    modify them).
    """
    if kind not in KINDS:
        raise InvalidArgumentError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if signed and kind != "ct":
        raise InvalidArgumentError(f"signed=True is only supported for kind 'ct', not {kind!r}")
    if rows < 8 or columns < 8 or seed < 0:
        raise InvalidArgumentError(f"need rows, columns >= 8 and seed >= 0, got {rows}x{columns}, {seed}")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    if kind == "us":
        return _ultrasound_source(rng, rows, columns)
    u, v = _unit_grid(rows, columns)
    if kind == "mr":
        keys = [_mr_anatomy(u, v, k / _KEYFRAMES) for k in range(_KEYFRAMES)]
        noise = _noise_pair(rng, (rows, columns), std=25.0, mask=None)
        return _blended_source(keys, noise, offset=0, low=0, high=_TWELVE_BITS, dtype=np.uint16)
    keys = [_ct_anatomy(u, v, k / _KEYFRAMES) for k in range(_KEYFRAMES)]
    noise = _noise_pair(rng, (rows, columns), std=40.0, mask=_ct_body(u, v))
    if signed:
        return _blended_source(keys, noise, offset=0, low=-2048, high=2047, dtype=np.int16)
    return _blended_source(keys, noise, offset=-CT_INTERCEPT_UNSIGNED, low=0,
                           high=_TWELVE_BITS, dtype=np.uint16)


def _unit_grid(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] (u across columns, v down rows), float32."""
    u = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
    v = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    return u, v


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float,
             angle: float = 0.0) -> np.ndarray:
    """Boolean mask of a (rotated) ellipse; radii <= 0 give an empty mask."""
    if ru <= 0 or rv <= 0:
        return np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    c, s = np.cos(angle), np.sin(angle)
    du, dv = u - np.float32(cu), v - np.float32(cv)  # a row and a column: cheap
    # In-place arithmetic keeps the set-up peak at two full-size float32 temporaries.
    along = du * np.float32(c / ru) + dv * np.float32(s / ru)
    along *= along
    across = dv * np.float32(c / rv) - du * np.float32(s / rv)
    across *= across
    along += across
    return along <= 1.0


def _paint(canvas: np.ndarray, value: float | np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` with a constant or with a texture array of the canvas' shape."""
    np.copyto(canvas, np.asarray(value), casting="unsafe", where=mask)


def _ct_body(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The outline is fixed along the stack so air stays exactly flat: noise is masked once.
    return _ellipse(u, v, 0.0, -0.02, 0.92, 0.68)


def _ct_anatomy(u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Noise-free HU image (int16) at ``phase`` in [0, 1) of a thorax -> abdomen -> thorax cycle."""
    thorax = 0.5 + 0.5 * np.cos(2 * np.pi * phase)  # 1: lungs and heart, 0: liver and kidneys
    belly = 1.0 - thorax
    hu = np.full(np.broadcast_shapes(u.shape, v.shape), _CT_AIR_HU, dtype=np.int16)
    _paint(hu, 120, (v > 0.70) & (v < 0.74) & (np.abs(u) < 0.92))  # patient table
    _paint(hu, -100, _ct_body(u, v))  # subcutaneous fat
    # Soft tissue with gentle heterogeneity (organs are not flat).
    texture = np.sin(9 * u + np.float32(3 * phase)) * np.cos(7 * v) * np.float32(8)
    texture += np.cos(17 * (u + v)) * np.float32(5) + np.float32(40)
    _paint(hu, texture, _ellipse(u, v, 0.0, -0.01, 0.84, 0.60))
    del texture
    for side in (-1, 1):  # lungs
        _paint(hu, -850, _ellipse(u, v, 0.38 * side, -0.06, 0.30 * thorax, 0.40 * thorax,
                                  0.2 * side))
    _paint(hu, 140, _ellipse(u, v, 0.06, -0.02, 0.22 * thorax, 0.20 * thorax, 0.5))  # heart
    _paint(hu, 110, _ellipse(u, v, -0.30, 0.00, 0.38 * belly, 0.30 * belly, -0.3))  # liver
    _paint(hu, 120, _ellipse(u, v, 0.42, -0.08, 0.14 * belly, 0.20 * belly, 0.6))  # spleen
    for side in (-1, 1):  # kidneys
        _paint(hu, 170, _ellipse(u, v, 0.36 * side, 0.26, 0.11 * belly, 0.15 * belly,
                                 0.4 * side))
    _paint(hu, 180, _ellipse(u, v, 0.12, 0.22, 0.05, 0.06))  # aorta with contrast
    # Spine: cortical shell around cancellous bone, plus the spinous process.
    _paint(hu, 1100, _ellipse(u, v, 0.0, 0.38, 0.14, 0.13))
    _paint(hu, 260, _ellipse(u, v, 0.0, 0.38, 0.11, 0.10))
    _paint(hu, 700, _ellipse(u, v, 0.0, 0.53, 0.03, 0.07))
    # Ribs along the inner body wall, sliding with the phase.
    for k in range(10):
        angle = 2 * np.pi * (k + 0.5 * phase) / 10
        ru = 0.035 * thorax + 0.012
        _paint(hu, 850, _ellipse(u, v, 0.76 * np.cos(angle), 0.03 + 0.52 * np.sin(angle),
                                 ru, ru))
    return hu


def _mr_anatomy(u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Noise-free T1-like head slice (int16 signal units) at ``phase`` in [0, 1)."""
    wave = 0.5 + 0.5 * np.cos(2 * np.pi * phase)
    img = np.full(np.broadcast_shapes(u.shape, v.shape), 40, dtype=np.int16)
    _paint(img, 1900, _ellipse(u, v, 0.0, 0.0, 0.72, 0.88))  # scalp fat
    _paint(img, 150, _ellipse(u, v, 0.0, 0.0, 0.66, 0.82))  # skull
    grey = np.sin(11 * u) * np.cos(8 * v + np.float32(phase)) * np.float32(60)
    grey += np.float32(1250)
    _paint(img, grey, _ellipse(u, v, 0.0, 0.0, 0.62, 0.78))  # grey matter
    del grey
    _paint(img, 1700, _ellipse(u, v, 0.0, 0.02, 0.46, 0.60))  # white matter
    for side in (-1, 1):  # lateral ventricles (CSF is dark on T1)
        _paint(img, 350, _ellipse(u, v, 0.09 * side, -0.05, 0.05 + 0.05 * wave, 0.25,
                                  0.25 * side))
    return img


def _noise_pair(rng: np.random.Generator, shape: tuple[int, int], *, std: float,
                mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Two independent, slightly correlated noise fields (like reconstructed CT noise)."""
    fields = []
    for _ in range(2):
        white = rng.standard_normal(shape, dtype=np.float32)
        smooth = np.roll(white, 1, 0)
        smooth += np.roll(white, 1, 1)
        smooth *= np.float32(0.5)
        smooth += white
        del white
        smooth *= np.float32(std / smooth.std())
        if mask is not None:
            smooth *= mask
        fields.append(np.rint(smooth).astype(np.int16))  # int16 halves the resident memory
    return fields[0], fields[1]


def _blended_source(keys: list[np.ndarray], noise: tuple[np.ndarray, np.ndarray], *,
                    offset: int, low: int, high: int, dtype: type) -> FrameSource:
    """Frame n = cross-fade of two anatomy keys + rotated noise + offset, clipped to range."""

    def frame(n: int) -> np.ndarray:
        position, weight = divmod(n / _FRAMES_PER_KEY, 1.0)
        first = keys[int(position) % len(keys)]
        second = keys[(int(position) + 1) % len(keys)]
        theta = 2 * np.pi * n / _NOISE_PERIOD
        img = first * np.float32(1.0 - weight)
        img += second * np.float32(weight)
        # cos/sin rotation keeps the noise variance constant from frame to frame.
        img += noise[0] * np.float32(np.cos(theta))
        img += noise[1] * np.float32(np.sin(theta))
        # Round before the offset so signed and unsigned CT hold exactly the same HU.
        np.rint(img, out=img)
        img += np.float32(offset)
        np.clip(img, low, high, out=img)
        return img.astype(dtype)

    return frame


def _ultrasound_source(rng: np.random.Generator, rows: int, columns: int) -> FrameSource:
    """Sector scan: speckle x echogenicity inside a fan, black outside, colour Doppler box."""
    # Coordinates in units of the image height, origin at the top centre.
    y = np.arange(rows, dtype=np.float32)[:, None] / rows
    x = (np.arange(columns, dtype=np.float32)[None, :] - columns / 2) / rows
    apex = -0.06
    radius = np.hypot(x, y - apex)
    fan = (radius > 0.12) & (radius < 0.95) & (np.abs(np.arctan2(x, y - apex)) < 0.5)
    # Echogenicity: attenuation with depth, a bright fascia line, a dark cyst and a vessel.
    echo = (1.0 - 0.55 * radius) * fan
    echo += 0.6 * fan * (np.abs(y - 0.30 - 0.02 * np.sin(25 * x)) < 0.008)
    echo[_ellipse(x, y, 0.18, 0.45, 0.07, 0.05)] *= 0.08  # hypoechoic cyst
    path = 0.62 + 0.06 * np.sin(6 * x)  # vessel centre line
    vessel = fan & (np.abs(y - path) < 0.035)
    echo[vessel] *= 0.05
    speckle = [rng.rayleigh(1.0, (rows, columns)).astype(np.float32) * echo * np.float32(95)
               for _ in range(2)]
    # Doppler: flow along the curved vessel projected on the beam (positive = towards the
    # probe, shown red). The projection changes sign inside the box, so red and blue show.
    box_y, box_x = np.nonzero(vessel & (np.abs(x + 0.15) < 0.15))
    bx, by = x[0, box_x], y[box_y, 0]
    along = np.stack([np.ones_like(bx), 0.36 * np.cos(6 * bx)])  # d(path)/dx
    beam = np.stack([bx, by - apex])
    towards = -(along * beam).sum(axis=0) / np.hypot(*along) / np.hypot(*beam)
    profile = 1.0 - ((by - path[0, box_x]) / 0.035) ** 2  # laminar: fastest at the centre
    velocity = (profile * np.sign(towards)).astype(np.float32)

    def frame(n: int) -> np.ndarray:
        weight = np.float32(0.5 - 0.5 * np.cos(2 * np.pi * n / _NOISE_PERIOD))
        gray = speckle[0] * (1 - weight)
        gray += speckle[1] * weight
        np.clip(gray, 0, 255, out=gray)
        out = np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
        pulse = 0.25 + 0.75 * np.sin(np.pi * (n % 24) / 24) ** 2  # ~24 frames per heartbeat
        flow = velocity * np.float32(pulse)
        colour = np.zeros((flow.size, 3), dtype=np.float32)
        colour[:, 0] = np.clip(flow, 0, 1) * 220 + 35 * (flow > 0)
        colour[:, 1] = np.abs(flow) * 50
        colour[:, 2] = np.clip(-flow, 0, 1) * 220 + 35 * (flow < 0)
        out[box_y, box_x] = colour.astype(np.uint8)
        return out

    return frame
