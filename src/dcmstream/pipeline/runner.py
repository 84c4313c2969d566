"""``run()``: a function over a cohort, within a memory budget, locally or on dask.distributed.

The local run (threads, the default) is a three-stage pipeline::

    planner (this thread)  --refs-->  readers (thread pool: read + decode)
        --items-->  workers (thread pool: fn)  --results-->  writer (one thread: sink)

Codecs and numpy release the GIL, so threads run in parallel. Frames travel between the
threads in chunks of up to :data:`MAX_CHUNK` (one hand-over, one open-file look-up per
source and one credit release per chunk: per-frame book-keeping held the GIL long enough
to starve two workers). Every item holds a
*credit* from the moment the planner admits it until the writer has handed its result
to the sink; there are ``3 x batch`` credits (the window), the batch following
:class:`~dcmstream.pipeline.budget.BatchSizer`. Before admitting anything the planner
waits while the :class:`~dcmstream.pipeline.monitor.MemoryMonitor` reports pressure
(back-pressure). The writer re-orders results to plan order within the window, so the
sink's output does not depend on the number of workers.

``executor="processes"`` runs batches of refs in worker processes, and ``scheduler=``
(an address or a ``dask.distributed.Client``) on a dask cluster: a task reads and
processes one batch where it runs (files are reopened by path) and returns results
only. At most two batches per worker thread are in flight; the client receives results
through the same writer and sink.

A failing item (unreadable frame, exception in ``fn``) is recorded with its traceback
and the run goes on.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cache import FrameCache
from ..errors import InvalidArgumentError, InvalidArgumentTypeError, MissingDependencyError
from .budget import BatchSizer, format_bytes, parse_size
from .items import UNITS, Failure, ItemInfo
from .monitor import MemoryMonitor
from .options import RunOptions
from .plan import Planner
from .sinks import Sink, as_sink
from .sources import Opener
from .work import (
    ReadOptions,
    WorkRef,
    decoded_of,
    encoded_of,
    failure_of,
    process_batch,
    read_item,
)

__all__ = ["run", "RunReport", "ProgressInfo"]

#: Failures kept with their traceback (all are counted).
MAX_FAILURES_KEPT = 1000

#: What the writer gets per item: (plan order, info, result, failure).
_Entry = tuple[int, ItemInfo, Any, Failure | None]


@dataclass(frozen=True)
class ProgressInfo:
    """A snapshot for progress displays (``progress=`` callback), at most ~10 per second."""

    done: int
    failed: int
    planned: int
    planning_done: bool
    bytes: int
    elapsed: float
    rss: int  # resident bytes now (monitor's last sample)
    rss_above_baseline: int
    budget: int
    batch: int
    in_flight: int
    paused: bool
    pauses: int

    @property
    def total(self) -> int | None:
        """Items in the run, once the planner has seen every input."""
        return self.planned if self.planning_done else None


@dataclass
class RunReport:
    """What a run did: items, throughput, memory, back-pressure and failures."""

    items: int = 0  # processed successfully
    failed: int = 0
    skipped: int = 0  # inputs that are not DICOM images
    planned: int = 0
    selected_out: int = 0  # left out by the region-of-interest predicate
    inputs: int = 0
    elapsed: float = 0.0
    bytes: int = 0  # decoded bytes handed to fn
    budget: int = 0
    baseline_rss: int = 0
    peak_rss: int = 0
    batch_initial: int = 0
    batch_final: int = 0
    batch_min: int = 0
    batch_max: int = 0
    item_bytes_estimate: int = 0
    pauses: int = 0
    paused_seconds: float = 0.0
    forced: int = 0
    memory_checks: int = 0
    cache_shrinks: int = 0
    workers: int = 1
    executor: str = "threads"
    unit: str = "frame"
    failures: list[Failure] = field(default_factory=list)
    output: Any = None

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def throughput(self) -> float:
        """Items per second."""
        return self.items / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """Decoded megabytes (10**6) per second."""
        return self.bytes / 1e6 / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def peak_rss_above_baseline(self) -> int:
        return max(0, self.peak_rss - self.baseline_rss)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("failures", "output")}
        d.update(throughput=self.throughput, mb_per_s=self.mb_per_s, peak_rss_above_baseline=self.peak_rss_above_baseline,
                 output=None if self.output is None else str(self.output), failures=[f.as_dict() for f in self.failures])
        return d

    def summary(self) -> str:
        lines = [
            f"{self.items} {self.unit}(s) processed, {self.failed} failed, {self.skipped} skipped"
            + (f", {self.selected_out} outside the region of interest" if self.selected_out else ""),
            f"{self.elapsed:.1f} s, {self.throughput:,.1f} items/s, {self.mb_per_s:,.1f} MB/s decoded "
            f"({self.workers} {self.executor} worker(s))",
            f"peak memory {format_bytes(self.peak_rss)} ({format_bytes(self.peak_rss_above_baseline)} above the "
            f"{format_bytes(self.baseline_rss)} baseline; budget {format_bytes(self.budget)}), "
            f"batch {self.batch_initial} -> {self.batch_final} (min {self.batch_min}, max {self.batch_max})",
            f"back-pressure: {self.pauses} pause(s), {self.paused_seconds:.1f} s paused"
            + (f", {self.forced} item(s) forced" if self.forced else ""),
        ]
        for f in self.failures[:10]:
            lines.append(f"  failed {f.key} ({f.stage}): {f.error}")
        if self.failed > 10:
            lines.append(f"  ... and {self.failed - 10} more")
        return "\n".join(lines)


# -- the writer -----------------------------------------------------------------------------------
class _Writer:
    """The single thread that hands results to the sink in plan order and frees credits."""

    def __init__(self, sink: Sink, report: RunReport, gate: _Credits, ordered: bool,
                 on_progress: Callable[[], None] | None) -> None:
        self.sink = sink
        self.report = report
        self.gate = gate
        self.ordered = ordered
        self.on_progress = on_progress
        self.track_sources = False
        self.queue: queue.Queue[list[_Entry] | None] = queue.Queue()
        self._pending: dict[int, tuple[ItemInfo, Any, Failure | None]] = {}
        self._next = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dcmstream-pipeline-writer", daemon=True)

    def put(self, seq: int, info: ItemInfo, result: Any, failure: Failure | None) -> None:
        self.queue.put([(seq, info, result, failure)])

    def put_many(self, entries: list[_Entry]) -> None:
        """Several results at once (a chunk of frames): one hand-over, one credit release."""
        if entries:
            self.queue.put(entries)

    def _run(self) -> None:
        last = 0.0
        while True:
            batch = self.queue.get()
            if batch is None:
                break
            emitted: list[str] = []  # sources of the items handed to the sink
            for seq, info, result, failure in batch:
                if not self.ordered:
                    self._emit(info, result, failure, emitted)
                else:
                    self._pending[seq] = (info, result, failure)
                    while self._next in self._pending:
                        self._emit(*self._pending.pop(self._next), emitted)
                        self._next += 1
            self._free(emitted)
            now = time.monotonic()
            if self.on_progress is not None and now - last >= 0.1:
                last = now
                self.on_progress()
        emitted = []
        for seq in sorted(self._pending):  # only after an aborted run
            self._emit(*self._pending.pop(seq), emitted)
        self._free(emitted)

    def _free(self, sources: list[str]) -> None:
        """Give back the credits (and source holds) of the items just emitted, at once."""
        if not sources:
            return
        if self.track_sources:
            counts: dict[str, int] = {}
            for source in sources:
                counts[source] = counts.get(source, 0) + 1
            for source, n in counts.items():
                self.gate.done_source(source, n)
        self.gate.release(len(sources))

    def _emit(self, info: ItemInfo, result: Any, failure: Failure | None, emitted: list[str]) -> None:
        r = self.report
        try:
            if failure is not None:
                r.failed += 1
                if len(r.failures) < MAX_FAILURES_KEPT:
                    r.failures.append(failure)
            elif self.error is None:
                try:
                    self.sink.write(info, result)
                    r.items += 1
                    r.bytes += info.nbytes
                except Exception as exc:  # noqa: BLE001 - a sink failure is one item's failure
                    r.failed += 1
                    if len(r.failures) < MAX_FAILURES_KEPT:
                        r.failures.append(failure_of(info, "sink", exc))
        finally:
            emitted.append(info.source)


class _Credits:
    """Items in flight, at most ``limit()`` (read again at every admission), and the
    sources they come from (so the planner never runs further ahead than the open-file
    LRU reaches: a file it opened is still open when its items are read)."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._sources: dict[str, int] = {}
        self.on_first: Callable[[str], None] | None = None  # a source got pending items
        self.on_last: Callable[[str], None] | None = None  # ... and has none left

    def add_source(self, source: str, count: int = 1) -> None:
        with self._cond:
            n = self._sources.get(source, 0)
            self._sources[source] = n + count
        if n == 0 and self.on_first is not None:
            self.on_first(source)

    def done_source(self, source: str, count: int = 1) -> None:
        with self._cond:
            n = self._sources.get(source, 0) - count
            if n > 0:
                self._sources[source] = n
                return
            self._sources.pop(source, None)
            self._cond.notify_all()
        if self.on_last is not None:
            self.on_last(source)

    def sources(self) -> int:
        """How many sources have pending items."""
        with self._cond:
            return len(self._sources)

    def wait_sources_below(self, n: int, stop: threading.Event | None = None) -> None:
        with self._cond:
            while len(self._sources) >= n and not (stop is not None and stop.is_set()):
                self._cond.wait(0.1)

    def acquire(self, n: int = 1, stop: threading.Event | None = None) -> bool:
        with self._cond:
            while self.in_flight > 0 and self.in_flight + n > max(n, self.limit()):
                self._cond.wait(0.1)
                if stop is not None and stop.is_set():
                    return False
            self.in_flight += n
            self.peak = max(self.peak, self.in_flight)
            return True

    def would_block(self, n: int = 1) -> bool:
        with self._cond:
            return self.in_flight > 0 and self.in_flight + n > max(n, self.limit())

    def release(self, n: int = 1) -> None:
        with self._cond:
            self.in_flight -= n
            self._cond.notify_all()

    def wait_empty(self) -> None:
        with self._cond:
            while self.in_flight > 0:
                self._cond.wait(0.1)


