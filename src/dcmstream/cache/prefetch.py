"""Prefetch policies: a direction-aware stack prefetcher and whole-volume load order.

:class:`StackPrefetcher` serves a viewer that shows one frame at a time. Each
:meth:`~StackPrefetcher.request` returns the frame asked for (decoded at
interactive priority, so it overtakes queued prefetches) and re-plans which
neighbours to decode in the background:

* at rest, ``before`` frames below and ``after`` frames above (Cornerstone3D's
  default is 2 and 2);
* while the user scrolls or a cine plays, the direction and the speed (frames
  per second) come from the recent requests; the window grows in the direction
  of travel to cover ``lookahead_seconds`` of motion, up to ``max_ahead`` frames
  and ``budget_share`` of the cache budget. Queued prefetches that fall outside
  the new window (the user turned round, or jumped) are cancelled;
* after ``idle_after`` seconds without requests (or when :meth:`idle` is
  called), frames around the position are filled at background priority until
  ``budget_share`` of the cache budget holds frames of this target.

:func:`volume_order` and :func:`load_volume` load a whole stack coarse-to-fine:
middle, first, last, every 4th frame, every 2nd, then the rest, so a usable
low-detail volume exists early (Cornerstone3D's "retrieve stages").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Protocol, Self

import numpy as np

from ..errors import FrameNumberError, InvalidArgumentError
from .frame_cache import nbytes_of
from .pool import CacheClosedError, DecodePool, PoolFullError, Priority

_log = logging.getLogger(__name__)

__all__ = [
    "FrameTarget",
    "OrderedLoad",
    "PrefetchStats",
    "StackPrefetcher",
    "load_volume",
    "volume_order",
]


class FrameTarget(Protocol):
    """What a prefetcher drives: an Instance today, a Series later."""

    def __len__(self) -> int: ...
    def frame(self, i: int) -> np.ndarray: ...
    def prefetch(self, i: int) -> None: ...
    def is_cached(self, i: int) -> bool: ...


# ---------------------------------------------------------------------------------------------
# Whole-volume order
# ---------------------------------------------------------------------------------------------


def volume_order(n: int) -> list[int]:
    """Frame indices 0..n-1, each once, coarse to fine.

    Middle, first, last; then every 4th frame (0, 4, 8, ...); then the frames
    halfway between those (2, 6, 10, ...); then the odd ones. After the first
    quarter of the loads every 4th slice exists, after half every 2nd.
    """
    if n <= 0:
        return []
    order: list[int] = []
    seen = bytearray(n)

    def add(indices: Iterable[int]) -> None:
        for k in indices:
            if not seen[k]:
                seen[k] = 1
                order.append(k)

    add((n // 2, 0, n - 1))
    add(range(0, n, 4))
    add(range(2, n, 4))
    add(range(1, n, 2))
    return order


class OrderedLoad:
    """Feeds a pool with ``fn(i)`` for ``i`` in ``order``, a few tasks at a time.

    At most ``depth`` tasks are queued or running at once, so a long load never
    fills the pool's bounded queue and interactive work always finds room in
    front of it. :meth:`cancel` stops it (queued tasks never run).
    """

    def __init__(
        self,
        pool: DecodePool,
        fn: Callable[[int], Any],
        order: Sequence[int],
        *,
        priority: int = Priority.BACKGROUND,
        depth: int | None = None,
        group: Any = None,
    ) -> None:
        self.pool = pool
        self.fn = fn
        self.order = list(order)
        self.priority = int(priority)
        self.depth = max(1, depth if depth is not None else 2 * pool.workers)
        self.group = group if group is not None else ("ordered-load", id(self))
        self._lock = threading.Lock()
        self._next = 0
        self._outstanding = 0
        self._cancelled = False
        self._done = threading.Event()
        self.completed = 0
        self.failed = 0
        self.skipped = 0  # tasks the pool dropped or refused
        self.errors: list[BaseException] = []
        if not self.order:
            self._done.set()

    def start(self) -> OrderedLoad:
        for _ in range(self.depth):
            if not self._submit_next():
                break
        return self

    def _submit_next(self) -> bool:
        while True:
            with self._lock:
                if self._cancelled or self._next >= len(self.order):
                    if self._outstanding == 0:
                        self._done.set()
                    return False
                index = self.order[self._next]
                self._next += 1
                self._outstanding += 1
            try:
                future = self.pool.submit(self.fn, index, priority=self.priority, group=self.group)
            except PoolFullError:
                with self._lock:
                    self._outstanding -= 1
                    self.skipped += 1
                continue
            except RuntimeError:  # the pool was shut down
                with self._lock:
                    self._outstanding -= 1
                    self._cancelled = True
                continue
            future.add_done_callback(self._finished)
            return True

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._outstanding -= 1
            if future.cancelled():
                self.skipped += 1
            elif future.exception() is not None:
                self.failed += 1
                if len(self.errors) < 10:
                    self.errors.append(future.exception())  # type: ignore[arg-type]
            else:
                self.completed += 1
        self._submit_next()

    def cancel(self) -> None:
        """Stop submitting and cancel what is queued; running tasks finish."""
        with self._lock:
            self._cancelled = True
        self.pool.cancel_group(self.group)
        with self._lock:
            if self._outstanding == 0:
                self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def submitted(self) -> int:
        with self._lock:
            return self._next

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every task finished or was cancelled; False on timeout."""
        return self._done.wait(timeout)


