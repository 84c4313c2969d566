"""Synthetic but realistic DICOM multi-frame files for the demo, the tests and the benchmarks.

Two layers:

* :func:`synthetic_frames` returns a cheap ``frame_number -> ndarray`` function producing
  anatomy-like CT/MR slices or ultrasound cine frames. Images vary smoothly with the frame
  number and carry realistic noise, so codecs reach realistic compression ratios (JPEG-LS
  lossless ~3-4x on CT) instead of the extremes of flat or white-noise images.
* :func:`write_multiframe` writes a DICOM Part 10 file in any transfer syntax of
  :data:`SYNTAXES`. It *streams*: frames are generated, encoded and written one at a time, so
  memory stays bounded to a few frames whatever the number of frames. pydicom encodes the
  header; the Pixel Data element (native or encapsulated, with Basic or Extended Offset Table)
  and the per-frame functional groups (Enhanced CT; their items encoded by hand, for speed)
  are streamed by :mod:`dcmstream.compress.writer`, the writer the transcoder uses too.

The headers are valid for their IODs (Enhanced CT, Multi-frame Grayscale Word Secondary
Capture, Ultrasound Multi-frame; CT Image for :func:`write_series`): dicom3tools' ``dciodvfy``
reports no error in any syntax it knows.

UIDs are derived deterministically: Patient and Study from ``seed`` (files written with the
same seed form one study), Series and SOP Instance from all parameters (two different files
never share a SOP Instance UID, the same call always produces the same UIDs).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from .codecs.syntaxes import by_name, uid_of
from .compress import writer
from .compress.encoders import jpegls_encode, unsigned_pattern
from .compress.header import patch_ratio, ratio_placeholder

__all__ = ["SYNTAXES", "ensure_sample", "synthetic_frames", "write_multiframe", "write_series"]

#: The syntaxes samples are written in, by short name (UIDs from the one syntax table).
SYNTAXES: dict[str, str] = {name: uid_of(name) for name in (
    "implicit", "explicit", "big-endian", "deflated", "rle", "jpeg-baseline", "jpeg-ext12", "jpeg-lossless",
    "jpeg-lossless-sv1", "jpeg-ls", "jpeg-ls-near", "j2k-lossless", "j2k", "htj2k-lossless", "htj2k-rpcl", "htj2k",
)}

KINDS = ("ct", "mr", "us")
OFFSET_TABLES = ("bot", "none", "eot")

FrameSource = Callable[[int], np.ndarray]

# ---------------------------------------------------------------------------------------------
# Synthetic pixel data
# ---------------------------------------------------------------------------------------------

# Anatomy is precomputed at a few key positions along the stack and cross-faded in between:
# per frame that costs a handful of vectorised operations (~0.5 ms for 512x512) instead of
# rasterising shapes. The cycle is closed (last key blends back into the first).
_KEYFRAMES = 4
_FRAMES_PER_KEY = 32
# Noise is a rotation between two fixed fields; a period incommensurate with the anatomy
# cycle avoids exact repeats of whole frames.
_NOISE_PERIOD = 53

_CT_AIR_HU = -1000
_CT_INTERCEPT_UNSIGNED = -1024  # Stored value = HU + 1024, so air is stored as 24.
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
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if signed and kind != "ct":
        raise ValueError(f"signed=True is only supported for kind 'ct', not {kind!r}")
    if rows < 8 or columns < 8 or seed < 0:
        raise ValueError(f"need rows, columns >= 8 and seed >= 0, got {rows}x{columns}, {seed}")
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
    return _blended_source(keys, noise, offset=-_CT_INTERCEPT_UNSIGNED, low=0,
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


# ---------------------------------------------------------------------------------------------
# Image layout and codecs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Image Pixel module values implied by the kind of image."""

    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool

    @property
    def dtype(self) -> np.dtype:
        kind = "i" if self.signed else "u"
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    def frame_bytes(self, rows: int, columns: int) -> int:
        return rows * columns * self.samples * self.bits_allocated // 8


def _layout(kind: str, signed: bool) -> _Layout:
    if kind == "us":
        return _Layout(samples=3, bits_allocated=8, bits_stored=8, signed=False)
    return _Layout(samples=1, bits_allocated=16, bits_stored=12, signed=signed)


Encoder = Callable[[np.ndarray], bytes]


@dataclass(frozen=True)
class _Codec:
    """How frames of one syntax are encoded and what the header must say about them."""

    encode: Encoder | None  # None: native (uncompressed) Pixel Data
    photometric: str
    lossy_method: str | None = None  # LossyImageCompressionMethod, None when lossless
    one_fragment_per_frame: bool = False


