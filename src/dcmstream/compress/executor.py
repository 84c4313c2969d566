"""Where a transcode's frames run: in order, a bounded window of them in flight, in a pool
of threads (encoders that release the GIL) or processes (those that hold it)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

__all__ = ["Pools", "make_executor", "ordered"]


def _run_chunk(run: Callable[[Any, int], Any], job: Any, start: int, stop: int) -> list[Any]:
    return [run(job, i) for i in range(start, stop)]


def ordered(run: Callable[[Any, int], Any], job: Any, count: int,
             executor: Executor | None, window: int, chunk: int = 1) -> Iterator[Any]:
    """``run(job, i)`` for i in 0..count-1, in order, at most ``window`` in flight.

    In a pool, each task runs ``chunk`` consecutive frames: every task costs a hand-over to
    a worker and a wake-up of the consumer (futex calls, GIL hand-offs), which at ~3 ms a
    frame was a few per cent of a two-thread transcode."""
    if executor is None:
        for i in range(count):
            yield run(job, i)
        return
    chunk = max(1, min(chunk, window))
    pending: deque[Future] = deque()
    submitted = 0

    def submit() -> None:
        nonlocal submitted
        stop = min(submitted + chunk, count)
        pending.append(executor.submit(_run_chunk, run, job, submitted, stop))
        submitted = stop

    try:
        while submitted < count and len(pending) * chunk < window:
            submit()
        while pending:
            results = pending.popleft().result()
            if submitted < count:
                submit()
            yield from results
    finally:
        for future in pending:
            future.cancel()
        for future in pending:  # let running ones finish before the file goes away
            if not future.cancelled():
                try:
                    future.result()
                except BaseException:  # noqa: BLE001 - already failing
                    pass


def make_executor(jobs: int, *, processes: bool = False) -> Executor | None:
    """A pool of ``jobs`` workers (None for 1). Threads suit encoders that release the GIL
    (imagecodecs); processes those that hold it (pyjpegls for 12-bit JPEG-LS, RLE)."""
    if jobs <= 1:
        return None
    if processes:
        import multiprocessing

        # forkserver: no fork of a process whose other threads (progress bar) hold locks.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["dcmstream.compress.transcode"])
        return ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="dcmstream-compress")


class Pools:
    """Lazily created worker pools shared by many transcodes: threads for encoders that
    release the GIL (and for verification decodes), processes for those that hold it."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)
        self._threads: Executor | None = None
        self._processes: Executor | None = None
        self._lock = threading.Lock()

    def threads(self) -> Executor | None:
        with self._lock:
            if self._threads is None and self.jobs > 1:
                self._threads = make_executor(self.jobs)
            return self._threads

    def for_encoder(self, releases_gil: bool) -> Executor | None:
        if releases_gil or self.jobs <= 1:
            return self.threads()
        with self._lock:
            if self._processes is None:
                self._processes = make_executor(self.jobs, processes=True)
            return self._processes

    def close(self) -> None:
        for pool in (self._threads, self._processes):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._threads = self._processes = None

    def __enter__(self) -> "Pools":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

