"""Compress many files: the library function under ``dcmstream compress``.

Inputs are files or folders (recursive; hidden files skipped). Each file goes to
``outdir/<path relative to its input>`` (a file given directly: ``outdir/<name>``), or over
itself with ``in_place``. Files run concurrently in ``jobs`` threads and share one set of
frame workers (:class:`~.executor.Pools`); many small files (single-frame CT slices) go
whole to ``jobs`` worker processes instead, since their time goes mostly to Python work that
threads cannot overlap. So a folder of slices and one 2,000-frame angiogram both keep every
core busy. A hybrid run also writes
``<stem>.preview<suffix>`` next to each archive copy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from ..errors import DcmstreamError, InvalidArgumentError
from ..image import open as open_instance
from ..io.walk import iter_paths
from .background import BackgroundEstimate, analyse_background
from .encoders import Target, parse_target
from .executor import Pools, make_executor
from .hybrid import hybrid
from .options import CompressOptions
from .report import write_report
from .results import Progress, TranscodeResult
from .transcode import transcode

__all__ = ["CompressRun", "WorkItem", "compress", "iter_inputs", "plan_work"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    """One input file, where its output goes, and how much work it is."""

    source: Path
    destination: Path
    preview: Path | None
    frames: int  # 0 when not counted (or no pixels)
    raw_bytes: int
    file_bytes: int = 0  # size on disk


def iter_inputs(inputs: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input root) for files and folders (recursive, sorted);
    hidden files (our temporaries among them) are skipped."""
    return iter_paths(inputs, missing_ok=False)


def _preview_path(destination: Path) -> Path:
    return destination.with_name(f"{destination.stem}.preview{destination.suffix or '.dcm'}")


def plan_work(inputs: Iterable[str | os.PathLike[str]], outdir: str | os.PathLike[str] | None,
              *, in_place: bool = False, with_preview: bool = False,
              count_frames: bool = True) -> list[WorkItem]:
    """Resolve inputs to work items. ``count_frames`` reads each header once for the frames
    and raw bytes (a progress bar's totals); without it only the file sizes are taken."""
    if not in_place and outdir is None:
        raise InvalidArgumentError("an output folder is required unless in_place")
    items: list[WorkItem] = []
    seen: dict[Path, Path] = {}
    out = None if outdir is None else Path(outdir)
    for path, rel in iter_inputs(inputs):
        destination = path if in_place else out / rel  # type: ignore[operator]
        key = destination.resolve()
        if key in seen:
            raise InvalidArgumentError(f"{path} and {seen[key]} would both be written to {destination}")
        seen[key] = path
        frames = raw = size = 0
        try:
            size = path.stat().st_size
            if count_frames:
                with open_instance(path, cache=False) as inst:
                    if inst.has_pixels:
                        frames = len(inst)
                        raw = inst.pixel_spec.decoded_frame_bytes * frames
        except (DcmstreamError, OSError):
            pass  # transcode() reports it
        preview = _preview_path(destination) if with_preview else None
        items.append(WorkItem(path, destination, preview, frames, raw, size))
    return items


@dataclass
class CompressRun:
    """The outcome of :func:`compress`."""

    results: list[TranscodeResult]
    background: list[BackgroundEstimate]
    report: Path | None
    wall_seconds: float = 0.0  # the whole run (files, background analysis; not the report)


def _run_item(item: WorkItem, target: Target, options: CompressOptions, jobs: int = 1,
              pools: Pools | None = None, progress: Progress | None = None) -> TranscodeResult:
    """Transcode one work item (the archive copy and the preview in a hybrid run); runs in
    worker processes too (its arguments pickle)."""
    if options.hybrid:
        assert item.preview is not None
        return hybrid(item.source, item.destination, item.preview, archive_target=target,
                      max_size=options.preview_size, jobs=jobs, executor=pools,
                      progress=progress, options=options.transcode_options())
    in_place = options.output.in_place
    return transcode(item.source, None if in_place else item.destination, target, jobs=jobs,
                     executor=pools, progress=progress, options=options.transcode_options())


#: Files of at most this size go whole to worker processes when a run has several jobs and
#: enough of them (``_PROCESS_FILES_PER_JOB`` per job): a single-frame slice spends about
#: half its time in Python (header parse and write, checks), which threads cannot overlap -
#: two file threads gained nothing on a folder of 512 x 512 CT slices. (The size, not the
#: frame count: knowing it needs no header read, which the parent would do one by one.)
_SMALL_FILE_BYTES = 16 << 20
_PROCESS_FILES_PER_JOB = 8


