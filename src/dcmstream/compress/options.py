"""The settings of a transcode, grouped by what they decide (frozen, picklable).

::

    from dcmstream.compress import transcode, TranscodeOptions, QualityOptions, OutputOptions

    transcode("ct.dcm", "out/ct.dcm", "jpeg-ls")                       # the defaults
    transcode("ct.dcm", "out/ct.dcm", "htj2k-lossy:psnr=48", jobs=2,
              options=TranscodeOptions(quality=QualityOptions(min_psnr=45, min_ssim=0.98)))
    transcode("ct.dcm", None, "htj2k", options=TranscodeOptions(output=OutputOptions(in_place=True)))

* :class:`QualityOptions` - what is checked: the per-frame QA thresholds of lossy results,
  whether SSIM is measured, whether lossless results are verified;
* :class:`OutputOptions` - how the output is written: in place, the input copied when it is
  kept, the offset table's threshold;
* :class:`Rendition` - a derived rendition of the source (the hybrid preview: frames
  transformed, header edited, a note in the Derivation Description);
* :class:`TranscodeOptions` - the three for one file, :class:`CompressOptions` - the first
  two plus the hybrid preview and the background analysis, for many files.

The run's resources (``jobs``, a shared ``executor``, a ``progress`` callback) are
arguments of :func:`~.transcode.transcode` and :func:`~.batch.compress`, not options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from .frames import FrameTransform
from .metrics import FrameMetrics

__all__ = [
    "DEFAULT_PREVIEW_SIZE",
    "EOT_THRESHOLD",
    "CompressOptions",
    "OutputOptions",
    "QaThresholds",
    "QualityOptions",
    "Rendition",
    "TranscodeOptions",
]

#: Pixel Data size from which the Extended Offset Table is written instead of the Basic
#: Offset Table (whose 32-bit offsets end at 4 GiB). Compared with an upper-bound estimate
#: made before writing (the native size, plus a margin for incompressible data).
EOT_THRESHOLD = 1 << 32

#: Longest side of a hybrid preview, in pixels.
DEFAULT_PREVIEW_SIZE = 512


@dataclass(frozen=True)
class QualityOptions:
    """What is checked. ``min_psnr`` (dB over the Bits Stored range), ``max_error`` and
    ``min_ssim`` accept or refuse each lossy frame (``None`` disables a check; one failing
    frame and nothing is written). ``ssim`` measures SSIM on lossy frames (the report's
    column; off saves time when no ``min_ssim`` is asked). ``verify=False`` skips decoding
    lossless results back and comparing them bit-exact - for benchmarks only."""

    min_psnr: float | None = None
    max_error: int | None = None
    min_ssim: float | None = None
    ssim: bool = True
    verify: bool = True

    def failure(self, metrics: FrameMetrics) -> str | None:
        """Why a lossy frame with ``metrics`` is refused (None: accepted)."""
        if self.min_psnr is not None and metrics.psnr < self.min_psnr:
            return f"PSNR {metrics.psnr:.2f} dB < {self.min_psnr:g}"
        if self.max_error is not None and metrics.max_error > self.max_error:
            return f"max error {metrics.max_error} > {self.max_error}"
        if self.min_ssim is not None and metrics.ssim is not None and metrics.ssim < self.min_ssim:
            return f"SSIM {metrics.ssim:.4f} < {self.min_ssim:g}"
        return None

    @property
    def active(self) -> bool:
        """Whether any threshold is set."""
        return any(v is not None for v in (self.min_psnr, self.max_error, self.min_ssim))


#: The former name of :class:`QualityOptions` (its first three fields are the thresholds).
QaThresholds = QualityOptions


@dataclass(frozen=True)
class OutputOptions:
    """How the output is written. ``in_place`` replaces the source (destination None or the
    source), only ever by a verified lossless result. ``copy_kept``: when the input is kept
    (already in the target syntax, or the result was not smaller) it is copied to the
    destination; off, the destination is left absent. ``eot_threshold``: the estimated Pixel
    Data size from which the Extended Offset Table is written instead of the Basic one."""

    in_place: bool = False
    copy_kept: bool = True
    eot_threshold: int = EOT_THRESHOLD


@dataclass(frozen=True)
class Rendition:
    """A derived rendition of the source (the hybrid preview): ``transform`` changes every
    frame before encoding (picklable, e.g. :class:`~.frames.FrameTransform`), ``edit``
    changes the output header, ``description`` is appended to the Derivation Description."""

    transform: FrameTransform | None = None
    edit: Callable[[Dataset], None] | None = None
    description: str = ""


@dataclass(frozen=True)
class TranscodeOptions:
    """Everything :func:`~.transcode.transcode` can be told about one file."""

    quality: QualityOptions = field(default_factory=QualityOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    rendition: Rendition | None = None


@dataclass(frozen=True)
class CompressOptions:
    """Everything :func:`~.batch.compress` can be told about a run, besides its resources.
    ``hybrid`` makes the target the lossless archive syntax and adds a lossy preview of at
    most ``preview_size`` pixels a side per file; ``background`` adds the content-aware
    analysis to the report."""

    quality: QualityOptions = field(default_factory=QualityOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    hybrid: bool = False
    preview_size: int = DEFAULT_PREVIEW_SIZE
    background: bool = False

    def transcode_options(self) -> TranscodeOptions:
        """The options of each file's transcode."""
        return TranscodeOptions(quality=self.quality, output=self.output)
