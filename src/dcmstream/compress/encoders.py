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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import imagecodecs
import numpy as np

from ..codecs import charls
from ..codecs.imagecodecs_backend import openjph_ready
from ..codecs.syntaxes import LOSSY_METHODS, uid_of
from ..errors import DcmstreamError, InvalidArgumentError, InvalidArgumentTypeError
from ..index.pixel_spec import PixelSpec
from .metrics import psnr as measure_psnr

__all__ = [
    "TARGETS",
    "EncodePlan",
    "FrameEncoder",
    "QualitySearch",
    "SearchResult",
    "Target",
    "UnsupportedTarget",
    "jpegls_encode",
    "parse_target",
    "unsigned_pattern",
]

EXPLICIT_VR_LITTLE = uid_of("explicit")
DEFLATED = uid_of("deflated")

#: Transfer syntaxes whose pixel data went through lossy compression (from the syntax table).
LOSSY_SYNTAXES = LOSSY_METHODS


class UnsupportedTarget(DcmstreamError, ValueError):
    """The target cannot hold this image (bit depth, colour, pixel kind) or the text is bad."""


class FrameEncoder(Protocol):
    """Encodes one frame (the array :meth:`Instance.frame` returns) into a codestream."""

    @property
    def releases_gil(self) -> bool:
        """Whether the codec releases the GIL (threads suffice) or holds it (processes)."""
        ...

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
    return unsigned & np.array((1 << bits) - 1, dtype=unsigned.dtype)


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
            # OpenJPEG's level is the target PSNR in dB, a float (the stub says int).
            np.ascontiguousarray(frame), level=self.psnr if lossy else None,  # type: ignore[arg-type]
            codecformat="J2K",
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
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(frame), level=self.quality,
                                              subsampling="422" if self.samples > 1 else None,
                                              bitspersample=self.bits_stored))


@dataclass(frozen=True)
class NativeEncoder:
    """Uncompressed targets: frames are written as they are (see writer.write_native)."""

    releases_gil: bool = True

    def __call__(self, frame: np.ndarray) -> bytes:  # pragma: no cover - not called
        raise InvalidArgumentTypeError("native targets write frames, not codestreams")


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodePlan:
    """What a target will write for one image layout."""

    target: Target
    encoder: FrameEncoder
    photometric: str  # Photometric Interpretation of the output
    spec: PixelSpec  # the output's pixel description (photometric updated)
    needs_calibration: bool = False  # a ratio target: call calibrate() with sample frames
    calibration_encodes: int = 0  # frames encoded by calibrate()

    def calibrate(self, frames: Sequence[np.ndarray]) -> EncodePlan:
        """Choose the quantisation that meets the target ratio on ``frames`` (a few
        representative frames, e.g. first, middle and last); later frames use the same
        setting, so quality is uniform through the file. (PSNR goals need no calibration:
        :class:`QualitySearch` meets them frame by frame.)"""
        if not self.needs_calibration:
            return self
        encoder, encodes = _calibrate_ratio(self, frames)
        return replace(self, encoder=encoder, needs_calibration=False,
                       calibration_encodes=encodes)


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
            if self.lossy and self.psnr is not None:
                encoder = self._search(encoder, spec)
            out_photometric = ("YBR_ICT" if self.lossy else "YBR_RCT") if mct else photometric
        elif self.name.startswith("htj2k"):
            mct = colour and photometric == "RGB"
            encoder = Htj2kEncoder(mct, tlm=self.name == "htj2k-rpcl",
                                   step=2.0 ** -8 if self.lossy else None)
            needs_calibration = self.lossy and self.ratio is not None
            if self.lossy and self.psnr is not None:
                encoder = self._search(encoder, spec)
            out_photometric = ("YBR_ICT" if self.lossy else "YBR_RCT") if mct else photometric
        else:  # pragma: no cover - TARGETS and plan() go together
            raise UnsupportedTarget(f"no encoder for {self.name}")
        if self.lossy and colour and out_photometric == "YBR_FULL":
            raise UnsupportedTarget(f"{self.label}: lossy coding of YBR_FULL frames; "
                                    "decode them to RGB first")
        out_spec = replace(spec, photometric_interpretation=out_photometric,
                           planar_configuration=0)
        return EncodePlan(self, encoder, out_photometric, out_spec, needs_calibration)


    def _search(self, encoder: FrameEncoder, spec: PixelSpec) -> QualitySearch:
        assert self.psnr is not None
        return QualitySearch(encoder, self.psnr, float((1 << spec.bits_stored) - 1),
                             _first_knob(encoder, self.psnr, spec))


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
                raise InvalidArgumentError
            return replace(target, near=near)
        if name == "jpeg":
            quality = int(arg)
            if not 1 <= quality <= 100:
                raise InvalidArgumentError
            return replace(target, quality=quality)
        if name in ("j2k-lossy", "htj2k-lossy"):
            key, _, value = arg.partition("=")
            number = float(value)
            if key == "ratio" and 1 < number <= 1000:
                return replace(target, ratio=number, psnr=None)
            if key == "psnr" and 10 <= number <= 150:
                return replace(target, psnr=number, ratio=None)
            raise InvalidArgumentError
    except ValueError:
        pass
    hints = {"jpeg-ls-near": "jpeg-ls-near:N with N in 1..255",
             "jpeg": "jpeg:Q with quality Q in 1..100",
             "j2k-lossy": "j2k-lossy:ratio=R (1 < R <= 1000) or j2k-lossy:psnr=P (dB)",
             "htj2k-lossy": "htj2k-lossy:ratio=R or htj2k-lossy:psnr=P (dB)"}
    raise UnsupportedTarget(f"bad target {text!r}: use {hints.get(name, name)}")