def load_volume(
    target: FrameTarget,
    pool: DecodePool,
    *,
    sink: Callable[[int, np.ndarray], Any] | None = None,
    priority: int = Priority.BACKGROUND,
    depth: int | None = None,
) -> OrderedLoad:
    """Start loading every frame of ``target`` in :func:`volume_order`; returns the running load.

    Without ``sink`` frames are decoded into the target's cache (``prefetch``);
    with it, each decoded frame is handed to ``sink(i, array)`` (to fill a
    volume array larger than the cache, say). Call ``.wait()`` on the result to
    block, ``.cancel()`` to stop.
    """
    if sink is None:
        fn: Callable[[int], Any] = target.prefetch
    else:

        def fn(i: int) -> None:
            sink(i, target.frame(i))

    return OrderedLoad(pool, fn, volume_order(len(target)), priority=priority, depth=depth).start()


# ---------------------------------------------------------------------------------------------
# Stack prefetch
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefetchStats:
    requests: int
    ready: int  # requests whose frame was already decoded
    waited: int  # requests that had to decode (or wait for a running prefetch)
    scheduled: int  # prefetch tasks submitted
    cancelled: int  # queued prefetches cancelled because they left the window
    idle_fills: int
    direction: int
    speed: float  # frames per second, last estimate
    window: int  # frames in the last planned window

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _budget_of(cache: Any) -> int | None:
    if cache is None:
        return None
    tier = getattr(cache, "decoded", None)
    if tier is not None and hasattr(tier, "max_bytes"):
        return int(tier.max_bytes)
    budget = getattr(cache, "max_bytes", None)
    return None if budget is None else int(budget)