# -- run -----------------------------------------------------------------------------------------
def _item_bytes(ref: WorkRef, opts: ReadOptions) -> int:
    info = ref.info
    itemsize = 1 if opts.values == "uint8" else max(2, np.dtype(info.dtype).itemsize if info.dtype else 2)
    if info.unit == "tile" and info.height and info.width:
        n = info.height * info.width
    else:
        n = int(np.prod(info.image_shape[:2])) if info.image_shape else 1
    samples = int(np.prod(info.image_shape[2:])) if len(info.image_shape) > 2 else 1
    one = n * samples * itemsize
    if info.unit in ("instance", "series"):
        return one * max(1, info.frames)
    return one


def run(
    sources: Any,
    fn: Callable[[Any], Any],
    *,
    memory_budget: int | str = "2GB",
    unit: str = "frame",
    sink: Any = None,
    workers: int | None = None,
    progress: Callable[[ProgressInfo], None] | None = None,
    options: RunOptions | None = None,
) -> RunReport:
    """Run ``fn`` over every ``unit`` of ``sources`` within ``memory_budget``; return a RunReport.

    ``sources``: files, folders (recursive), archive folders, DICOMweb URLs, or a list of
    them (see :mod:`dcmstream.pipeline.sources`). ``unit``: "frame", "tile", "instance" or
    "series"; ``fn`` gets a :class:`~dcmstream.pipeline.Frame`,
    :class:`~dcmstream.pipeline.Tile`, :class:`~dcmstream.pipeline.InstanceItem` or
    :class:`~dcmstream.pipeline.SeriesItem` and returns a result for ``sink`` (a
    :class:`~dcmstream.pipeline.Sink`, a path such as ``out.zarr`` or ``stats.csv``, a
    callable ``(info, result)``, or None to drop results). ``workers`` (default: CPU count)
    threads run ``fn``; ``progress`` gets a :class:`ProgressInfo` about ten times a second.

    Memory: the number of items in flight follows the budget (``budget x 0.7 / (item
    size x 3)`` per batch, then the measured size per item), and producers pause while
    the machine or the process is above a share of it (back-pressure). ``options``
    (:class:`~dcmstream.pipeline.RunOptions`) holds the rest, by concern: what items hold
    and which are kept (level, value view, tiles, region of interest), where ``fn`` runs
    (processes, a dask cluster) and how the budget is kept.
    """
    options = options or RunOptions()
    items, execution = options.items, options.execution
    if unit not in UNITS:
        raise InvalidArgumentError(f"unit must be one of {UNITS}, not {unit!r}")
    executor = execution.executor
    budget = parse_size(memory_budget)
    client, own_client = _client(execution.scheduler)
    if client is not None:
        executor = "dask"
        workers = workers or sum(client.nthreads().values()) or 1
    workers = max(1, int(workers or os.cpu_count() or 1))
    readers = max(1, int(execution.readers or workers))
    report = RunReport(budget=budget, workers=workers, executor=executor, unit=unit)

    # Tiles are cut from decoded frames (or assembled from a slide's stored tiles): keep
    # a few decoded frames so neighbouring tiles do not decode them again.
    tile_cache = min(budget // 8, 256 << 20) if unit == "tile" else 0
    opts = ReadOptions(unit=unit, level=items.level, values=items.values, window=items.window,
                       tile_cache_bytes=tile_cache)
    cache: FrameCache | bool = FrameCache(max_bytes=tile_cache) if tile_cache else False
    opener = Opener(cache=cache, max_open=execution.max_open)
    planner = Planner(sources, unit=unit, opener=opener, level=items.level, tile_size=items.tile_size,
                      overlap=items.overlap, roi=items.roi, roi_level=items.roi_level)
    sink_obj = as_sink(sink)

    pool = _process_pool(workers) if executor == "processes" else None
    limits = options.budget
    monitor = MemoryMonitor(budget, threshold=limits.memory_threshold, interval=limits.monitor_interval,
                            stall_timeout=limits.stall_timeout, probe=limits.memory_probe,
                            include_children=executor == "processes")
    report.baseline_rss = monitor.real_baseline
    state = _State()

    def window_size() -> int:
        if state.sizer is None:
            return 1
        return state.sizer.admissible(report.items + report.failed, workers)

    gate = _Credits(window_size)

    def on_sample(above: int) -> None:
        # Steady state only: with few items alive, RSS still holds what earlier ones freed.
        sizer = state.sizer
        if sizer is not None:
            n = gate.in_flight
            sizer.observe_rss(monitor.above_baseline, n, steady=n >= max(2, sizer.window // 2))

    monitor.on_sample = on_sample
    started = time.perf_counter()

    def snapshot() -> ProgressInfo:
        ps = monitor.stats()
        return ProgressInfo(
            done=report.items, failed=report.failed + len(planner.stats.failures), planned=planner.stats.planned,
            planning_done=planner.stats.done, bytes=report.bytes, elapsed=time.perf_counter() - started,
            rss=monitor.last.rss, rss_above_baseline=monitor.above_baseline, budget=budget,
            batch=state.sizer.batch if state.sizer else 0, in_flight=gate.in_flight, paused=monitor.under_pressure,
            pauses=ps.pauses,
        )

    def report_progress() -> None:
        if progress is not None:
            progress(snapshot())

    writer = _Writer(sink_obj, report, gate, execution.ordered, report_progress if progress else None)
    stop = threading.Event()
    stages = _Stages(fn, opts, workers, budget, limits.max_batch, gate, writer, monitor, stop, state)
    sink_obj.open()
    monitor.start()
    writer.thread.start()
    try:
        refs = iter(planner)
        if executor == "threads":
            _run_threads(stages, refs, opener, readers)
        else:
            _run_remote(stages, refs, client or pool)
    except BaseException:
        stop.set()
        raise
    finally:
        if not stop.is_set():
            gate.wait_empty()
        writer.queue.put(None)
        writer.thread.join()
        monitor.stop()
        opener.close()
        if pool is not None:
            pool.shutdown(wait=True)
        if own_client and client is not None:
            client.close()
        report.output = sink_obj.close()
        report.elapsed = time.perf_counter() - started
        ps = monitor.stats()
        report.pauses, report.paused_seconds, report.forced = ps.pauses, ps.paused_seconds, ps.forced
        report.memory_checks, report.cache_shrinks = ps.checks, ps.cache_shrinks
        report.peak_rss = monitor.peak_rss
        report.skipped, report.planned = planner.stats.skipped, planner.stats.planned
        report.selected_out, report.inputs = planner.stats.selected_out, planner.stats.inputs
        for f in planner.stats.failures:
            report.failed += 1
            if len(report.failures) < MAX_FAILURES_KEPT:
                report.failures.append(f)
        sizer = state.sizer
        if sizer is not None:
            report.batch_initial, report.batch_final = sizer.initial, sizer.batch
            report.batch_min, report.batch_max = sizer.smallest, sizer.largest
            report.item_bytes_estimate = int(sizer.estimate)
        report_progress()
    return report


class _State:
    """What the planner loop shares with the monitor and the progress display."""

    sizer: BatchSizer | None = None


@dataclass
class _Stages:
    """What the planner loop shares with the readers, the workers and the writer."""

    fn: Callable[[Any], Any]
    opts: ReadOptions
    workers: int
    budget: int
    max_batch: int
    gate: _Credits  # items in flight
    writer: _Writer
    monitor: MemoryMonitor
    stop: threading.Event
    state: _State

    def admit(self, n: int) -> bool:
        """Wait for calm memory, then for ``n`` credits (back-pressure first, then the window)."""
        self.monitor.wait_calm(lambda: self.gate.in_flight, self.stop)
        return self.gate.acquire(n, self.stop)

    def sizer_for(self, ref: WorkRef) -> BatchSizer:
        """The run's batch sizer, made from the first item planned."""
        if self.state.sizer is None:
            self.state.sizer = BatchSizer(self.budget, _item_bytes(ref, self.opts), max_batch=self.max_batch)
        return self.state.sizer


#: Frames handed between the pipeline's threads together (at most; fewer when the window
#: is small). One hand-over per frame costs ~0.3 ms of GIL-held bookkeeping - a tenth of a
#: CT frame's decode - and two workers then wait for it; a chunk pays it once.
MAX_CHUNK = 16


def _by_source(items: list[Any], ref_of: Callable[[Any], WorkRef]) -> list[list[Any]]:
    """Consecutive runs of ``items`` from the same source."""
    runs: list[list[Any]] = []
    for item in items:
        if runs and ref_of(runs[-1][0]).info.source == ref_of(item).info.source:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _chunk_limit(gate: _Credits, workers: int) -> int:
    """Frames per chunk: small enough that every worker has several chunks in the window."""
    return max(1, min(MAX_CHUNK, gate.limit() // (4 * workers)))


def _run_threads(stages: _Stages, refs: Iterator[WorkRef], opener: Opener, readers: int) -> None:
    """The local run: ``readers`` threads read, ``workers`` threads decode and run ``fn``."""
    fn, opts, workers, gate, writer, state = (stages.fn, stages.opts, stages.workers, stages.gate,
                                              stages.writer, stages.state)
    read_pool = ThreadPoolExecutor(readers, thread_name_prefix="dcmstream-read")
    fn_pool = ThreadPoolExecutor(workers, thread_name_prefix="dcmstream-fn")

    # Frames: readers do the I/O (the frames' stored bytes), workers decode and run fn, so
    # ``workers`` threads are what uses the CPU; frames travel in chunks (MAX_CHUNK). Other
    # units: readers read whole items, one at a time (an item can be a whole series).
    split = opts.unit == "frame"

    def compute(ref: WorkRef, item: Any, release: Callable[[], object] | None) -> _Entry:
        info: ItemInfo = getattr(item, "info", None) or ref.info
        try:
            result = fn(item)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            return ref.info.seq, info, None, failure_of(info, "fn", exc)
        finally:
            if release is not None:
                release()
        if isinstance(result, np.ndarray) and state.sizer is not None:
            state.sizer.observe_item(info.nbytes + result.nbytes)
        return ref.info.seq, info, result, None

    def compute_frames(chunk: list[tuple[WorkRef, Any]]) -> None:
        """Decode and process a chunk of frames: one opener look-up per source in it."""
        out: list[_Entry] = []
        for group in _by_source(chunk, lambda pair: pair[0]):
            try:
                with opener.use(group[0][0].input) as inst:
                    for ref, encoded in group:
                        try:
                            item = read_item(ref, opener, opts)[0] if encoded is None \
                                else decoded_of(inst, ref, encoded, opts)
                        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                            out.append((ref.info.seq, ref.info, None, failure_of(ref.info, "read", exc)))
                            continue
                        del encoded
                        if state.sizer is not None:
                            state.sizer.observe_item((item.info or ref.info).nbytes)
                        out.append(compute(ref, item, None))
                        del item
            except Exception as exc:  # noqa: BLE001 - the source could not be reopened
                done = {entry[0] for entry in out}
                out += [(r.info.seq, r.info, None, failure_of(r.info, "read", exc)) for r, _ in group if r.info.seq not in done]
        writer.put_many(out)

    def read_frames(chunk: list[WorkRef]) -> None:
        """The stored bytes of a chunk of frames (its I/O), then a worker task for them."""
        loaded: list[tuple[WorkRef, Any]] = []
        failed: list[_Entry] = []
        for group in _by_source(chunk, lambda ref: ref):
            try:
                with opener.use(group[0].input) as inst:
                    for ref in group:
                        try:
                            loaded.append((ref, encoded_of(inst, ref)))
                        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                            failed.append((ref.info.seq, ref.info, None, failure_of(ref.info, "read", exc)))
            except Exception as exc:  # noqa: BLE001 - an unreadable source fails its frames
                failed += [(r.info.seq, r.info, None, failure_of(r.info, "read", exc)) for r in group]
        writer.put_many(failed)
        if loaded:
            fn_pool.submit(compute_frames, loaded)

    def read(ref: WorkRef) -> None:
        try:
            item, release = read_item(ref, opener, opts)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            writer.put(ref.info.seq, ref.info, None, failure_of(ref.info, "read", exc))
            return
        if state.sizer is not None:
            state.sizer.observe_item(getattr(getattr(item, "info", None), "nbytes", 0))
        fn_pool.submit(lambda: writer.put_many([compute(ref, item, release)]))

    writer.track_sources = True
    # A file with pending items stays open (the planner opened it; its readers need it).
    gate.on_first, gate.on_last = opener.hold, opener.release
    files_ahead = max(2, opener.max_open - 1)
    chunk: list[WorkRef] = []
    chunk_sources = 1  # distinct sources in the chunk (consecutive runs)

    def flush() -> bool:
        """Admit the chunk (back-pressure, then credits) and hand it to a reader."""
        if not chunk:
            return True
        if not stages.admit(len(chunk)):
            return False
        if split:
            read_pool.submit(read_frames, list(chunk))
        else:
            read_pool.submit(read, chunk[0])
        chunk.clear()
        return True

    it = iter(refs)
    try:
        while True:
            # Before next(): it may open a file. The chunk's sources already count as
            # pending, so hand it over before waiting for sources to finish.
            if gate.sources() >= files_ahead and not flush():
                break
            gate.wait_sources_below(files_ahead, stages.stop)
            ref = next(it, None)
            if ref is None:
                break
            stages.sizer_for(ref)
            gate.add_source(ref.info.source)
            if chunk and chunk[-1].info.source != ref.info.source:
                chunk_sources += 1
            chunk.append(ref)
            # Flush a full chunk (frames, or files: each holds an open file), or any while
            # the workers are short of work (the start of a run). A full window makes
            # flush() wait for room for the whole chunk, so chunks stay full.
            if not split or len(chunk) >= _chunk_limit(gate, workers) or chunk_sources >= files_ahead // 2 \
                    or gate.in_flight < workers:
                if not flush():
                    break
                chunk_sources = 1
        if not stages.stop.is_set():
            flush()
        gate.wait_empty()
    finally:
        read_pool.shutdown(wait=True)
        fn_pool.shutdown(wait=True)


def _client(scheduler: Any) -> tuple[Any, bool]:
    if scheduler is None:
        return None, False
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise MissingDependencyError("scheduler= needs dask.distributed: pip install 'dcmstream[dask]'") from exc
    if isinstance(scheduler, Client):
        return scheduler, False
    if isinstance(scheduler, str):
        return Client(scheduler), True
    raise InvalidArgumentTypeError("scheduler must be an address or a dask.distributed Client")


def _run_remote(stages: _Stages, refs: Iterator[WorkRef], client: Any) -> None:
    """Batches of refs to worker processes (concurrent.futures) or dask workers (``client``)."""
    from concurrent.futures import Executor

    writer, gate = stages.writer, stages.gate

    def submit(batch: list[WorkRef]) -> Any:
        if isinstance(client, Executor):
            return client.submit(process_batch, batch, stages.fn, stages.opts)
        return client.submit(process_batch, batch, stages.fn, stages.opts, pure=False)

    max_batches = 2 * stages.workers

    def done(batch: list[WorkRef], future: Any) -> None:
        try:
            out = future.result()
        except BaseException as exc:  # noqa: BLE001 - a lost worker fails its batch, not the run
            for ref in batch:
                writer.put(ref.info.seq, ref.info, None, failure_of(ref.info, "task", exc))
            return
        for ref, (info, result, failure) in zip(batch, out, strict=False):
            if failure is None and stages.state.sizer is not None:
                stages.state.sizer.observe_item(info.nbytes + (result.nbytes if isinstance(result, np.ndarray) else 0))
            writer.put(ref.info.seq, info, result, failure)

    def flush(batch: list[WorkRef]) -> None:
        future = submit(batch)
        future.add_done_callback(functools.partial(done, batch))

    batch: list[WorkRef] = []
    for ref in refs:
        size = max(1, min(stages.sizer_for(ref).batch, gate.limit() // max_batches))
        if batch and (gate.would_block() or stages.monitor.under_pressure):
            flush(batch)  # never hold admitted refs back while waiting for more
            batch = []
        if not stages.admit(1):
            break
        batch.append(ref)
        if len(batch) >= size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    gate.wait_empty()


def _warm() -> int:
    import time as _time

    from . import work  # noqa: F401 - the imports a batch needs, done before the baseline

    _time.sleep(0.05)
    return os.getpid()


def _process_pool(workers: int) -> Any:
    """A spawn-context process pool whose workers are started (and have imported what
    they need) before the run's memory baseline is taken: their interpreters are the
    executor's fixed cost, not the items'."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for f in [pool.submit(_warm) for _ in range(workers)]:
        f.result()
    return pool
