"""Compression targets: what each ``--to`` name means, which images it accepts, and the frame
encoder it builds.

A target is parsed from text (:func:`parse_target`): ``jpeg-ls``, ``htj2k``, ``htj2k-rpcl``,
``j2k``, ``rle``, ``deflate``, ``explicit`` (lossless), ``jpeg-ls-near:N``,
``htj2k-lossy[:ratio=R|:psnr=P]``, ``j2k-lossy[:ratio=R|:psnr=P]`` and ``jpeg[:Q]`` (lossy).
:meth:`Target.plan` checks an image layout (:class:`~dcmstream.index.PixelSpec`) against
what the codec can hold and returns an :class:`EncodePlan`: the output Photometric
Interpretation and a picklable :class:`FrameEncoder` (frames travel to worker processes
when an encoder holds the GIL).

Backends, chosen after measuring (see bench/bench_compress.py):

* JPEG-LS: imagecodecs (CharLS) when the sample precision is 8 or 16 bits and unsigned;
  otherwise CharLS' C API through ctypes (:mod:`dcmstream.codecs.charls`), because
  imagecodecs always declares 16-bit precision for 16-bit arrays, which disagrees with Bits
  Stored (12-bit CT) and leaves readers unable to sign-extend signed data. Both release the
  GIL; pyjpegls (which holds it) is the fallback when the C API cannot be loaded.
* JPEG 2000: imagecodecs (OpenJPEG), raw codestream (``codecformat='J2K'``), the precision
  set to Bits Stored. HTJ2K: imagecodecs (OpenJPH); its default progression is RPCL and
  ``tlm=True`` adds the TLM markers the RPCL syntax (.202) requires.
* RLE: pylibjpeg-rle (imagecodecs' ``dicomrle_encode`` is not implemented); holds the GIL.
* JPEG baseline: imagecodecs (libjpeg-turbo), 8-bit samples only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import imagecodecs
import numpy as np

from ..codecs import charls
from ..codecs.imagecodecs_backend import openjph_ready
from ..codecs.syntaxes import LOSSY_METHODS, uid_of
from ..errors import DcmstreamError
from ..index.pixel_spec import PixelSpec

__all__ = [
    "TARGETS",
    "EncodePlan",
    "FrameEncoder",
    "Target",
    "UnsupportedTarget",
    "jpegls_encode",
    "unsigned_pattern",
    "parse_target",
]

EXPLICIT_VR_LITTLE = uid_of("explicit")
DEFLATED = uid_of("deflated")

#: Transfer syntaxes whose pixel data went through lossy compression (from the syntax table).
LOSSY_SYNTAXES = LOSSY_METHODS


class UnsupportedTarget(DcmstreamError, ValueError):
    """The target cannot hold this image (bit depth, colour, pixel kind) or the text is bad."""


class FrameEncoder(Protocol):
    """Encodes one frame (the array :meth:`Instance.frame` returns) into a codestream."""

    releases_gil: bool

    def __call__(self, frame: np.ndarray) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# Frame encoders (frozen dataclasses: picklable for process pools)
# ---------------------------------------------------------------------------------------------


def unsigned_pattern(frame: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """JPEG and JPEG-LS code unsigned samples: signed data is coded as its two's-complement
    bit pattern within Bits Stored (PS3.5 8.2.1); readers sign-extend from Bits Stored."""
    if not signed:
        return frame
    unsigned = frame.view(np.uint16 if frame.dtype.itemsize == 2 else np.uint8)
    return unsigned & unsigned.dtype.type((1 << bits) - 1)


def jpegls_encode(frame: np.ndarray, bits_stored: int, signed: bool, near: int = 0) -> bytes:
    """One JPEG-LS codestream with precision ``bits_stored`` (signed samples coded as their
    bit pattern). CharLS through ctypes (releases the GIL); pyjpegls when the C API cannot
    be loaded; imagecodecs when the precision fills the dtype (the same CharLS)."""
    if not signed and bits_stored == 8 * frame.dtype.itemsize:
        return bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(frame), level=near))
    data = np.ascontiguousarray(unsigned_pattern(frame, bits_stored, signed))
    if charls.charls_available():
        return charls.encode(data, bits_stored, near=near)
    try:
        from jpeg_ls import encode_buffer
    except ImportError as exc:  # pragma: no cover - pyjpegls is a dependency
        raise UnsupportedTarget(
            f"JPEG-LS with {bits_stored}-bit precision needs CharLS (pip install pyjpegls)") from exc
    samples = frame.shape[2] if frame.ndim == 3 else 1
    return bytes(encode_buffer(
        data.tobytes(), frame.shape[0], frame.shape[1], samples, bits_stored, lossy_error=near,
        interleave_mode=2 if samples > 1 else 0))  # 2: colour-by-pixel, as stored


@dataclass(frozen=True)
class JpegLsEncoder:
    bits_stored: int
    bits_allocated: int
    signed: bool
    samples: int
    near: int = 0

    @property
    def releases_gil(self) -> bool:
        # imagecodecs and CharLS through ctypes do; pyjpegls (the fallback) does not.
        return (not self.signed and self.bits_stored == self.bits_allocated) or charls.charls_available()

    def __call__(self, frame: np.ndarray) -> bytes:
        return jpegls_encode(frame, self.bits_stored, self.signed, self.near)


@dataclass(frozen=True)
class RleEncoder:
    samples: int
    bits_allocated: int
    releases_gil: bool = False

    def __call__(self, frame: np.ndarray) -> bytes:
        from rle.utils import encode_pixel_data

        return encode_pixel_data(
            np.ascontiguousarray(frame).tobytes(), rows=frame.shape[0], columns=frame.shape[1],
            samples_per_pixel=self.samples, bits_allocated=self.bits_allocated,
            byteorder="<")


@dataclass(frozen=True)
class J2kEncoder:
    """OpenJPEG. ``psnr`` (dB, relative to the Bits Stored range) makes it irreversible."""

    bits_stored: int
    colour_transform: bool
    psnr: float | None = None
    releases_gil: bool = True

    def __call__(self, frame: np.ndarray) -> bytes:
        lossy = self.psnr is not None
        # OpenJPEG writes signed components for int16 input: no bit-pattern trick needed.
        return bytes(imagecodecs.jpeg2k_encode(
            np.ascontiguousarray(frame), level=self.psnr if lossy else None, codecformat="J2K",
            bitspersample=self.bits_stored, reversible=not lossy, mct=self.colour_transform))


@dataclass(frozen=True)
class Htj2kEncoder:
    """OpenJPH. ``step`` (quantisation step, a fraction of the dtype's range) makes it
    irreversible. OpenJPH codes the dtype's full precision (no bits-per-sample option)."""

    colour_transform: bool
    tlm: bool = False
    step: float | None = None
    releases_gil: bool = True

    def __call__(self, frame: np.ndarray) -> bytes:
        openjph_ready()
        lossy = self.step is not None
        return bytes(imagecodecs.htj2k_encode(
            np.ascontiguousarray(frame), level=self.step if lossy else None,
            reversible=not lossy, rgb=self.colour_transform, tlm=self.tlm or None))


@dataclass(frozen=True)
class JpegEncoder:
    quality: int
    bits_stored: int
    samples: int
    releases_gil: bool = True

    def __call__(self, frame: np.ndarray) -> bytes:
        colour = {"subsampling": "422"} if self.samples > 1 else {}
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(frame), level=self.quality,
                                              bitspersample=self.bits_stored, **colour))


