"""Hybrid storage: a lossless archive copy plus a lossy, reduced-resolution preview.

The archive copy is an ordinary verified lossless :func:`~.transcode.transcode` (its SOP
Instance UID is the source's: the pixels are unchanged). The preview is a new instance
derived from it:

* frames block-averaged by an integer factor so the longest side is at most ``max_size``
  (palette indices are decimated, never averaged), then lossy coded - baseline JPEG for
  unsigned 8-bit images, HTJ2K lossy (PSNR goal) for deeper ones;
* a new SOP Instance UID, in a new series (UID derived from the source series, so all
  previews of one series share one preview series), Series Description "... (preview)";
* Rows/Columns and every Pixel Spacing (top level, Imager Pixel Spacing, Pixel Measures in
  the shared and per-frame functional groups) scaled to the new grid;
* the link: Source Image Sequence -> the archive copy's SOP Class/Instance UID with purpose
  (121322, DCM, "Source image for image processing operation"), plus the lossy compression
  attributes and Derivation Code (113040, DCM, "Lossy Compression").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..errors import InvalidArgumentError
from ..image import open as open_instance
from .encoders import Target, parse_target
from .executor import Pools
from .frames import FrameTransform
from .options import DEFAULT_PREVIEW_SIZE, Rendition, TranscodeOptions
from .results import Progress, TranscodeResult
from .transcode import transcode

__all__ = ["DEFAULT_PREVIEW_SIZE", "hybrid", "preview_factor", "preview_target"]

_SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def preview_factor(rows: int, columns: int, max_size: int = DEFAULT_PREVIEW_SIZE) -> int:
    """The smallest integer factor that brings the longest side to ``max_size`` or less."""
    return max(1, math.ceil(max(rows, columns) / max_size))


def preview_target(bits_stored: int, signed: bool) -> Target:
    """Baseline JPEG for unsigned 8-bit images, HTJ2K lossy at 45 dB otherwise."""
    if bits_stored == 8 and not signed:
        return parse_target("jpeg:85")
    return parse_target("htj2k-lossy:psnr=45")


def _scale_spacing(item: Dataset, factor: int) -> None:
    for keyword in _SPACING_KEYWORDS:
        if keyword in item and item[keyword].value:
            item[keyword].value = [round(float(v) * factor, 6) for v in item[keyword].value]


def _preview_edit(factor: int, suffix: str = " (preview)") -> Callable[[Dataset], None]:
    """Header changes of the preview (runs on the output dataset, after the lossy
    derivation attributes have been added)."""

    def edit(ds: Dataset) -> None:
        _scale_spacing(ds, factor)
        for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for item in ds.get(sequence, []):
                for measures in item.get("PixelMeasuresSequence", []):
                    _scale_spacing(measures, factor)
        series = str(ds.get("SeriesInstanceUID", ""))
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["dcmstream-preview", series])
        description = str(ds.get("SeriesDescription", "") or "")
        ds.SeriesDescription = (description + suffix)[:64]
        for item in ds.get("SourceImageSequence", [])[-1:]:
            for code in item.get("PurposeOfReferenceCodeSequence", []):
                # Not only compressed: resampled too.
                code.CodeValue = "121322"
                code.CodeMeaning = "Source image for image processing operation"

    return edit


def hybrid(
    source: str | os.PathLike[str],
    archive: str | os.PathLike[str],
    preview: str | os.PathLike[str],
    *,
    archive_target: str | Target = "htj2k-rpcl",
    preview_to: str | Target | None = None,
    max_size: int = DEFAULT_PREVIEW_SIZE,
    jobs: int = 1,
    executor: Executor | Pools | None = None,
    progress: Progress | None = None,
    options: TranscodeOptions | None = None,
) -> TranscodeResult:
    """Write the lossless ``archive`` copy of ``source`` and its lossy ``preview``.

    Returns the archive's result with the preview's in ``companions``. The preview is only
    written when the archive copy is in place (written, or the input kept because it was
    already smallest). ``options`` apply to both (their rendition is the preview's own);
    the QA thresholds of its quality apply to the preview against the downsampled source.
    """
    archive_target = parse_target(archive_target) if isinstance(archive_target, str) \
        else archive_target
    if archive_target.lossy:
        raise InvalidArgumentError("the archive copy of a hybrid must be lossless")
    options = replace(options or TranscodeOptions(), rendition=None)
    if options.output.in_place:
        raise InvalidArgumentError("--hybrid and --in-place together are not supported")
    result = transcode(source, archive, archive_target, jobs=jobs, executor=executor,
                       progress=progress, options=options)
    if result.status not in ("written", "kept-input") or not result.frames:
        return result
    with open_instance(source, cache=False) as inst:
        spec = inst.pixel_spec
        palette = spec.photometric_interpretation == "PALETTE COLOR"
    factor = preview_factor(spec.rows, spec.columns, max_size)
    target = preview_to or preview_target(spec.bits_stored, bool(spec.pixel_representation))
    target = parse_target(target) if isinstance(target, str) else target
    if palette or spec.bits_allocated == 1:
        result.message = (result.message + "; " if result.message else "") + \
            "no preview: palette or bitmap pixels are not previewed lossily"
        return result
    rendition = Rendition(FrameTransform(factor, nearest=palette), _preview_edit(factor),
                          f", preview at 1/{factor} resolution")
    preview_options = replace(options, output=replace(options.output, copy_kept=False),
                              rendition=rendition)
    companion = transcode(source, Path(preview), target, jobs=jobs, executor=executor,
                          progress=None, options=preview_options)
    result.companions.append(companion)
    return result