class StackPrefetcher:
    """Direction- and speed-aware prefetch around the frame a viewer shows.

    ``target`` has ``__len__``, ``frame(i)``, ``prefetch(i)`` and ``is_cached(i)``.
    ``cache`` (default ``target.cache``) gives the budget that ``budget_share``
    is a share of. ``clock`` is injectable for tests and trace replays.
    Requests that jump more than ``jump`` frames, or come after a pause of more
    than ``rest_seconds``, start a new motion (the window falls back to rest).
    """

    def __init__(
        self,
        target: FrameTarget,
        pool: DecodePool,
        *,
        before: int = 2,
        after: int = 2,
        max_ahead: int = 100,
        budget_share: float = 0.5,
        lookahead_seconds: float = 1.0,
        rest_seconds: float = 0.5,
        jump: int = 16,
        idle_after: float | None = None,
        wrap: bool = False,
        cache: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if before < 0 or after < 0 or max_ahead < 0:
            raise InvalidArgumentError("before, after and max_ahead must be >= 0")
        if not 0.0 <= budget_share <= 1.0:
            raise InvalidArgumentError("budget_share must be within [0, 1]")
        self.target = target
        self.pool = pool
        self.before = int(before)
        self.after = int(after)
        self.max_ahead = int(max_ahead)
        self.budget_share = float(budget_share)
        self.lookahead_seconds = float(lookahead_seconds)
        self.rest_seconds = float(rest_seconds)
        self.jump = int(jump)
        self.wrap = bool(wrap)
        self.cache = cache if cache is not None else getattr(target, "cache", None)
        self.clock = clock
        self.frame_bytes: int | None = None
        self.position: int | None = None
        self.direction = 0
        self.speed = 0.0
        #: the last planned window, in submission order (nearest first)
        self.window: list[int] = []
        self._history: deque[tuple[float, int]] = deque(maxlen=16)
        self._pending: dict[int, Future] = {}
        self._lock = threading.RLock()
        self._group = ("stack-prefetch", id(self))
        self._idle_load: OrderedLoad | None = None
        self._requests = self._ready = self._waited = 0
        self._scheduled = self._cancelled = self._idle_fills = 0
        self._closed = False
        self.idle_after = idle_after
        self._idle_cond = threading.Condition()
        self._idle_deadline: float | None = None
        self._idle_thread: threading.Thread | None = None
        if idle_after is not None:
            self._idle_thread = threading.Thread(target=self._idle_loop, name="dcmstream-idle-fill", daemon=True)
            self._idle_thread.start()

    # -- motion ------------------------------------------------------------------
    def _normalize(self, i: int) -> int:
        n = len(self.target)
        if n == 0:
            raise FrameNumberError("the target has no frames")
        j = int(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise FrameNumberError(f"frame {i} out of range (0..{n - 1})")
        return j

    def _update_motion(self, t: float, j: int) -> None:
        history = self._history
        if history:
            t_last, j_last = history[-1]
            if abs(self._step(j_last, j)) > self.jump or t - t_last > self.rest_seconds:
                history.clear()
        history.append((t, j))
        # Direction from the latest move; speed over the latest run in that direction.
        direction, run_start = 0, len(history) - 1
        for k in range(len(history) - 1, 0, -1):
            step = self._step(history[k - 1][1], history[k][1])
            if step == 0:
                if direction == 0:
                    continue  # repeated frame at the end: look further back
                run_start = k - 1
                continue
            sign = 1 if step > 0 else -1
            if direction == 0:
                direction = sign
            elif sign != direction:
                break
            run_start = k - 1
        if direction == 0:
            self.direction, self.speed = 0, 0.0
            return
        t0, j0 = history[run_start]
        dt = t - t0
        frames = abs(self._step(j0, j))
        self.direction = direction
        # Several requests within one clock tick: assume the fastest plausible speed.
        self.speed = frames / dt if dt > 0 else float(self.max_ahead) / max(self.lookahead_seconds, 1e-3)

    def _step(self, a: int, b: int) -> int:
        step = b - a
        n = len(self.target)
        if self.wrap and n:
            step = (step + n // 2) % n - n // 2
        return step

    def _frame_cap(self) -> int | None:
        budget = _budget_of(self.cache)
        if budget is None or not self.frame_bytes:
            return None
        return max(0, int(self.budget_share * budget) // self.frame_bytes)

    def _index(self, j: int, offset: int) -> int | None:
        n = len(self.target)
        k = j + offset
        if self.wrap:
            return k % n
        return k if 0 <= k < n else None

    def plan(self, j: int) -> list[int]:
        """The frames to prefetch around ``j`` for the current motion, nearest first."""
        if self.direction == 0:
            ahead_n, behind_n, sign = self.after, self.before, 1
        else:
            rest_ahead = self.after if self.direction > 0 else self.before
            ahead_n = min(self.max_ahead, max(rest_ahead, math.ceil(self.speed * self.lookahead_seconds - 1e-6)))
            behind_n = self.before if self.direction > 0 else self.after
            sign = self.direction
        cap = self._frame_cap()
        if cap is not None and ahead_n + behind_n > cap:
            behind_n = min(behind_n, cap // 4)
            ahead_n = cap - behind_n
        # Interleave: ahead frames at full rate, behind frames at a quarter rate while moving.
        weighted: list[tuple[float, int]] = []
        for k in range(1, ahead_n + 1):
            weighted.append((k, sign * k))
        slow = 1.0 if self.direction == 0 else 4.0
        for k in range(1, behind_n + 1):
            weighted.append((k * slow + 0.5, -sign * k))
        weighted.sort()
        out: list[int] = []
        seen = {j}
        for _, offset in weighted:
            m = self._index(j, offset)
            if m is not None and m not in seen:
                seen.add(m)
                out.append(m)
        return out

    # -- requests ----------------------------------------------------------------
    def request(self, i: int) -> np.ndarray:
        """Frame ``i``, decoded now at interactive priority; re-plans the prefetch window.

        Queued prefetches outside the new window are cancelled at once. New ones
        are submitted right away when frame ``i`` was already decoded, and after
        it is ready when it had to be decoded (as Cornerstone prefetches after an
        image is rendered): the frame on screen never shares the CPU with
        prefetches queued for its own sake.
        """
        if self._closed:
            raise CacheClosedError("the prefetcher is closed")
        j = self._normalize(i)
        t = self.clock()
        future: Future | None = None
        running: Future | None = None
        with self._lock:
            self._requests += 1
            self._update_motion(t, j)
            self.position = j
            if self._idle_load is not None:
                self._idle_load.cancel()
                self._idle_load = None
            self.window = self.plan(j)
            self._cancel_stale(set(self.window))
            cached = self.target.is_cached(j)
            if not cached:
                queued = self._pending.pop(j, None)
                if queued is not None and not queued.cancel():
                    running = queued  # being decoded now: wait for it rather than decode twice
                else:
                    try:
                        future = self.pool.submit(self.target.frame, j, priority=Priority.INTERACTIVE)
                    except PoolFullError:
                        future = None  # decode in this thread below
            self._ready += cached
            self._waited += not cached
            if cached:
                self._submit_window(self.window)
            generation = self._requests
        self._arm_idle()
        try:
            if running is not None:
                # Its outcome does not matter: the interactive call below reports any error.
                wait([running])
            arr = future.result() if future is not None else self.target.frame(j)
        finally:
            if not cached:
                with self._lock:
                    if self._requests == generation and not self._closed:  # no newer request re-planned
                        self._submit_window(self.window)
        if self.frame_bytes is None:
            self.frame_bytes = nbytes_of(arr)
        return arr

    def _cancel_stale(self, wanted: set[int]) -> None:
        for k, fut in list(self._pending.items()):
            if fut.done():
                del self._pending[k]
            elif k not in wanted:
                if fut.cancel():
                    self._cancelled += 1
                del self._pending[k]

    def _submit_window(self, window: list[int]) -> None:
        for k in window:
            if k in self._pending or self.target.is_cached(k):
                continue
            try:
                fut = self.pool.submit(self.target.prefetch, k, priority=Priority.PREFETCH, group=self._group)
            except (PoolFullError, RuntimeError):
                break
            self._pending[k] = fut
            self._scheduled += 1

    def pending(self) -> list[int]:
        """Frames whose prefetch is queued or running, in submission order."""
        with self._lock:
            return [k for k, fut in self._pending.items() if not fut.done()]

    # -- idle fill ---------------------------------------------------------------
    def idle(self) -> OrderedLoad | None:
        """Fill frames around the position at background priority, up to the budget share.

        Returns the running load (None without a position or a known budget).
        The next :meth:`request` cancels what it has not done yet.
        """
        with self._lock:
            if self._closed or self.position is None:
                return None
            cap = self._frame_cap()
            if cap is None:
                return None
            n = len(self.target)
            j = self.position
            sign = self.direction or 1
            order: list[int] = []
            seen = {j}
            # Two ahead for one behind, in the last direction of travel.
            ahead = behind = 0
            count = min(cap, n - 1)
            while len(seen) - 1 < count:
                progressed = False
                for _ in range(2):
                    k = self._index(j, sign * (ahead + 1))
                    ahead += 1
                    if k is not None and k not in seen:
                        seen.add(k)
                        order.append(k)
                        progressed = True
                k = self._index(j, -sign * (behind + 1))
                behind += 1
                if k is not None and k not in seen:
                    seen.add(k)
                    order.append(k)
                    progressed = True
                if not progressed and ahead > n and behind > n:
                    break
            order = [k for k in order[:count] if not self.target.is_cached(k)]
            if self._idle_load is not None:
                self._idle_load.cancel()
            self._idle_fills += 1
            self._idle_load = OrderedLoad(
                self.pool, self.target.prefetch, order, priority=Priority.BACKGROUND, group=(self._group, "idle")
            ).start()
            return self._idle_load

    def _arm_idle(self) -> None:
        if self.idle_after is None:
            return
        with self._idle_cond:
            self._idle_deadline = time.monotonic() + self.idle_after
            self._idle_cond.notify()

    def _idle_loop(self) -> None:
        with self._idle_cond:
            while not self._closed:
                if self._idle_deadline is None:
                    self._idle_cond.wait()
                    continue
                delay = self._idle_deadline - time.monotonic()
                if delay > 0:
                    self._idle_cond.wait(delay)
                    continue
                self._idle_deadline = None
                self._idle_cond.release()
                try:
                    self.idle()
                except Exception:  # noqa: BLE001 - a failed idle fill must not kill the timer
                    _log.debug("idle fill failed", exc_info=True)
                finally:
                    self._idle_cond.acquire()

    # -- lifetime ----------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel every queued prefetch and idle fill of this prefetcher."""
        with self._lock:
            if self._idle_load is not None:
                self._idle_load.cancel()
                self._idle_load = None
            self._cancelled += self.pool.cancel_group(self._group)
            self._pending.clear()

    def close(self) -> None:
        self.cancel()
        self._closed = True
        with self._idle_cond:
            self._idle_cond.notify_all()
        if self._idle_thread is not None and self._idle_thread is not threading.current_thread():
            self._idle_thread.join()

    def stats(self) -> PrefetchStats:
        with self._lock:
            return PrefetchStats(
                requests=self._requests,
                ready=self._ready,
                waited=self._waited,
                scheduled=self._scheduled,
                cancelled=self._cancelled,
                idle_fills=self._idle_fills,
                direction=self.direction,
                speed=round(self.speed, 3),
                window=len(self.window),
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