_NATIVE = tuple(name for name in SYNTAXES if not by_name(name).encapsulated)
_LOSSY_METHODS = {name: by_name(name).lossy_method for name in SYNTAXES if by_name(name).lossy_method}
# Photometric interpretations each syntax can produce from RGB frames; the first is the
# default. JPEG converts to YCbCr unless asked for RGB (then an Adobe marker says so);
# JPEG 2000 applies its reversible (RCT) or irreversible (ICT) colour transform unless RGB.
# The other codecs have no colour transform.
_COLOUR_PHOTOMETRICS: dict[str, tuple[str, ...]] = {
    "jpeg-baseline": ("YBR_FULL_422", "YBR_FULL", "RGB"),
    "jpeg-ext12": ("YBR_FULL_422", "YBR_FULL", "RGB"),
    "j2k-lossless": ("YBR_RCT", "RGB"),
    "htj2k-lossless": ("YBR_RCT", "RGB"),
    "htj2k-rpcl": ("YBR_RCT", "RGB"),
    "j2k": ("YBR_ICT", "RGB"),
    "htj2k": ("YBR_ICT", "RGB"),
}
_GREY_PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")

_JPEG_QUALITY = 90
_JPEG_LOSSLESS_PREDICTOR = 6  # any of 1..7 is valid for .57; .70 requires 1
_JPEG_LS_NEAR = 2
# Lossy settings for roughly 8-10x on CT with errors well below its noise (rms ~7 of 40 HU).
_J2K_PSNR_DB = 55  # relative to the full range of bits stored
_HTJ2K_STEP = 1 / 256  # quantisation step as a fraction of the bits-stored range


def _codec(syntax: str, layout: _Layout, photometric: str | None) -> _Codec:
    choices = _GREY_PHOTOMETRICS if layout.samples == 1 else _COLOUR_PHOTOMETRICS.get(
        syntax, ("RGB",))
    photometric = photometric or choices[0]
    if photometric not in choices:
        raise ValueError(f"photometric {photometric!r} is not possible with syntax {syntax!r} "
                         f"for this kind of image; choose one of {choices}")
    if syntax in _NATIVE:
        return _Codec(None, photometric)
    if syntax == "jpeg-baseline" and layout.bits_allocated != 8:
        raise ValueError("jpeg-baseline holds 8-bit samples only: use kind='us' or jpeg-ext12")
    return _Codec(
        encode=_encoder(syntax, layout, colour_transform=photometric.startswith("YBR"),
                        subsampling="422" if photometric == "YBR_FULL_422" else "444"),
        photometric=photometric,
        lossy_method=_LOSSY_METHODS.get(syntax),
        one_fragment_per_frame=syntax == "rle",  # PS3.5 A.4.2
    )


def _encoder(syntax: str, layout: _Layout, *, colour_transform: bool,
             subsampling: str) -> Encoder:
    bits = layout.bits_stored
    if syntax == "rle":
        return lambda frame: _rle_encode(frame, layout)
    if syntax in ("jpeg-baseline", "jpeg-ext12"):
        colour: dict[str, str] = {}
        if layout.samples > 1:
            colour = ({"subsampling": subsampling} if colour_transform
                      else {"colorspace": "RGB", "outcolorspace": "RGB"})
        return lambda frame: imagecodecs.jpeg8_encode(
            unsigned_pattern(frame, layout.bits_stored, layout.signed), level=_JPEG_QUALITY, bitspersample=bits, **colour)
    if syntax in ("jpeg-lossless", "jpeg-lossless-sv1"):
        predictor = 1 if syntax == "jpeg-lossless-sv1" else _JPEG_LOSSLESS_PREDICTOR
        return lambda frame: imagecodecs.jpeg8_encode(
            unsigned_pattern(frame, layout.bits_stored, layout.signed), lossless=True, predictor=predictor,
            bitspersample=bits)
    if syntax in ("jpeg-ls", "jpeg-ls-near"):
        near = _JPEG_LS_NEAR if syntax == "jpeg-ls-near" else 0
        return lambda frame: _jpegls_encode(frame, layout, near)
    if syntax in ("j2k-lossless", "j2k"):
        # OpenJPEG writes signed components for int16 input, so no bit-pattern trick here.
        lossy = syntax == "j2k"
        return lambda frame: imagecodecs.jpeg2k_encode(
            frame, level=_J2K_PSNR_DB if lossy else None, codecformat="J2K",
            bitspersample=bits, reversible=not lossy, mct=colour_transform)
    if syntax in ("htj2k-lossless", "htj2k-rpcl", "htj2k"):
        # OpenJPH's default progression order is already RPCL; .202 also requires TLM markers.
        # It codes the full 16-bit precision of (u)int16 input (no bits-per-sample option), and
        # its quantisation step is relative to that range.
        lossy = syntax == "htj2k"
        step = _HTJ2K_STEP * 2 ** (bits - 8 * layout.dtype.itemsize) if lossy else None
        return lambda frame: imagecodecs.htj2k_encode(
            frame, level=step, reversible=not lossy, rgb=colour_transform,
            tlm=syntax == "htj2k-rpcl")
    raise ValueError(f"unknown syntax {syntax!r}; expected one of {list(SYNTAXES)}")