@dataclass(frozen=True)
class NativeEncoder:
    """Uncompressed targets: frames are written as they are (see writer.write_native)."""

    releases_gil: bool = True

    def __call__(self, frame: np.ndarray) -> bytes:  # pragma: no cover - not called
        raise TypeError("native targets write frames, not codestreams")


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodePlan:
    """What a target will write for one image layout."""

    target: "Target"
    encoder: FrameEncoder
    photometric: str  # Photometric Interpretation of the output
    spec: PixelSpec  # the output's pixel description (photometric updated)
    needs_calibration: bool = False  # a ratio/PSNR target: call calibrate() with sample frames

    def calibrate(self, frames: Sequence[np.ndarray]) -> "EncodePlan":
        """Choose the quantisation that meets the target ratio or PSNR on ``frames`` (a few
        representative frames, e.g. first, middle and last); later frames use the same
        setting, so quality is uniform through the file."""
        if not self.needs_calibration:
            return self
        return replace(self, encoder=_calibrate(self, frames), needs_calibration=False)


@dataclass(frozen=True)
class Target:
    """One ``--to`` choice."""

    name: str
    transfer_syntax: str
    lossy: bool = False
    method: str | None = None  # LossyImageCompressionMethod (PS3.3 C.7.6.1.1.5)
    native: bool = False  # uncompressed output (explicit, deflate)
    near: int = 0  # JPEG-LS NEAR
    ratio: float | None = None  # target compression ratio (J2K/HTJ2K lossy)
    psnr: float | None = None  # target PSNR in dB over the Bits Stored range
    quality: int | None = None  # JPEG quality
    description: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        """The target as text, with its parameters (for reports)."""
        if self.near:
            return f"{self.name}:{self.near}"
        if self.ratio is not None:
            return f"{self.name}:ratio={self.ratio:g}"
        if self.psnr is not None:
            return f"{self.name}:psnr={self.psnr:g}"
        if self.quality is not None:
            return f"{self.name}:{self.quality}"
        return self.name

    @property
    def compresses(self) -> bool:
        """False for ``explicit``: decompressing is asked for, a bigger result is expected."""
        return self.name != "explicit"

    def check(self, spec: PixelSpec) -> None:
        """Raise :class:`UnsupportedTarget` when this target cannot hold ``spec`` images."""
        reason = self._unsupported(spec)
        if reason:
            raise UnsupportedTarget(f"{self.label}: {reason}")

    def _unsupported(self, spec: PixelSpec) -> str | None:
        if spec.pixel_keyword != "PixelData":
            return "float pixel data is not supported"
        bits, allocated = spec.bits_stored, spec.bits_allocated
        if self.native:
            if allocated == 1 and (spec.rows * spec.columns * spec.samples_per_pixel) % 8:
                return "1-bit frames that do not fill whole bytes are not supported"
            return None
        if allocated == 1:
            return "1-bit (bitmap) pixel data can only be stored natively (explicit, deflate)"
        if spec.samples_per_pixel not in (1, 3):
            return f"{spec.samples_per_pixel} samples per pixel are not supported"
        if self.lossy and spec.photometric_interpretation == "PALETTE COLOR":
            return "palette indices must not be compressed lossily"
        family = self.name.split("-")[0]
        if family == "rle":
            if allocated not in (8, 16, 32):
                return f"RLE holds 8, 16 or 32 bits allocated, not {allocated}"
            return None
        if allocated not in (8, 16):
            return f"{self.name} holds at most 16-bit samples (bits allocated {allocated})"
        if family == "jpeg" and self.name.startswith("jpeg-ls"):
            if bits < 2:
                return "JPEG-LS needs at least 2 bits stored"
            if self.near and self.near > (1 << bits) // 2:
                return f"NEAR {self.near} is too large for {bits}-bit samples"
            return None
        if self.name == "jpeg":
            if allocated != 8 or bits != 8 or spec.pixel_representation:
                return "baseline JPEG holds unsigned 8-bit samples only"
            return None
        return None

    def plan(self, spec: PixelSpec, photometric: str) -> EncodePlan:
        """The encoder and output photometric for images of ``spec`` whose frames come in
        ``photometric`` (RGB for colour frames decoded by dcmstream; YBR_FULL for native
        YBR_FULL data kept as it is stored)."""
        self.check(spec)
        colour = spec.samples_per_pixel == 3
        signed = bool(spec.pixel_representation)
        bits = spec.bits_stored
        out_photometric = photometric
        needs_calibration = False
        encoder: FrameEncoder
        if self.native:
            encoder = NativeEncoder()
        elif self.name == "rle":
            encoder = RleEncoder(spec.samples_per_pixel, spec.bits_allocated)
        elif self.name.startswith("jpeg-ls"):
            encoder = JpegLsEncoder(bits, spec.bits_allocated, signed, spec.samples_per_pixel,
                                    self.near)
        elif self.name == "jpeg":
            if colour and photometric != "RGB":
                raise UnsupportedTarget(f"{self.label}: colour frames must be RGB")
            encoder = JpegEncoder(self.quality or 90, bits, spec.samples_per_pixel)
            out_photometric = "YBR_FULL_422" if colour else photometric
        elif colour and photometric != "RGB" and "j2k" in self.name:
            # PS3.5 8.2.4 names RGB, YBR_RCT and YBR_ICT for colour JPEG 2000; OpenJPH also
            # hands back colour without a transform in planar order.
            raise UnsupportedTarget(f"{self.label}: {photometric} samples are not stored in "
                                    "JPEG 2000 (only RGB, YBR_RCT, YBR_ICT)")
        elif self.name in ("j2k", "j2k-lossy"):
            mct = colour and photometric == "RGB"
            encoder = J2kEncoder(bits, mct, psnr=self.psnr if self.lossy else None)
            needs_calibration = self.lossy and self.ratio is not None
            out_photometric = ("YBR_ICT" if self.lossy else "YBR_RCT") if mct else photometric
        elif self.name.startswith("htj2k"):
            mct = colour and photometric == "RGB"
            encoder = Htj2kEncoder(mct, tlm=self.name == "htj2k-rpcl",
                                   step=_HTJ2K_START_STEP if self.lossy else None)
            needs_calibration = self.lossy
            out_photometric = ("YBR_ICT" if self.lossy else "YBR_RCT") if mct else photometric
        else:  # pragma: no cover - TARGETS and plan() go together
            raise UnsupportedTarget(f"no encoder for {self.name}")
        if self.lossy and colour and out_photometric == "YBR_FULL":
            raise UnsupportedTarget(f"{self.label}: lossy coding of YBR_FULL frames; "
                                    "decode them to RGB first")
        out_spec = replace(spec, photometric_interpretation=out_photometric,
                           planar_configuration=0)
        return EncodePlan(self, encoder, out_photometric, out_spec, needs_calibration)