# ---------------------------------------------------------------------------------------------
# Ratio and PSNR goals: the quality knob of J2K / HTJ2K
# ---------------------------------------------------------------------------------------------
#
# Both goals move one knob x, where a larger x means better quality and bigger codestreams:
# for HTJ2K x = -log2(quantisation step), the step being a fraction of the dtype's range;
# for OpenJPEG x is its own rate-allocation goal in dB. Over a useful range the PSNR is
# nearly linear in x: ~6 dB per halving of the step (a uniform quantiser's noise is
# step / sqrt(12)), ~1 dB per dB for OpenJPEG; the local slope is measured as frames go.

#: dB above the goal the search aims at, and how far above it a first result may land and
#: still be kept (closer would cost another encode for a few per cent of bytes).
_PSNR_AIM = 0.15
_PSNR_SLACK = 0.6
#: Most encodes one frame may take before the best knob is used as it is (rare: the model
#: brackets a frame in 1-2 encodes; see ``QualitySearch.search``).
_MAX_TRIALS = 8


def _knob(encoder: FrameEncoder) -> tuple[float, float, float]:
    """(lowest x, highest x, dB per unit of x: a first guess of the slope) for ``encoder``."""
    if isinstance(encoder, Htj2kEncoder):
        return 1.0, 24.0, 6.02
    return 20.0, 120.0, 1.0


def _at_knob(encoder: FrameEncoder, x: float) -> FrameEncoder:
    if isinstance(encoder, Htj2kEncoder):
        return replace(encoder, step=2.0 ** -x)
    return replace(encoder, psnr=x)  # type: ignore[type-var]


def _first_knob(encoder: FrameEncoder, psnr_goal: float, spec: PixelSpec) -> float:
    """The knob a PSNR goal predicts before any frame was coded."""
    if not isinstance(encoder, Htj2kEncoder):
        return psnr_goal
    # Uniform quantisation of the dtype's range: noise = step * range / sqrt(12).
    peak = float((1 << spec.bits_stored) - 1)
    full = float((1 << spec.bits_allocated) - 1)
    return (psnr_goal - 20 * math.log10(peak * math.sqrt(12) / full)) / 6.02


@dataclass(frozen=True)
class SearchResult:
    """One frame coded to a PSNR goal: the codestream kept, its decoded pixels and PSNR,
    and what finding it cost."""

    payload: bytes
    decoded: np.ndarray
    psnr: float
    encodes: int
    encode_seconds: float
    decode_seconds: float


