"""DecodePool: priority order, group cancellation, bounded queue, lifetime."""

from __future__ import annotations

import threading

import pytest

from dcmstream.cache import DecodePool, PoolFullError, Priority

TIMEOUT = 10


def blocked_pool(**kwargs: object) -> tuple[DecodePool, threading.Event]:
    """A one-worker pool whose worker is busy until the returned event is set."""
    pool = DecodePool(1, **kwargs)  # type: ignore[arg-type]
    gate, started = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        assert gate.wait(TIMEOUT)

    pool.submit(block)
    assert started.wait(TIMEOUT)  # the worker holds the blocker: everything else stays queued
    return pool, gate


def test_interactive_overtakes_queued_prefetch_and_background() -> None:
    pool, gate = blocked_pool()
    order: list[str] = []
    futures = [pool.submit(order.append, f"bg{k}", priority=Priority.BACKGROUND) for k in range(2)]
    futures += [pool.submit(order.append, f"pf{k}", priority=Priority.PREFETCH) for k in range(3)]
    futures.append(pool.submit(order.append, "ui", priority=Priority.INTERACTIVE))
    gate.set()
    for f in futures:
        f.result(TIMEOUT)
    pool.shutdown()
    assert order == ["ui", "pf0", "pf1", "pf2", "bg0", "bg1"]


def test_cancelled_group_never_runs_and_others_do() -> None:
    pool, gate = blocked_pool()
    ran: list[str] = []
    stale = [pool.submit(ran.append, f"old{k}", priority=Priority.PREFETCH, group="gen1") for k in range(4)]
    fresh = [pool.submit(ran.append, f"new{k}", priority=Priority.PREFETCH, group="gen2") for k in range(2)]
    assert pool.cancel_group("gen1") == 4
    assert all(f.cancelled() for f in stale)
    gate.set()
    for f in fresh:
        f.result(TIMEOUT)
    pool.shutdown()
    assert ran == ["new0", "new1"]
    assert pool.stats().cancelled == 4


def test_running_task_of_cancelled_group_finishes() -> None:
    pool = DecodePool(1)
    started, release = threading.Event(), threading.Event()

    def task() -> str:
        started.set()
        release.wait(TIMEOUT)
        return "done"

    future = pool.submit(task, group="g")
    assert started.wait(TIMEOUT)
    assert pool.cancel_group("g") == 0
    release.set()
    assert future.result(TIMEOUT) == "done"
    pool.shutdown()


def test_future_cancel_of_a_queued_task_prevents_it() -> None:
    pool, gate = blocked_pool()
    ran: list[int] = []
    doomed = pool.submit(ran.append, 1, priority=Priority.PREFETCH)
    kept = pool.submit(ran.append, 2, priority=Priority.PREFETCH)
    assert doomed.cancel()
    gate.set()
    kept.result(TIMEOUT)
    pool.shutdown()
    assert ran == [2]


def test_full_queue_drops_oldest_background_first() -> None:
    pool, gate = blocked_pool(max_queue=3)
    ran: list[str] = []
    bg = [pool.submit(ran.append, f"bg{k}", priority=Priority.BACKGROUND) for k in range(3)]
    pf = pool.submit(ran.append, "pf", priority=Priority.PREFETCH)  # pushes out bg0
    assert bg[0].cancelled() and pool.queued() == 3
    newer_bg = pool.submit(ran.append, "bg3", priority=Priority.BACKGROUND)  # pushes out bg1 (oldest background)
    assert bg[1].cancelled() and not newer_bg.cancelled()
    gate.set()
    for f in (pf, bg[2], newer_bg):
        f.result(TIMEOUT)
    pool.shutdown()
    assert ran == ["pf", "bg2", "bg3"]
    assert pool.stats().dropped == 2


def test_full_queue_never_drops_more_important_work() -> None:
    pool, gate = blocked_pool(max_queue=2)
    ui = [pool.submit(lambda: None, priority=Priority.INTERACTIVE) for _ in range(2)]
    with pytest.raises(PoolFullError):
        pool.submit(lambda: None, priority=Priority.PREFETCH)
    with pytest.raises(PoolFullError):
        pool.submit(lambda: None, priority=Priority.INTERACTIVE)
    assert pool.queued() == 2 and not any(f.cancelled() for f in ui)
    assert pool.stats().rejected == 2
    gate.set()
    pool.shutdown()


def test_queue_stays_bounded_under_a_flood() -> None:
    pool, gate = blocked_pool(max_queue=16)
    refused = 0
    for k in range(1000):
        try:
            pool.submit(lambda: None, priority=Priority.BACKGROUND if k % 2 else Priority.PREFETCH)
        except PoolFullError:
            refused += 1  # background offered to a queue full of prefetches
        assert pool.queued() <= 16
    stats = pool.stats()
    assert refused == stats.rejected > 0 and stats.dropped > 0
    gate.set()
    pool.shutdown()


def test_exceptions_reach_the_future() -> None:
    with DecodePool(2) as pool:
        future = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            future.result(TIMEOUT)
    assert pool.stats().failed == 1


def test_workers_run_in_parallel() -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    with DecodePool(2) as pool:
        futures = [pool.submit(barrier.wait) for _ in range(2)]
        assert sorted(f.result(TIMEOUT) for f in futures) == [0, 1]  # both waited at once


def test_shutdown_cancels_pending_and_refuses_new_work() -> None:
    pool, gate = blocked_pool()
    queued = pool.submit(lambda: None, priority=Priority.PREFETCH)
    gate.set()
    pool.shutdown(cancel_pending=True)
    assert queued.cancelled() or queued.done()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_default_workers_is_cpu_count() -> None:
    import os

    with DecodePool() as pool:
        assert pool.workers == (os.cpu_count() or 1)
    with pytest.raises(ValueError):
        DecodePool(0)