_LOSSLESS = {
    "explicit": Target("explicit", EXPLICIT_VR_LITTLE, native=True,
                       description="Explicit VR Little Endian (decompress)"),
    "deflate": Target("deflate", DEFLATED, native=True,
                      description="Deflated Explicit VR Little Endian (zlib of the dataset)"),
    "rle": Target("rle", uid_of("rle"), description="RLE Lossless"),
    "jpeg-ls": Target("jpeg-ls", uid_of("jpeg-ls"), description="JPEG-LS lossless"),
    "j2k": Target("j2k", uid_of("j2k-lossless"), description="JPEG 2000 lossless"),
    "htj2k": Target("htj2k", uid_of("htj2k-lossless"), description="HTJ2K lossless"),
    "htj2k-rpcl": Target("htj2k-rpcl", uid_of("htj2k-rpcl"),
                         description="HTJ2K lossless RPCL (resolution-progressive)"),
}
_LOSSY = {
    "jpeg-ls-near": Target("jpeg-ls-near", uid_of("jpeg-ls-near"), lossy=True,
                           method="ISO_14495_1", near=2,
                           description="JPEG-LS near-lossless (max error NEAR)"),
    "j2k-lossy": Target("j2k-lossy", uid_of("j2k"), lossy=True,
                        method="ISO_15444_1", ratio=10.0,
                        description="JPEG 2000 lossy, by target ratio or PSNR"),
    "htj2k-lossy": Target("htj2k-lossy", uid_of("htj2k"), lossy=True,
                          method="ISO_15444_15", ratio=10.0,
                          description="HTJ2K lossy, by target ratio or PSNR"),
    "jpeg": Target("jpeg", uid_of("jpeg-baseline"), lossy=True, method="ISO_10918_1",
                   quality=90, description="JPEG baseline (8-bit), quality 1-100"),
}
#: Every target by name, with its default parameters.
TARGETS: dict[str, Target] = {**_LOSSLESS, **_LOSSY}