def _jpegls_encode(frame: np.ndarray, layout: _Layout, near: int) -> bytes:
    # Precision = Bits Stored (imagecodecs alone would declare 16 for uint16 input, and
    # readers could not sign-extend signed data): the compression package's encoder.
    return jpegls_encode(frame, layout.bits_stored, layout.signed, near)


def _rle_encode(frame: np.ndarray, layout: _Layout) -> bytes:
    # imagecodecs.dicomrle_encode raises NotImplementedError in this build; pylibjpeg-rle
    # writes the DICOM RLE format (64-byte header of segment offsets, one segment per byte
    # plane, most significant byte first).
    from rle.utils import encode_pixel_data

    return encode_pixel_data(
        np.ascontiguousarray(frame).tobytes(), rows=frame.shape[0], columns=frame.shape[1],
        samples_per_pixel=layout.samples, bits_allocated=layout.bits_allocated,
        byteorder="<")


# ---------------------------------------------------------------------------------------------
# Element encoding and Pixel Data: the shared streaming writer
# ---------------------------------------------------------------------------------------------

_PER_FRAME_GROUPS = writer.PER_FRAME_GROUPS
_split_fragments = writer.split_fragments  # kept under its old name for the tests


def _encoding(syntax: str) -> writer.Encoding:
    return writer.encoding_for(SYNTAXES[syntax])


class _SizeCounter:
    """An encoder that also sums the sizes of the codestreams it returns."""

    def __init__(self, encode: Encoder) -> None:
        self._encode = encode
        self.total = 0

    def __call__(self, frame: np.ndarray) -> bytes:
        data = self._encode(frame)
        self.total += len(data)
        return data


def _ratio_offset(header: bytes) -> int:
    """Where the reserved Lossy Image Compression Ratio text is in the encoded header
    (explicit VR little endian, as with every encapsulated syntax): found with its element
    header, so no other value can be mistaken for it."""
    placeholder = ratio_placeholder().encode("ascii")
    element = struct.pack("<HH2sH", 0x0028, 0x2112, b"DS", len(placeholder)) + placeholder
    return header.index(element) + len(element) - len(placeholder)


def _write_native(out: BinaryIO | writer.DeflateWriter, enc: writer.Encoding, layout: _Layout,
                  frames: Iterator[np.ndarray], count: int, frame_bytes: int) -> None:
    writer.write_native(out, enc, frames, count, frame_bytes=frame_bytes,
                        bits_allocated=layout.bits_allocated, dtype=layout.dtype)


# ---------------------------------------------------------------------------------------------
# Dataset (header)
# ---------------------------------------------------------------------------------------------

_SOP_CLASSES = {
    "ct": "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "mr": "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "us": "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
}
_IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["dcmstream", "implementation"])
_FIELD_OF_VIEW_MM = 400.0
_SLICE_SPACING_MM = 1.0
_US_FRAME_TIME_MS = 33.3
_WINDOWS = {"ct": (40, 400), "mr": (1000, 2000)}  # (center, width) in rescaled units
_DEVICE_SERIAL_NUMBER = "DCMSTREAM-0001"
# The sample generator's own version, not the package's: files stay byte-identical across
# package releases as long as this does not change.
_SOFTWARE_VERSIONS = "dcmstream samples 1"
_PATIENT_POSITION = "HFS"  # head first supine: the stack runs head to feet (z decreasing)

