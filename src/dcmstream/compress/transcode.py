"""Frame-by-frame transcoding with bounded memory, verification and atomic output.

:func:`transcode` turns one DICOM file into another transfer syntax:

1. open the source lazily (:func:`dcmstream.open`, no cache) and plan the target for its
   pixel layout (:mod:`.encoders`); a ratio goal is calibrated on the first, middle and
   last frames, a PSNR goal is searched frame by frame (:class:`.encoders.QualitySearch`);
2. write a temporary file next to the destination: header (pydicom), then Pixel Data frame
   by frame - each frame is decoded from the source, encoded, and (lossy) decoded back for
   the QA metrics, in a pool of ``jobs`` threads or processes with a bounded window of
   frames in flight, so memory is a few frames whatever the file size;
3. verify: every codestream is decoded back in the worker that made it, by the decoder
   dcmstream reads it with, and compared bit for bit with its source frame (lossless) or
   measured (lossy); once the file is complete it is reopened with dcmstream and every
   frame's codestream, found through the written offset table, must be the one checked
   (by length, CRC-32 and Adler-32, so frames need not be kept). Native targets (explicit,
   deflate) are decoded from the reopened file, and the same digests of their pixels must be
   those of the source frames;
4. commit (fsync, rename) - or keep the input when a compressing target did not make the
   file smaller, or refuse when a lossy frame missed its QA thresholds.

Lossy input policy (decided here, documented in the report): input whose pixels already went
through lossy compression (Lossy Image Compression "01" or a lossy transfer syntax) may be
transcoded to a lossless target - the result holds exactly the decoded lossy pixels and keeps
Lossy Image Compression "01" with its method (added from the source syntax when the source
did not record it), so it is never mistaken for an original; its SOP Instance UID stays,
since the pixels are unchanged. Lossy targets on lossy input append a new method/ratio step.
``in_place`` only ever replaces a file with a verified *lossless* result.

The steps live in their own modules: :mod:`.planning` (header, encoder, frame job),
:mod:`.worker` (one frame: read, encode, check), :mod:`.executor` (frames in order, in
pools), :mod:`.filewriter` (the file), :mod:`.verify` (the post-write check),
:mod:`.instances` (open instances shared with the workers), :mod:`.results`; the settings
are grouped in :mod:`.options`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from ..errors import DcmstreamError, InvalidArgumentError
from ..image import Instance
from ..image import open as open_instance
from ..io.atomic import atomic_copy
from . import writer
from .encoders import Target, UnsupportedTarget, parse_target
from .executor import Pools, make_executor
from .filewriter import write_file
from .frames import FrameTransform
from .instances import forget, register
from .options import EOT_THRESHOLD, OutputOptions, QaThresholds, QualityOptions, Rendition, TranscodeOptions
from .planning import FilePlan, estimate_offset_table, in_flight, prepare
from .results import Progress, QaFailure, TranscodeResult
from .verify import verify_file

__all__ = [
    "EOT_THRESHOLD",
    "FrameTransform",
    "OutputOptions",
    "Pools",
    "Progress",
    "QaFailure",
    "QaThresholds",
    "QualityOptions",
    "Rendition",
    "TranscodeOptions",
    "TranscodeResult",
    "make_executor",
    "transcode",
]


def transcode(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None,
    target: str | Target,
    *,
    jobs: int = 1,
    executor: Executor | Pools | None = None,
    progress: Progress | None = None,
    options: TranscodeOptions | None = None,
) -> TranscodeResult:
    """Transcode one DICOM file to ``target`` (a name like ``"jpeg-ls"``, see
    :func:`~dcmstream.compress.encoders.parse_target`) and return what happened.

    ``destination`` is the output path (None with ``OutputOptions(in_place=True)``: the
    source is then replaced, only ever by a verified lossless result). Lossless results are
    decoded back and compared bit-exact before they are committed; a result that is not
    smaller than the source is dropped and the source kept (copied to ``destination``
    unless ``OutputOptions(copy_kept=False)``). Lossy results are checked per frame against
    the thresholds of :class:`QualityOptions`: one failing frame and nothing is written
    (status "refused"). See :mod:`.options` for every setting.

    ``jobs`` > 1 encodes frames in a pool: threads, or processes for encoders that hold the
    GIL; pass ``executor`` (an Executor, or :class:`Pools` to share them across files) to
    reuse workers. ``progress(frames, source bytes)`` is called as frames are written.
    Never raises for a bad input file: the result says "failed" with the reason.
    """
    options = options or TranscodeOptions()
    out = options.output
    rendition = options.rendition
    transform = rendition.transform if rendition is not None else None
    started = time.perf_counter()
    src = Path(source)
    result = TranscodeResult(source=str(src), output=None, status="failed")
    try:
        target = parse_target(target) if isinstance(target, str) else target
    except UnsupportedTarget as exc:
        result.message = str(exc)
        return result
    result.target = target.label
    dest = _destination(src, destination, target, out, result)
    if dest is None:
        return result
    try:
        result.input_bytes = src.stat().st_size
        inst = open_instance(src, cache=False)
    except (OSError, DcmstreamError) as exc:
        result.message = f"{type(exc).__name__}: {exc}"
        return result
    key = str(src.resolve())
    own_pools: Pools | None = None
    try:
        _fill_identity(result, inst, target)
        if not inst.has_pixels:
            result.status, result.message = "skipped", "no pixel data"
            return result
        if str(inst.transfer_syntax) == target.transfer_syntax and not target.lossy \
                and transform is None:
            result.status, result.message = "kept-input", "already in the target syntax"
            _keep(result, src, dest, out)
            return result
        try:
            plan, encode_plan = prepare(inst, key, target, options.quality, rendition)
        except UnsupportedTarget as exc:
            result.status, result.message = "kept-input", f"{exc}; input kept"
            _keep(result, src, dest, out)
            return result
        result.lossy = target.lossy
        result.encodes = encode_plan.calibration_encodes
        result.sop_instance_uid = str(plan.dataset.SOPInstanceUID)
        register(key, inst)
        if executor is None and jobs > 1:
            own_pools = executor = Pools(jobs)
        if isinstance(executor, Pools):
            encode_pool = executor.for_encoder(encode_plan.encoder.releases_gil)
            verify_pool = executor.threads()
            jobs = max(jobs, executor.jobs)
        else:
            encode_pool = executor
            verify_pool = executor if isinstance(executor, ThreadPoolExecutor) else None
        workers = max(jobs, getattr(encode_pool, "_max_workers", 1) or 1)
        result = _write_checked(plan, src, dest, key, options, encode_pool, verify_pool, workers,
                                progress, result)
        if result.status == "written" and target.lossy:
            result.message = (f"lossy ratio {result.ratio:.1f}, PSNR min "
                              f"{min(result.psnr, default=float('inf')):.1f} dB")
        if result.status == "written" and result.retried_frames:
            result.message = "; ".join(filter(None, [result.message, (
                f"{result.retried_frames} frame(s) failed the check once and passed when "
                "encoded again alone")]))
        return result
    except (DcmstreamError, ValueError, RuntimeError, OSError, MemoryError, TypeError) as exc:
        result.status = "failed"
        result.message = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        forget(key, close=False)
        inst.close()
        if own_pools is not None:
            own_pools.close()
        result.wall_seconds = time.perf_counter() - started


def _destination(src: Path, destination: str | os.PathLike[str] | None, target: Target,
                 out: OutputOptions, result: TranscodeResult) -> Path | None:
    """Where the output goes; None when ``result`` already says it cannot be written."""
    if out.in_place:
        if destination is not None and Path(destination).resolve() != src.resolve():
            raise InvalidArgumentError("in_place=True writes over the source; pass destination=None")
        if target.lossy:
            result.status = "refused"
            result.message = "in-place replacement with a lossy result is never done"
            return None
        return src
    if destination is None:
        raise InvalidArgumentError("destination is required unless in_place=True")
    dest = Path(destination)
    if dest.resolve() == src.resolve():
        result.status = "refused"
        result.message = "destination is the source: use in_place to replace it"
        return None
    return dest


def _write_checked(plan: FilePlan, src: Path, dest: Path, key: str, options: TranscodeOptions,
                   encode_pool: Executor | None, verify_pool: Executor | None, workers: int,
                   progress: Progress | None, result: TranscodeResult) -> TranscodeResult:
    """Write ``plan`` to a temporary file beside ``dest``, check it, and commit it - or keep
    the input when it is smaller, or refuse when a lossy frame missed its thresholds. A
    Basic Offset Table that overflows (the size estimate was wrong) starts again with the
    Extended one."""
    target, out = plan.target, options.output
    window, chunk = in_flight(plan, workers)
    offset_table = estimate_offset_table(plan, out.eot_threshold)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        attempt = replace(result, raw_bytes=0, pixel_bytes=0, source_seconds=0.0,
                          encode_seconds=0.0, decode_seconds=0.0)
        with writer.AtomicFile(dest) as atomic:
            try:
                digests = write_file(plan, atomic, offset_table, encode_pool, window, chunk,
                                     progress, attempt)
            except writer.PixelDataTooLarge:
                if offset_table == "eot" or target.native:
                    raise
                offset_table = "eot"  # the estimate was wrong: start again with EOT
                continue
            except QaFailure as exc:
                result.status, result.message = "refused", f"QA failed at {exc}"
                result.psnr, result.ssim = attempt.psnr, attempt.ssim
                return result
            atomic.close()
            result = attempt
            if options.quality.verify:
                verify_file(atomic.path, plan, digests, verify_pool, window, result)
            result.output_bytes = atomic.path.stat().st_size
            if writer.is_deflated(target.transfer_syntax):
                result.pixel_bytes = result.output_bytes  # header and pixels deflate together
            if target.compresses and plan.job.transform is None \
                    and result.output_bytes >= result.input_bytes:
                result.status = "kept-input"
                result.message = (f"result ({result.output_bytes} bytes) not smaller than "
                                  f"the input ({result.input_bytes} bytes); input kept")
                result.output_bytes = 0
                atomic.discard()
                _keep(result, src, dest, out)
                return result
            # Release our handle on the source before it is replaced in place.
            forget(key, close=False)
            atomic.commit()
        break
    result.status = "written"
    result.output = str(dest)
    return result


def _keep(result: TranscodeResult, src: Path, dest: Path, out: OutputOptions) -> None:
    """The input is the best version: leave it (in place) or copy it to the destination."""
    if out.in_place or not out.copy_kept:
        result.output = str(src)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_copy(src, dest)
    result.output = str(dest)
    result.output_bytes = dest.stat().st_size


def _fill_identity(result: TranscodeResult, inst: Instance, target: Target) -> None:
    """What the result says about the input (before anything is written)."""
    result.target = target.label
    result.syntax_out = target.transfer_syntax
    result.syntax_in = str(inst.transfer_syntax)
    result.modality = str(inst.header_dataset.get("Modality", "") or "")
    result.sop_instance_uid = str(inst.header_dataset.get("SOPInstanceUID", "") or "")
    if inst.has_pixels:
        spec = inst.pixel_spec
        result.frames = len(inst)
        result.rows, result.columns = spec.rows, spec.columns
        result.samples, result.bits_stored = spec.samples_per_pixel, spec.bits_stored