@dataclass(frozen=True)
class QualitySearch:
    """A J2K / HTJ2K encoder that codes every frame at the cheapest setting meeting a PSNR
    goal (dB over the Bits Stored range), checked on the frame itself.

    Each frame starts from the setting the previous frame needed, moved by the measured
    slope of PSNR against the knob: on a series of similar frames the first encode lands
    within a few tenths of a dB and is kept; otherwise one or two more (a secant step, then
    a step with a wider margin) bracket it. Every frame kept meets the goal unless even the
    finest setting cannot reach it (then the finest is used and QA thresholds decide).
    """

    encoder: FrameEncoder  # the codec; its knob is set per frame
    psnr: float
    peak: float
    start: float  # the knob for the first frame (:func:`_first_knob`)
    # The last frame's (knob, PSNR, slope), shared by the threads coding one file (each
    # worker process has its own copy).
    hint: list[tuple[float, float, float]] = field(default_factory=list, compare=False,
                                                   hash=False, repr=False)

    @property
    def releases_gil(self) -> bool:
        return self.encoder.releases_gil

    def __call__(self, frame: np.ndarray) -> bytes:
        """One encode at the predicted setting, unchecked (the FrameEncoder protocol)."""
        x, _ = self._predict()
        return _at_knob(self.encoder, x)(frame)

    def _predict(self) -> tuple[float, float]:
        lo, hi, slope = _knob(self.encoder)
        if not self.hint:
            return min(max(self.start, lo), hi), slope
        x, measured, slope = self.hint[-1]
        return min(max(x + (self.psnr + _PSNR_AIM - measured) / slope, lo), hi), slope

    def search(self, frame: np.ndarray,
               decode: Callable[[bytes], np.ndarray]) -> SearchResult:
        """Code ``frame``; ``decode`` turns a codestream back into pixels as readers will
        see them (the PSNR is measured on those)."""
        lo, hi, first_slope = _knob(self.encoder)
        x, slope = self._predict()
        goal = self.psnr
        trials: list[tuple[float, float]] = []  # (knob, PSNR)
        best: tuple[float, bytes, np.ndarray, float] | None = None  # lowest knob that meets
        encode_s = decode_s = 0.0
        while True:
            t0 = time.perf_counter()
            payload = _at_knob(self.encoder, x)(frame)
            t1 = time.perf_counter()
            decoded = decode(payload)
            decode_s += time.perf_counter() - t1
            encode_s += t1 - t0
            value = measure_psnr(frame, decoded, self.peak)
            if len(trials) and x != trials[-1][0] and math.isfinite(value) \
                    and math.isfinite(trials[-1][1]):
                secant = (value - trials[-1][1]) / (x - trials[-1][0])
                slope = min(max(secant, first_slope / 4), first_slope * 4)
            trials.append((x, value))
            if value >= goal and (best is None or x < best[0]):
                best = (x, payload, decoded, value)
            n = len(trials)
            if best is not None and (best[3] - goal <= _PSNR_SLACK or n >= 2):
                break  # close enough above the goal, or the second try: keep the cheapest
            if n >= _MAX_TRIALS or (value < goal and x >= hi):
                break
            # Next knob: the model's prediction, with a margin that grows after misses so
            # the third try meets the goal; and always up at least a little after a miss.
            margin = _PSNR_AIM if value >= goal else _PSNR_AIM + 0.5 * (n - 1)
            step = (goal + margin - value) / slope
            if value < goal:
                step = max(step, 0.05 * n)
            x = min(max(x + step, lo), hi)
        if best is None:  # nothing met the goal even at the finest setting tried
            best = (x, payload, decoded, value)
        kept_x, payload, decoded, value = best
        if math.isfinite(value):
            self.hint[:] = [(kept_x, value, slope)]
        return SearchResult(payload, decoded, value, len(trials), encode_s, decode_s)


def _calibrate_ratio(plan: EncodePlan, frames: Sequence[np.ndarray]) -> tuple[FrameEncoder, int]:
    """The best-quality knob whose mean ratio on ``frames`` is at least the target ratio,
    and how many frames were encoded to find it.

    The logarithm of the ratio falls nearly linearly in the knob: a bracket, then
    regula falsi (Illinois) on it, to within 2 % of the ratio or 8 rounds; sizes only, no
    decoding."""
    if not frames:
        raise InvalidArgumentError("calibration needs at least one frame")
    goal = plan.target.ratio
    assert goal is not None
    raw = sum(f.nbytes for f in frames)
    encoder = plan.encoder
    lo, hi, _ = _knob(encoder)
    encodes = 0

    def excess(x: float) -> float:  # log of ratio / target: > 0 meets it
        nonlocal encodes
        candidate = _at_knob(encoder, x)
        encodes += len(frames)
        return math.log(raw / sum(len(candidate(f)) for f in frames) / goal)

    step = (hi - lo) / 8
    a = lo + (hi - lo) * 0.3  # HTJ2K: step 2^-8 of the range; OpenJPEG: 50 dB
    fa = excess(a)
    b, fb = a, fa
    rounds = 1
    while (fa >= 0) == (fb >= 0) and rounds < 8:  # walk until the sign changes
        nb = b + step if fb >= 0 else b - step
        if not lo <= nb <= hi:
            break
        a, fa = b, fb
        b, fb = nb, excess(nb)
        rounds += 1
    if (fa >= 0) == (fb >= 0):  # the whole range meets it (or none does): take the end
        return _at_knob(encoder, max(a, b) if fb >= 0 else min(a, b)), encodes
    if fa < 0:
        a, fa, b, fb = b, fb, a, fa  # a meets, b does not
    side = 0
    while rounds < 8 and abs(fa) > math.log(1.02):
        x = b - fb * (b - a) / (fb - fa)
        fx = excess(x)
        rounds += 1
        if fx >= 0:
            a, fa = x, fx
            if side == 1:
                fb /= 2
            side = 1
        else:
            b, fb = x, fx
            if side == -1:
                fa /= 2
            side = -1
    return _at_knob(encoder, a), encodes