# One plausible helical body protocol (64 x 0.625 mm, pitch 1, 0.5 s rotation, 120 kVp,
# 200 mA) from which every CT acquisition attribute and frame time below is derived, so the
# numbers agree with one another: the table feed is pitch x collimation per rotation, frame
# n starts when the table has advanced n slice spacings.
_CT_KVP = 120.0
_CT_TUBE_CURRENT_MA = 200
_CT_REVOLUTION_S = 0.5
_CT_SINGLE_COLLIMATION_MM = 0.625
_CT_TOTAL_COLLIMATION_MM = 40.0
_CT_PITCH = 1.0
_CT_TABLE_FEED_MM = _CT_PITCH * _CT_TOTAL_COLLIMATION_MM  # per rotation
_CT_TABLE_SPEED_MM_S = _CT_TABLE_FEED_MM / _CT_REVOLUTION_S
_CT_FRAME_INTERVAL_US = round(1e6 * _SLICE_SPACING_MM / _CT_TABLE_SPEED_MM_S)
_CT_FRAME_DURATION_MS = 1000 * _CT_REVOLUTION_S  # each slice is reconstructed from a rotation
_CT_CTDI_VOL_MGY = 8.0
_CT_ACQUISITION_START = datetime(2024, 1, 15, 12, 0, 0)  # = StudyDate/StudyTime


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["dcmstream-samples", *map(str, parts)])


def _item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _sequence_item(**elements: object) -> Sequence:
    return Sequence([_item(**elements)])


def _code(value: str, designator: str, meaning: str) -> Dataset:
    """A Code Sequence Macro item (PS3.3 8.8)."""
    return _item(CodeValue=value, CodingSchemeDesignator=designator, CodeMeaning=meaning)


def _build_dataset(*, kind: str, syntax: str, layout: _Layout, codec: _Codec, frames: int,
                   rows: int, columns: int, seed: int, instance_key: tuple[object, ...]) -> Dataset:
    """Everything but Pixel Data and, for CT, the per-frame functional groups."""
    ds = Dataset()
    sop_class = _SOP_CLASSES[kind]
    sop_instance = _uid("instance", *instance_key)
    ds.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = SYNTAXES[syntax]
    meta.ImplementationClassUID = _IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = "DCMSTREAM"

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"DS{seed:08d}"
    ds.Modality = kind.upper()
    _add_equipment(ds)
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "dcmstream synthetic study"
    ds.SeriesDescription = f"{kind.upper()} {syntax} {frames} frames"
    ds.PatientName = f"Synthetic^Sample{seed}"
    ds.PatientID = f"DCMSTREAM-{seed}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid("study", seed)
    ds.SeriesInstanceUID = _uid("series", *instance_key)
    ds.StudyID = "1"
    # Readable and stable: hundreds say the kind, units the syntax.
    ds.SeriesNumber = 100 * (KINDS.index(kind) + 1) + list(SYNTAXES).index(syntax)
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"

    ds.SamplesPerPixel = layout.samples
    ds.PhotometricInterpretation = codec.photometric
    if layout.samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = layout.bits_allocated
    ds.BitsStored = layout.bits_stored
    ds.HighBit = layout.bits_stored - 1
    ds.PixelRepresentation = int(layout.signed)
    ds.NumberOfFrames = frames
    if codec.lossy_method:
        ds.LossyImageCompression = "01"
        # Known once every frame is encoded: reserved here, filled in by patch_ratio.
        ds.LossyImageCompressionRatio = ratio_placeholder()
        ds.LossyImageCompressionMethod = codec.lossy_method
    elif kind == "ct":
        ds.LossyImageCompression = "00"  # Enhanced CT requires it (1C) even when lossless
    if kind in _WINDOWS:
        ds.WindowCenter, ds.WindowWidth = _WINDOWS[kind]
        intercept = _CT_INTERCEPT_UNSIGNED if kind == "ct" and not layout.signed else 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
        ds.RescaleType = "HU" if kind == "ct" else "US"
    if kind == "ct":
        _add_enhanced_ct(ds, seed=seed, rows=rows, columns=columns, frames=frames,
                         irradiation_event=_uid("irradiation-event", *instance_key))
    elif kind == "mr":
        _add_secondary_capture(ds, frames=frames)
    else:
        _add_ultrasound(ds)
    return ds


def _add_equipment(ds: Dataset) -> None:
    # Enhanced General Equipment (Enhanced CT) makes all four type 1; harmless elsewhere.
    ds.Manufacturer = "dcmstream"
    ds.ManufacturerModelName = "synthetic sample"
    ds.DeviceSerialNumber = _DEVICE_SERIAL_NUMBER
    ds.SoftwareVersions = _SOFTWARE_VERSIONS