def parse_target(text: str) -> Target:
    """``"jpeg-ls"``, ``"jpeg-ls-near:3"``, ``"htj2k-lossy:ratio=12"``,
    ``"j2k-lossy:psnr=48"``, ``"jpeg:85"`` ... -> :class:`Target`."""
    name, _, arg = text.strip().lower().partition(":")
    if name not in TARGETS:
        raise UnsupportedTarget(f"unknown target {text!r}; choose one of "
                                f"{', '.join(TARGETS)}")
    target = TARGETS[name]
    if not arg:
        return target
    try:
        if name == "jpeg-ls-near":
            near = int(arg)
            if not 1 <= near <= 255:
                raise ValueError
            return replace(target, near=near)
        if name == "jpeg":
            quality = int(arg)
            if not 1 <= quality <= 100:
                raise ValueError
            return replace(target, quality=quality)
        if name in ("j2k-lossy", "htj2k-lossy"):
            key, _, value = arg.partition("=")
            number = float(value)
            if key == "ratio" and 1 < number <= 1000:
                return replace(target, ratio=number, psnr=None)
            if key == "psnr" and 10 <= number <= 150:
                return replace(target, psnr=number, ratio=None)
            raise ValueError
    except ValueError:
        pass
    hints = {"jpeg-ls-near": "jpeg-ls-near:N with N in 1..255",
             "jpeg": "jpeg:Q with quality Q in 1..100",
             "j2k-lossy": "j2k-lossy:ratio=R (1 < R <= 1000) or j2k-lossy:psnr=P (dB)",
             "htj2k-lossy": "htj2k-lossy:ratio=R or htj2k-lossy:psnr=P (dB)"}
    raise UnsupportedTarget(f"bad target {text!r}: use {hints.get(name, name)}")


