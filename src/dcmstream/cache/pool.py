"""DecodePool: a bounded thread pool whose queue is ordered by priority.

Decoders in imagecodecs release the GIL, so a few threads decode in parallel.
What a viewer needs on top of ``concurrent.futures.ThreadPoolExecutor``:

* priorities: a frame the user is looking at (``INTERACTIVE``) is taken before
  any queued ``PREFETCH``, which goes before ``BACKGROUND`` work (volume loads,
  idle fill). Running tasks are never pre-empted; a new interactive task waits
  at most for one running decode to finish.
* cancellation: every task may carry a ``group``; :meth:`DecodePool.cancel_group`
  cancels the queued tasks of that group (they never run; running ones finish).
  ``future.cancel()`` works for a single queued task too.
* a bounded queue: when ``max_queue`` tasks wait, the oldest task of the least
  important class (background first, then prefetch) is dropped (its future is
  cancelled) to make room; work that is more important than everything queued
  is never dropped for less important work, and if the queue is full of work at
  least as important as the new task, the new task is refused
  (:class:`PoolFullError`) instead of growing the queue.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Self

from ..errors import DcmstreamError, InvalidArgumentError

__all__ = ["DecodePool", "PoolFullError", "PoolStats", "Priority"]


class Priority(IntEnum):
    """Smaller runs first."""

    INTERACTIVE = 0
    PREFETCH = 1
    BACKGROUND = 2


class PoolFullError(DcmstreamError, RuntimeError):
    """The queue is full of work at least as important as the task offered."""


class CacheClosedError(DcmstreamError, RuntimeError):
    """A decode pool or a prefetcher was given work after it was shut down or closed."""


@dataclass(frozen=True)
class PoolStats:
    """Counters of a DecodePool since it was created."""

    workers: int
    queued: int
    running: int
    submitted: int
    completed: int
    failed: int
    cancelled: int  # queued tasks cancelled (by group, by future.cancel or at shutdown)
    dropped: int  # queued tasks pushed out by newer work when the queue was full
    rejected: int  # submissions refused with PoolFullError

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Task:
    __slots__ = ("args", "fn", "future", "group", "kwargs", "priority")

    def __init__(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, future: Future, group: Hashable | None, priority: int
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.group = group
        self.priority = priority


class DecodePool:
    """A fixed set of worker threads taking tasks from a bounded priority queue.

    ``workers`` defaults to ``os.cpu_count()``; ``max_queue`` bounds the tasks
    waiting (not running). Within one priority tasks run first in, first out.
    """

    def __init__(self, workers: int | None = None, *, max_queue: int = 1024, name: str = "dcmstream-decode") -> None:
        workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if workers < 1:
            raise InvalidArgumentError("workers must be >= 1")
        if max_queue < 1:
            raise InvalidArgumentError("max_queue must be >= 1")
        self.workers = workers
        self.max_queue = int(max_queue)
        self._queues: dict[int, deque[_Task]] = {int(p): deque() for p in Priority}
        self._queued = 0
        self._cond = threading.Condition()
        self._shutdown = False
        self._running = 0
        self._submitted = self._completed = self._failed = 0
        self._cancelled = self._dropped = self._rejected = 0
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True) for k in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- submitting --------------------------------------------------------------
    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        priority: int = Priority.INTERACTIVE,
        group: Hashable | None = None,
        **kwargs: Any,
    ) -> Future:
        """Queue ``fn(*args, **kwargs)``; returns its Future.

        Raises :class:`PoolFullError` when the queue is full of work at least as
        important as this task, RuntimeError after :meth:`shutdown`.
        """
        priority = int(priority)
        future: Future = Future()
        task = _Task(fn, args, kwargs, future, group, priority)
        victim: _Task | None = None
        with self._cond:
            if self._shutdown:
                raise CacheClosedError("cannot submit to a DecodePool after shutdown")
            if self._queued >= self.max_queue:
                self._purge_cancelled()
            if self._queued >= self.max_queue:
                victim = self._pop_victim(priority)
                if victim is None:
                    self._rejected += 1
                    raise PoolFullError(f"decode queue full ({self.max_queue} tasks of priority <= {priority} waiting)")
                self._dropped += 1
            self._queues.setdefault(priority, deque()).append(task)
            self._queued += 1
            self._submitted += 1
            self._cond.notify()
        if victim is not None:
            victim.future.cancel()  # outside the lock: callbacks may submit again
        return future

    def _pop_victim(self, priority: int) -> _Task | None:
        """The oldest queued task of the least important class no more important than ``priority``."""
        for level in sorted(self._queues, reverse=True):
            if level < priority or level == Priority.INTERACTIVE:
                return None
            queue = self._queues[level]
            if queue:
                self._queued -= 1
                return queue.popleft()
        return None

    def _purge_cancelled(self) -> None:
        for level, queue in self._queues.items():
            live = deque(t for t in queue if not t.future.cancelled())
            self._cancelled += len(queue) - len(live)
            self._queued -= len(queue) - len(live)
            self._queues[level] = live

    # -- cancelling --------------------------------------------------------------
    def cancel_group(self, group: Hashable) -> int:
        """Cancel every queued task of ``group``; returns how many. Running tasks finish."""
        doomed: list[_Task] = []
        with self._cond:
            for level, queue in self._queues.items():
                keep: deque[_Task] = deque()
                for task in queue:
                    (doomed if task.group == group else keep).append(task)
                self._queues[level] = keep
            self._queued -= len(doomed)
        cancelled = sum(1 for task in doomed if task.future.cancel())
        with self._cond:
            self._cancelled += cancelled
        return cancelled

    def queued(self, priority: int | None = None) -> int:
        """Tasks waiting (of one priority, or all), cancelled ones included until purged."""
        with self._cond:
            if priority is None:
                return self._queued
            return len(self._queues.get(int(priority), ()))

    # -- workers -----------------------------------------------------------------
    def _next(self) -> _Task | None:
        with self._cond:
            while True:
                if self._queued:
                    for level in sorted(self._queues):
                        queue = self._queues[level]
                        if queue:
                            self._queued -= 1
                            task = queue.popleft()
                            if task.future.set_running_or_notify_cancel():
                                self._running += 1
                                return task
                            self._cancelled += 1  # cancelled through its future
                            break
                    continue
                if self._shutdown:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        while True:
            task = self._next()
            if task is None:
                return
            try:
                result = task.fn(*task.args, **task.kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                with self._cond:
                    self._running -= 1
                    self._failed += 1
                task.future.set_exception(exc)
            else:
                with self._cond:
                    self._running -= 1
                    self._completed += 1
                task.future.set_result(result)
            del task

    # -- lifetime ----------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_pending: bool = True) -> None:
        """Stop accepting work; cancel queued tasks (or let them run); join workers if ``wait``."""
        doomed: list[_Task] = []
        with self._cond:
            self._shutdown = True
            if cancel_pending:
                for queue in self._queues.values():
                    doomed.extend(queue)
                    queue.clear()
                self._queued = 0
            self._cond.notify_all()
        cancelled = sum(1 for task in doomed if task.future.cancel())
        with self._cond:
            self._cancelled += cancelled
        if wait:
            current = threading.current_thread()
            for thread in self._threads:
                if thread is not current:
                    thread.join()

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                workers=self.workers,
                queued=self._queued,
                running=self._running,
                submitted=self._submitted,
                completed=self._completed,
                failed=self._failed,
                cancelled=self._cancelled,
                dropped=self._dropped,
                rejected=self._rejected,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"DecodePool(workers={self.workers}, queued={self._queued}, running={self._running})"