def _add_enhanced_ct(ds: Dataset, *, seed: int, rows: int, columns: int, frames: int,
                     irradiation_event: str) -> None:
    """Enhanced CT Image IOD (PS3.3 A.38) attributes outside the per-frame groups."""
    # Enhanced CT describes geometry in functional groups; the top-level rescale and window
    # above are kept because simple readers look there (dciodvfy warns: Standard Extended).
    ds.ImageType = image_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    _add_image_description(ds)
    ds.PatientPosition = _PATIENT_POSITION
    ds.FrameOfReferenceUID = _uid("frame-of-reference", seed)
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionDateTime = _CT_ACQUISITION_START.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDuration = _ct_acquisition_duration_s(frames)
    ds.AcquisitionContextSequence = Sequence()  # type 2: nothing to say
    ds.ContentQualification = "RESEARCH"
    ds.PresentationLUTShape = "IDENTITY"
    organisation = _uid("dimension-organisation", seed)
    ds.DimensionOrganizationSequence = _sequence_item(DimensionOrganizationUID=organisation)
    ds.DimensionIndexSequence = _sequence_item(
        DimensionOrganizationUID=organisation,
        DimensionIndexPointer=Tag("InStackPositionNumber"),
        FunctionalGroupPointer=Tag("FrameContentSequence"))
    spacing = _FIELD_OF_VIEW_MM / max(rows, columns)
    spacing_ds = format_number_as_ds(spacing)  # a float's repr may pass DS's 16 characters
    shared = _item(
        PixelMeasuresSequence=_sequence_item(PixelSpacing=[spacing_ds, spacing_ds],
                                             SliceThickness=_SLICE_SPACING_MM),
        PlaneOrientationSequence=_sequence_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0]),
        PixelValueTransformationSequence=_sequence_item(
            RescaleIntercept=ds.RescaleIntercept, RescaleSlope=1, RescaleType="HU"),
        FrameVOILUTSequence=_sequence_item(WindowCenter=ds.WindowCenter,
                                           WindowWidth=ds.WindowWidth),
        FrameAnatomySequence=_sequence_item(
            # The stack cycles thorax -> abdomen: (SCT 416550000) from CID 4030; unpaired.
            AnatomicRegionSequence=Sequence([_code("416550000", "SCT", "Chest and Abdomen")]),
            FrameLaterality="U"),
        IrradiationEventIdentificationSequence=_sequence_item(
            IrradiationEventUID=irradiation_event),
        CTImageFrameTypeSequence=Sequence([_ct_frame_type(image_type)]),
    )
    shared.update(_ct_acquisition_groups())
    shared.CTReconstructionSequence = _sequence_item(
        ReconstructionAlgorithm="FILTER_BACK_PROJ", ConvolutionKernel="STANDARD",
        ConvolutionKernelGroup="SOFT_TISSUE", ReconstructionDiameter=_FIELD_OF_VIEW_MM,
        ReconstructionPixelSpacing=[spacing, spacing], ReconstructionAngle=360.0,
        ImageFilter="NONE")
    ds.SharedFunctionalGroupsSequence = Sequence([shared])


def _add_image_description(ds: Dataset) -> None:
    # Common CT/MR Image Description macro, image level (PS3.3 C.8.16.2).
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"


def _ct_frame_type(frame_type: list[str]) -> Dataset:
    """CT Image Frame Type macro item: the image's type and description, for every frame."""
    item = _item(FrameType=list(frame_type))
    _add_image_description(item)
    return item