def compress(
    inputs: Iterable[str | os.PathLike[str]],
    outdir: str | os.PathLike[str] | None,
    target: str | Target,
    *,
    jobs: int = 1,
    report: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    on_result: Callable[[TranscodeResult], None] | None = None,
    items: list[WorkItem] | None = None,
    options: CompressOptions | None = None,
) -> CompressRun:
    """Transcode every DICOM file of ``inputs`` to ``target``; see :func:`transcode` for
    what each file goes through, :mod:`.batch` for where outputs go and
    :class:`~.options.CompressOptions` for the settings (quality, output, hybrid preview,
    background analysis). ``report`` writes the HTML report there. Results come back in
    input order; ``on_result`` sees each as soon as it is done; ``progress(frames, source
    bytes)`` counts frames as they are done; ``items`` (from :func:`plan_work`) saves
    resolving the inputs again.

    With ``jobs`` > 1, small files (a few frames: slices of a series) go whole to ``jobs``
    worker processes when there are many of them; the others run in ``jobs`` threads with
    their frames in shared worker pools.
    """
    started = time.perf_counter()
    options = options or CompressOptions()
    target = parse_target(target) if isinstance(target, str) else target
    in_place = options.output.in_place
    if options.hybrid and target.lossy:
        raise InvalidArgumentError("--hybrid keeps a lossless archive copy: choose a lossless --to")
    if options.hybrid and in_place:
        raise InvalidArgumentError("--hybrid and --in-place together are not supported")
    if items is None:
        items = plan_work(inputs, outdir, in_place=in_place, with_preview=options.hybrid,
                          count_frames=progress is not None)
    jobs = max(1, jobs)
    results: list[TranscodeResult | None] = [None] * len(items)

    def done(index: int, result: TranscodeResult, counted: int, nbytes: int = 0) -> None:
        item = items[index]
        if progress is not None and item.frames > counted:
            # Frames of files that stopped early, or ran in a worker process (``nbytes``
            # done there), count as done here.
            progress(item.frames - counted, nbytes)
        results[index] = result
        if on_result is not None:
            on_result(result)

    def one(index: int) -> None:
        counted = 0

        def step(frames: int, nbytes: int) -> None:
            nonlocal counted
            counted += frames
            if progress is not None:
                progress(frames, nbytes)

        done(index, _run_item(items[index], target, options, jobs, pools, step), counted)

    small = [i for i, item in enumerate(items) if item.file_bytes <= _SMALL_FILE_BYTES]
    if jobs == 1 or len(small) < _PROCESS_FILES_PER_JOB * jobs:
        small = []
    if small:
        try:
            _in_processes(small, items, target, options, jobs, done)
        except (BrokenProcessPool, OSError) as exc:
            # No usable worker processes here (a __main__ they cannot import, such as a
            # script read from stdin; no fork server): what is left runs in threads.
            log.warning("worker processes failed (%s): the remaining files run in threads", exc)
    rest = [i for i in range(len(items)) if results[i] is None]
    with Pools(jobs) as pools:
        if jobs == 1 or len(rest) <= 1:
            for index in rest:
                one(index)
        else:
            # Files concurrently, frames in the shared pools (big files).
            with ThreadPoolExecutor(jobs, thread_name_prefix="dcmstream-file") as files:
                list(files.map(one, rest))
    final = [r for r in results if r is not None]
    estimates: list[BackgroundEstimate] = []
    if options.background:
        for item in items:
            try:
                estimate = analyse_background(item.source)
            except (DcmstreamError, OSError, ValueError, RuntimeError):
                estimate = None
            if estimate is not None:
                estimates.append(estimate)
    wall = time.perf_counter() - started
    written_report = None
    if report is not None:
        quality = options.quality
        settings = {"target": target.label, "jobs": jobs, "hybrid": options.hybrid,
                    "min PSNR": quality.min_psnr, "max error": quality.max_error, "in place": in_place}
        written_report = write_report(report, final, background=estimates,
                                      settings={k: v for k, v in settings.items()
                                                if v not in (None, False)},
                                      wall_seconds=wall, jobs=jobs)
    return CompressRun(final, estimates, written_report, wall)


def _in_processes(indexes: list[int], items: list[WorkItem], target: Target, options: CompressOptions,
                  jobs: int, done: Callable[[int, TranscodeResult, int, int], None]) -> None:
    """Transcode ``items[i]`` for i in ``indexes`` whole, one file per task, in ``jobs``
    (> 1) worker processes; at most a few tasks per process wait at any time."""
    executor = make_executor(jobs, processes=True)
    assert executor is not None  # jobs > 1
    try:
        pending: dict[Future[TranscodeResult], int] = {}
        queue = iter(indexes)
        for index in queue:
            pending[executor.submit(_run_item, items[index], target, options)] = index
            while len(pending) >= 4 * jobs:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = future.result()
                    done(pending.pop(future), result, 0, result.raw_bytes)
        for future in as_completed(list(pending)):
            result = future.result()
            done(pending.pop(future), result, 0, result.raw_bytes)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