# ---------------------------------------------------------------------------------------------
# Calibration of ratio / PSNR targets
# ---------------------------------------------------------------------------------------------

_HTJ2K_START_STEP = 1 / 1024
_SEARCH_STEPS = 14


def _psnr(reference: np.ndarray, decoded: np.ndarray, peak: float) -> float:
    error = reference.astype(np.float64) - decoded
    mse = float(np.mean(error * error))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _calibrate(plan: EncodePlan, frames: Sequence[np.ndarray]) -> FrameEncoder:
    """Bisect the codec's quality knob until the sample frames meet the target: the mean
    ratio at least ``ratio``, or the lowest PSNR at least ``psnr`` (the smallest files that
    do)."""
    if not frames:
        raise ValueError("calibration needs at least one frame")
    target = plan.target
    spec = plan.spec
    raw = sum(f.nbytes for f in frames)
    peak = float((1 << spec.bits_stored) - 1)
    encoder = plan.encoder

    def measure(knob: float) -> tuple[FrameEncoder, float, float]:
        if isinstance(encoder, Htj2kEncoder):
            candidate: FrameEncoder = replace(encoder, step=2.0 ** knob)
            decode = imagecodecs.htj2k_decode
        else:
            candidate = replace(encoder, psnr=knob)  # type: ignore[arg-type]
            decode = imagecodecs.jpeg2k_decode
        coded = [candidate(f) for f in frames]
        ratio = raw / sum(len(c) for c in coded)
        quality = min(_psnr(f, decode(c).reshape(f.shape), peak) for f, c in zip(frames, coded))
        return candidate, ratio, quality

    def meets(ratio: float, quality: float) -> bool:
        return ratio >= target.ratio if target.ratio is not None else quality >= target.psnr

    # Bisect x in [lo, hi], where a larger x always means better quality: for HTJ2K x is
    # -log2(quantisation step) (1/2 .. 2^-24 of the range), for OpenJPEG its PSNR goal in dB.
    if isinstance(encoder, Htj2kEncoder):
        lo, hi = 1.0, 24.0
        to_knob = lambda x: -x  # noqa: E731
    else:
        lo, hi = 20.0, 100.0
        to_knob = lambda x: x  # noqa: E731
    best = None
    for _ in range(_SEARCH_STEPS):
        middle = (lo + hi) / 2
        candidate, ratio, quality = measure(to_knob(middle))
        if target.ratio is not None:
            if ratio >= target.ratio:
                best, lo = candidate, middle  # meets: try better quality
            else:
                hi = middle
        else:
            if quality >= target.psnr:
                best, hi = candidate, middle  # meets: try smaller files
            else:
                lo = middle
    if best is None:
        # Nothing in range met the target: use the end of the range closest to it.
        best, _, _ = measure(to_knob(lo if target.ratio is not None else hi))
    return best