def _ct_acquisition_groups() -> Dataset:
    """The acquisition macros of the (single, helical, single-energy) protocol above.

    Each is one item: several are only allowed for multi-energy acquisitions. None varies
    from frame to frame, so they all go to the Shared Functional Groups."""
    exposure_ms = 1000 * _CT_REVOLUTION_S
    return _item(
        CTAcquisitionTypeSequence=_sequence_item(
            AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO"),
        CTAcquisitionDetailsSequence=_sequence_item(
            RotationDirection="CW", RevolutionTime=_CT_REVOLUTION_S,
            SingleCollimationWidth=_CT_SINGLE_COLLIMATION_MM,
            TotalCollimationWidth=_CT_TOTAL_COLLIMATION_MM, TableHeight=150.0,
            GantryDetectorTilt=0.0, DataCollectionDiameter=500.0),
        CTTableDynamicsSequence=_sequence_item(
            TableSpeed=_CT_TABLE_SPEED_MM_S, TableFeedPerRotation=_CT_TABLE_FEED_MM,
            SpiralPitchFactor=_CT_PITCH),
        CTGeometrySequence=_sequence_item(
            DistanceSourceToDetector=1040.0, DistanceSourceToDataCollectionCenter=570.0),
        CTExposureSequence=_sequence_item(
            ExposureTimeInms=exposure_ms, XRayTubeCurrentInmA=_CT_TUBE_CURRENT_MA,
            ExposureInmAs=_CT_TUBE_CURRENT_MA * exposure_ms / 1000,
            ExposureModulationType="NONE", CTDIvol=_CT_CTDI_VOL_MGY,
            # CTDIvol means nothing without its phantom (CID 4052).
            CTDIPhantomTypeCodeSequence=Sequence([
                _code("113691", "DCM", "IEC Body Dosimetry Phantom")])),
        CTXRayDetailsSequence=_sequence_item(
            KVP=_CT_KVP, FocalSpots=1.2, FilterType="BUTTERFLY", FilterMaterial="ALUMINUM"),
    )


def _ct_acquisition_duration_s(frames: int) -> float:
    return ((frames - 1) * _CT_FRAME_INTERVAL_US / 1000 + _CT_FRAME_DURATION_MS) / 1000


# Tags of the per-frame functional groups, which are encoded by hand (see _ct_frame_groups).
_CT_POSITION_SEQUENCE = 0x00189326
_FRAME_CONTENT_SEQUENCE = 0x00209111
_PLANE_POSITION_SEQUENCE = 0x00209113
_FRAME_ACQUISITION_DATETIME = 0x00189074
_FRAME_REFERENCE_DATETIME = 0x00189151
_FRAME_ACQUISITION_DURATION = 0x00189220
_STACK_ID = 0x00209056
_IN_STACK_POSITION_NUMBER = 0x00209057
_DIMENSION_INDEX_VALUES = 0x00209157
_IMAGE_POSITION_PATIENT = 0x00200032
_TABLE_POSITION = 0x00189327
_DATA_COLLECTION_CENTER_PATIENT = 0x00189313
_RECONSTRUCTION_TARGET_CENTER_PATIENT = 0x00189318


def _ct_frame_groups(enc: writer.Encoding, frames: int, rows: int,
                     columns: int) -> Iterator[bytes]:
    """Per-frame functional groups of a head-to-feet axial stack: one encoded item (its
    contents) per frame, with what changes from frame to frame - timing, plane and table
    position; everything else is in the Shared Functional Groups.

    Encoded by hand rather than through pydicom Datasets, which cost ~0.7 ms a frame for
    these three small sequences (more than generating a 512 x 512 frame); this takes a few
    tens of microseconds. Elements are in tag order within each item, as PS3.5 7.1 requires.
    """
    spacing = _FIELD_OF_VIEW_MM / max(rows, columns)
    origin = f"{format_number_as_ds(-spacing * columns / 2)}\\" \
             f"{format_number_as_ds(-spacing * rows / 2)}\\"
    fd = struct.Struct(f"{enc.byte_order}d")
    ul = struct.Struct(f"{enc.byte_order}I")
    # Constant elements are encoded once.
    duration = _element(enc, _FRAME_ACQUISITION_DURATION, "FD", fd.pack(_CT_FRAME_DURATION_MS))
    stack_id = _element(enc, _STACK_ID, "SH", b"1")
    interval = timedelta(microseconds=_CT_FRAME_INTERVAL_US)
    # Each frame's data is centred half a rotation after its acquisition starts.
    to_reference = timedelta(milliseconds=_CT_FRAME_DURATION_MS / 2)
    for n in range(frames):
        start = _CT_ACQUISITION_START + n * interval
        z = round(-n * _SLICE_SPACING_MM, 3) + 0.0  # + 0.0: no negative zero
        # The image (and reconstruction) centre is the isocentre: x = y = 0.
        centre = fd.pack(0.0) + fd.pack(0.0) + fd.pack(z)
        ct_position = _sequence(enc, _CT_POSITION_SEQUENCE, b"".join((
            _element(enc, _DATA_COLLECTION_CENTER_PATIENT, "FD", centre),
            _element(enc, _RECONSTRUCTION_TARGET_CENTER_PATIENT, "FD", centre),
            _element(enc, _TABLE_POSITION, "FD", fd.pack(z)))))
        index = ul.pack(n + 1)
        frame_content = _sequence(enc, _FRAME_CONTENT_SEQUENCE, b"".join((
            _element(enc, _FRAME_ACQUISITION_DATETIME, "DT", _datetime(start)),
            _element(enc, _FRAME_REFERENCE_DATETIME, "DT", _datetime(start + to_reference)),
            duration, stack_id,
            _element(enc, _IN_STACK_POSITION_NUMBER, "UL", index),
            _element(enc, _DIMENSION_INDEX_VALUES, "UL", index))))
        position = (origin + format_number_as_ds(z)).encode("ascii")
        plane_position = _sequence(enc, _PLANE_POSITION_SEQUENCE,
                                   _element(enc, _IMAGE_POSITION_PATIENT, "DS", position))
        yield ct_position + frame_content + plane_position


def _datetime(moment: datetime) -> bytes:
    return moment.strftime("%Y%m%d%H%M%S.%f").encode("ascii")


def _element(enc: writer.Encoding, tag: int, vr: str, value: bytes) -> bytes:
    """An element of a VR with a 16-bit explicit length (all the per-frame groups use but
    SQ). Text values (DS, DT, SH here) are padded to even length with a space."""
    if len(value) % 2:
        value += b" "
    head = struct.pack(f"{enc.byte_order}HH", tag >> 16, tag & 0xFFFF)
    if enc.implicit:
        return head + struct.pack(f"{enc.byte_order}I", len(value)) + value
    return head + vr.encode("ascii") + struct.pack(f"{enc.byte_order}H", len(value)) + value


def _sequence(enc: writer.Encoding, tag: int, item: bytes) -> bytes:
    """A sequence of one item, both of defined length."""
    return (enc.element_header(tag, "SQ", len(item) + 8)
            + enc.delimiter(writer.ITEM, len(item)) + item)


def _add_secondary_capture(ds: Dataset, *, frames: int) -> None:
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    # An unpaired body part: Laterality (type 2C) is then absent rather than empty.
    ds.BodyPartExamined = "HEAD"
    # No Image Orientation (Patient) in an SC image: rows run to the patient's left,
    # columns to posterior, as in an axial slice seen from the feet.
    ds.PatientOrientation = ["L", "P"]
    if ds.PhotometricInterpretation == "MONOCHROME2":
        # Required then (1C). The IOD allows no MONOCHROME1: that override stays invalid.
        ds.PresentationLUTShape = "IDENTITY"
    ds.FrameIncrementPointer = Tag("SliceLocationVector")
    ds.SliceLocationVector = [round(-n * _SLICE_SPACING_MM, 3) for n in range(frames)]


def _add_ultrasound(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.BodyPartExamined = "ABDOMEN"  # unpaired: no Laterality (type 2C)
    ds.PatientOrientation = ""  # type 2C: a probe's orientation is not a patient direction
    ds.FrameTime = _US_FRAME_TIME_MS
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.CineRate = round(1000 / _US_FRAME_TIME_MS)


# ---------------------------------------------------------------------------------------------
# Public writers
# ---------------------------------------------------------------------------------------------


def write_multiframe(
    path: str | Path,
    *,
    frames: int,
    syntax: str = "explicit",
    kind: str = "ct",
    rows: int = 512,
    columns: int = 512,
    offset_table: str = "bot",
    fragments_per_frame: int = 1,
    signed: bool = False,
    seed: int = 0,
    photometric: str | None = None,
) -> Path:
    """Write a synthetic multi-frame DICOM Part 10 file and return its path.

    Memory stays bounded to a few frames whatever ``frames`` is: the frames are generated,
    encoded and written one by one. ``offset_table`` ("bot", "none" or "eot") and
    ``fragments_per_frame`` apply to encapsulated syntaxes only; "eot" writes an empty Basic
    Offset Table plus the Extended Offset Table and needs one fragment per frame.
    ``photometric`` overrides the default photometric interpretation where the codec allows
    (colour: see ``_COLOUR_PHOTOMETRICS``; grey: MONOCHROME2 or MONOCHROME1). The file
    appears atomically (written to a temporary name, then renamed).
    """
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown syntax {syntax!r}; expected one of {list(SYNTAXES)}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if offset_table not in OFFSET_TABLES:
        raise ValueError(f"offset_table must be one of {OFFSET_TABLES}, not {offset_table!r}")
    if frames < 1 or fragments_per_frame < 1:
        raise ValueError("frames and fragments_per_frame must be >= 1")
    if signed and kind != "ct":
        raise ValueError("signed=True is only supported for kind 'ct'")
    layout = _layout(kind, signed)
    codec = _codec(syntax, layout, photometric)
    if codec.encode is not None:
        if offset_table == "eot" and fragments_per_frame != 1:
            raise ValueError("the Extended Offset Table requires one fragment per frame")
        if codec.one_fragment_per_frame and fragments_per_frame != 1:
            raise ValueError(f"{syntax} requires one fragment per frame (PS3.5 A.4.2)")

    instance_key = (seed, kind, syntax, rows, columns, frames, offset_table,
                    fragments_per_frame, signed, codec.photometric)
    ds = _build_dataset(kind=kind, syntax=syntax, layout=layout, codec=codec, frames=frames,
                        rows=rows, columns=columns, seed=seed, instance_key=instance_key)
    source = synthetic_frames(kind, rows=rows, columns=columns, seed=seed, signed=signed)
    generated = (source(n) for n in range(frames))

    path = Path(path)
    with writer.AtomicFile(path) as out:
        fh = out.fh
        fh.write(writer.file_meta_bytes(ds.file_meta))
        enc = _encoding(syntax)
        body = writer.DeflateWriter(fh) if syntax == "deflated" else fh
        # pydicom encodes the header; every element it writes sorts before the
        # per-frame functional groups (5200,9230) and Pixel Data (7FE0,xxxx).
        header_at = fh.tell()
        header = enc.dataset(ds)
        body.write(header)
        if kind == "ct":
            writer.write_sequence(body, enc, _PER_FRAME_GROUPS,
                                  _ct_frame_groups(enc, frames, rows, columns))
        if codec.encode is None:
            _write_native(body, enc, layout, generated, frames,
                          layout.frame_bytes(rows, columns))
        else:
            encode = _SizeCounter(codec.encode)
            writer.write_encapsulated(fh, map(encode, generated), frames,
                                      offset_table=offset_table,
                                      fragments_per_frame=fragments_per_frame)
            if codec.lossy_method:
                ratio = frames * layout.frame_bytes(rows, columns) / encode.total
                patch_ratio(fh, header_at + _ratio_offset(header), ratio)
        if isinstance(body, writer.DeflateWriter):
            body.finish()
        out.commit()
    return path


def write_series(folder: str | Path, *, files: int, syntax: str = "explicit", seed: int = 0,
                 rows: int = 512, columns: int = 512) -> Path:
    """Write ``files`` single-frame CT slices of one series (CT Image Storage: one Series
    Instance UID, consecutive positions) into ``folder`` and return it.

    The slices are the frames of the synthetic CT stack (12 bits stored, unsigned) in any
    single-frame ``syntax`` of :data:`SYNTAXES` but big-endian and deflated. The folder
    appears whole (written under a temporary name, then renamed); an existing one is an error.
    """
    if syntax not in SYNTAXES or syntax in ("big-endian", "deflated"):
        raise ValueError(f"syntax {syntax!r} is not offered for series")
    if files < 1:
        raise ValueError("files must be >= 1")
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(folder)
    layout = _layout("ct", False)
    codec = _codec(syntax, layout, None)
    source = synthetic_frames("ct", rows=rows, columns=columns, seed=seed)
    study = _uid("series-study", seed)
    series = _uid("series", seed, syntax, rows, columns, files)
    tmp = folder.with_name(f".{folder.name}.part")
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = SYNTAXES[syntax]
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop = _uid(series, i)
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.PatientName, ds.PatientID = "CT", f"Sample^Series{seed}", f"S{seed}"
        _add_slice_context(ds, seed=seed, series=series)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, -1.25 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.25
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, codec.photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _CT_INTERCEPT_UNSIGNED, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        frame = source(i)
        if codec.encode is None:
            ds.PixelData = frame.tobytes()
        else:
            encoded = codec.encode(frame)
            ds.PixelData = encapsulate([encoded])
            ds["PixelData"].VR = "OB"
            if codec.lossy_method is not None:
                ds.LossyImageCompression = "01"
                ds.LossyImageCompressionRatio = format_number_as_ds(frame.nbytes / len(encoded))
                ds.LossyImageCompressionMethod = codec.lossy_method
        ds.save_as(tmp / f"slice-{i:04d}.dcm", implicit_vr=syntax == "implicit",
                   enforce_file_format=True)
    tmp.rename(folder)
    return folder


def _add_slice_context(ds: Dataset, *, seed: int, series: str) -> None:
    """What CT Image Storage (PS3.3 A.3) requires beyond the image itself, the same for
    every slice of the series: the type 2 patient, study, series and equipment attributes
    (possibly empty), the Frame of Reference and the acquisition."""
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID, ds.AccessionNumber = "1", f"SR{seed:08d}"
    ds.SeriesNumber = 1
    ds.PatientPosition = _PATIENT_POSITION
    # The stack cycles thorax -> abdomen, an unpaired part: Laterality (2C) is then absent.
    ds.BodyPartExamined = "CHESTABDOMEN"
    ds.FrameOfReferenceUID = _uid(series, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    _add_equipment(ds)
    ds.KVP = _CT_KVP
    ds.AcquisitionNumber = 1


def ensure_sample(path: str | Path, **kwargs: object) -> Path:
    """Write the sample with :func:`write_multiframe` unless ``path`` already exists.

    The cache key is the path alone: callers encode the parameters in the file name.
    """
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_multiframe(path, **kwargs)  # type: ignore[arg-type]
