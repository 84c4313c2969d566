"""Compress many files: the library function under ``dcmstream compress``.

Inputs are files or folders (recursive; hidden files skipped). Each file goes to
``outdir/<path relative to its input>`` (a file given directly: ``outdir/<name>``), or over
itself with ``in_place``. Files run concurrently in ``jobs`` threads and share one set of
frame workers (:class:`~.transcode.Pools`), so a folder of single-frame CT slices and one
2,000-frame angiogram both keep every core busy. A hybrid run also writes
``<stem>.preview<suffix>`` next to each archive copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import DcmstreamError
from ..image import open as open_instance
from .background import BackgroundEstimate, analyse_background
from .encoders import Target, parse_target
from .hybrid import DEFAULT_PREVIEW_SIZE, hybrid
from .report import write_report
from .transcode import EOT_THRESHOLD, Pools, Progress, TranscodeResult, iter_inputs, transcode

__all__ = ["CompressRun", "WorkItem", "compress", "plan_work"]


@dataclass(frozen=True)
class WorkItem:
    """One input file, where its output goes, and how much work it is."""

    source: Path
    destination: Path
    preview: Path | None
    frames: int
    raw_bytes: int


def _preview_path(destination: Path) -> Path:
    return destination.with_name(f"{destination.stem}.preview{destination.suffix or '.dcm'}")


def plan_work(inputs: Iterable[str | os.PathLike[str]], outdir: str | os.PathLike[str] | None,
              *, in_place: bool = False, with_preview: bool = False) -> list[WorkItem]:
    """Resolve inputs to work items (reads each header once to count frames)."""
    if not in_place and outdir is None:
        raise ValueError("an output folder is required unless in_place")
    items: list[WorkItem] = []
    seen: dict[Path, Path] = {}
    out = None if outdir is None else Path(outdir)
    for path, rel in iter_inputs(inputs):
        destination = path if in_place else out / rel  # type: ignore[operator]
        key = destination.resolve()
        if key in seen:
            raise ValueError(f"{path} and {seen[key]} would both be written to {destination}")
        seen[key] = path
        frames = raw = 0
        try:
            with open_instance(path, cache=False) as inst:
                if inst.has_pixels:
                    frames = len(inst)
                    raw = inst.pixel_spec.decoded_frame_bytes * frames
        except (DcmstreamError, OSError):
            pass  # transcode() reports it
        preview = _preview_path(destination) if with_preview else None
        items.append(WorkItem(path, destination, preview, frames, raw))
    return items


@dataclass
class CompressRun:
    """The outcome of :func:`compress`."""

    results: list[TranscodeResult]
    background: list[BackgroundEstimate]
    report: Path | None


def compress(
    inputs: Iterable[str | os.PathLike[str]],
    outdir: str | os.PathLike[str] | None,
    target: str | Target,
    *,
    report: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    min_psnr: float | None = None,
    max_error: int | None = None,
    min_ssim: float | None = None,
    in_place: bool = False,
    with_hybrid: bool = False,
    preview_size: int = DEFAULT_PREVIEW_SIZE,
    background: bool = False,
    eot_threshold: int = EOT_THRESHOLD,
    progress: Progress | None = None,
    on_result: Callable[[TranscodeResult], None] | None = None,
    items: list[WorkItem] | None = None,
) -> CompressRun:
    """Transcode every DICOM file of ``inputs`` to ``target``; see :func:`transcode` for
    what each file goes through and :mod:`.batch` for where outputs go. ``with_hybrid``
    makes ``target`` the lossless archive syntax and adds a preview per file;
    ``background`` adds the content-aware analysis to the report. Results come back in
    input order; ``on_result`` sees each as soon as it is done.
    """
    target = parse_target(target) if isinstance(target, str) else target
    if with_hybrid and target.lossy:
        raise ValueError("--hybrid keeps a lossless archive copy: choose a lossless --to")
    if items is None:
        items = plan_work(inputs, outdir, in_place=in_place, with_preview=with_hybrid)
    jobs = max(1, jobs)

    def one(item: WorkItem) -> TranscodeResult:
        counted = 0

        def step(frames: int, nbytes: int) -> None:
            nonlocal counted
            counted += frames
            if progress is not None:
                progress(frames, nbytes)

        if with_hybrid:
            assert item.preview is not None
            if in_place:
                raise ValueError("--hybrid and --in-place together are not supported")
            result = hybrid(item.source, item.destination, item.preview,
                            archive_target=target, max_size=preview_size, min_psnr=min_psnr,
                            max_error=max_error, jobs=jobs, executor=pools,
                            progress=step, eot_threshold=eot_threshold)
        else:
            result = transcode(item.source, None if in_place else item.destination, target,
                               min_psnr=min_psnr, max_error=max_error, min_ssim=min_ssim,
                               jobs=jobs, executor=pools, in_place=in_place,
                               eot_threshold=eot_threshold, progress=step)
        if progress is not None and item.frames > counted:
            # Frames of files that stopped early still count as done for the progress bar.
            progress(item.frames - counted, 0)
        if on_result is not None:
            on_result(result)
        return result

    with Pools(jobs) as pools:
        if jobs == 1 or len(items) == 1:
            results = [one(item) for item in items]
        else:
            # Files concurrently (single-frame series), frames in the shared pools (big files).
            with ThreadPoolExecutor(jobs, thread_name_prefix="dcmstream-file") as files:
                results = list(files.map(one, items))
    estimates: list[BackgroundEstimate] = []
    if background:
        for item in items:
            try:
                estimate = analyse_background(item.source)
            except (DcmstreamError, OSError, ValueError, RuntimeError):
                estimate = None
            if estimate is not None:
                estimates.append(estimate)
    written_report = None
    if report is not None:
        settings = {"target": target.label, "jobs": jobs, "hybrid": with_hybrid,
                    "min PSNR": min_psnr, "max error": max_error, "in place": in_place}
        written_report = write_report(report, results, background=estimates,
                                      settings={k: v for k, v in settings.items()
                                                if v not in (None, False)})
    return CompressRun(results, estimates, written_report)
