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
:mod:`.instances` (open instances shared with the workers), :mod:`.results`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from pydicom.dataset import Dataset

from ..errors import DcmstreamError
from ..image import Instance
from ..image import open as open_instance
from ..io.atomic import atomic_copy
from . import writer
from .encoders import Target, UnsupportedTarget, parse_target
from .executor import Pools, make_executor
from .filewriter import write_file
from .frames import FrameTransform
from .instances import forget, register
from .planning import EOT_THRESHOLD, estimate_offset_table, in_flight, prepare
from .results import Progress, QaFailure, QaThresholds, TranscodeResult
from .verify import verify_file

__all__ = [
    "EOT_THRESHOLD",
    "FrameTransform",
    "Pools",
    "Progress",
    "QaFailure",
    "QaThresholds",
    "TranscodeResult",
    "make_executor",
    "transcode",
]


def transcode(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None,
    target: str | Target,
    *,
    min_psnr: float | None = None,
    max_error: int | None = None,
    min_ssim: float | None = None,
    jobs: int = 1,
    executor: Executor | Pools | None = None,
    in_place: bool = False,
    eot_threshold: int = EOT_THRESHOLD,
    verify: bool = True,
    ssim: bool = True,
    copy_kept: bool = True,
    progress: Progress | None = None,
    transform: FrameTransform | None = None,
    edit: Callable[[Dataset], None] | None = None,
    description: str = "",
) -> TranscodeResult:
    """Transcode one DICOM file to ``target`` (a name like ``"jpeg-ls"``, see
    :func:`~dcmstream.compress.encoders.parse_target`) and return what happened.

    ``destination`` is the output path; with ``in_place=True`` it must be None or the
    source, and the source is replaced only by a verified lossless result. Lossless results
    are always decoded back and compared bit-exact before they are committed
    (``verify=False`` skips that, for benchmarks only); a result that is not smaller than
    the source is dropped and the source kept (copied to ``destination`` when
    ``copy_kept``). Lossy results are checked per frame against ``min_psnr`` (dB over the
    Bits Stored range), ``max_error`` and ``min_ssim``: one failing frame and nothing is
    written (status "refused"). ``jobs`` > 1 encodes frames in a pool: threads, or
    processes for encoders that hold the GIL; pass ``executor`` (an Executor, or
    :class:`Pools` to share them across files) to reuse workers. ``eot_threshold`` is the estimated Pixel Data size from which the
    Extended Offset Table is used. Never raises for a bad input file: the result says
    "failed" with the reason.

    ``transform`` (a picklable frame function, e.g. :class:`FrameTransform` downsampling),
    ``edit`` (changes the output header) and ``description`` (appended to the Derivation
    Description) serve derived renditions such as the hybrid preview.
    """
    started = time.perf_counter()
    src = Path(source)
    result = TranscodeResult(source=str(src), output=None, status="failed")
    try:
        target = parse_target(target) if isinstance(target, str) else target
    except UnsupportedTarget as exc:
        result.message = str(exc)
        return result
    result.target = target.label
    if in_place:
        if destination is not None and Path(destination).resolve() != src.resolve():
            raise ValueError("in_place=True writes over the source; pass destination=None")
        if target.lossy:
            result.status = "refused"
            result.message = "in-place replacement with a lossy result is never done"
            return result
        dest = src
    else:
        if destination is None:
            raise ValueError("destination is required unless in_place=True")
        dest = Path(destination)
        if dest.resolve() == src.resolve():
            result.status = "refused"
            result.message = "destination is the source: use in_place to replace it"
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
            _keep(result, src, dest, in_place, copy_kept)
            return result
        qa = QaThresholds(min_psnr, max_error, min_ssim)
        try:
            plan, encode_plan = prepare(inst, key, target, qa=qa, with_ssim=ssim,
                                         transform=transform, edit=edit,
                                         description_extra=description)
        except UnsupportedTarget as exc:
            result.status, result.message = "kept-input", f"{exc}; input kept"
            _keep(result, src, dest, in_place, copy_kept)
            return result
        plan.job = replace(plan.job, verify=verify)
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
        window, chunk = in_flight(plan, max(jobs, getattr(encode_pool, "_max_workers", 1) or 1))
        offset_table = estimate_offset_table(plan, eot_threshold)
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
                if verify:
                    verify_file(atomic.path, plan, digests, verify_pool, window, result)
                result.output_bytes = atomic.path.stat().st_size
                if writer.is_deflated(target.transfer_syntax):
                    result.pixel_bytes = result.output_bytes  # header and pixels deflate together
                if target.compresses and transform is None \
                        and result.output_bytes >= result.input_bytes:
                    result.status = "kept-input"
                    result.message = (f"result ({result.output_bytes} bytes) not smaller than "
                                      f"the input ({result.input_bytes} bytes); input kept")
                    result.output_bytes = 0
                    atomic.discard()
                    _keep(result, src, dest, in_place, copy_kept)
                    return result
                # Release our handle on the source before it is replaced in place.
                forget(key, close=False)
                atomic.commit()
            break
        result.status = "written"
        result.output = str(dest)
        if target.lossy:
            result.message = (f"lossy ratio {result.ratio:.1f}, PSNR min "
                              f"{min(result.psnr, default=float('inf')):.1f} dB")
        if result.retried_frames:
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


def _keep(result: TranscodeResult, src: Path, dest: Path, in_place: bool, copy_kept: bool) -> None:
    """The input is the best version: leave it (in place) or copy it to the destination."""
    if in_place or not copy_kept:
        result.output = str(src)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_copy(src, dest)
    result.output = str(dest)
    result.output_bytes = dest.stat().st_size


def _fill_identity(result: TranscodeResult, inst: Instance | None, target: Target) -> None:
    result.target = target.label
    result.syntax_out = target.transfer_syntax
    if inst is None:
        return
    result.syntax_in = str(inst.transfer_syntax)
    result.modality = str(inst.header_dataset.get("Modality", "") or "")
    result.sop_instance_uid = str(inst.header_dataset.get("SOPInstanceUID", "") or "")
    if inst.has_pixels:
        spec = inst.pixel_spec
        result.frames = len(inst)
        result.rows, result.columns = spec.rows, spec.columns
        result.samples, result.bits_stored = spec.samples_per_pixel, spec.bits_stored

