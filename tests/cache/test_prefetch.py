"""StackPrefetcher window policy, cancellation, idle fill; volume_order and load_volume."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

import dcmstream
from dcmstream.cache import (
    DecodePool,
    FrameCache,
    StackPrefetcher,
    load_volume,
    volume_order,
)
from dcmstream.cache.frame_cache import nbytes_of
from dcmstream.samples import write_multiframe

TIMEOUT = 10
FRAME = np.zeros((8, 8), np.uint16)


class FakeTarget:
    """A stack of ``n`` tiny frames that records what was prefetched."""

    def __init__(self, n: int, budget_frames: int | None = None) -> None:
        self.n = n
        self.cached: set[int] = set()
        self.prefetched: list[int] = []
        self.lock = threading.Lock()
        if budget_frames is not None:
            self.cache = SimpleNamespace(decoded=SimpleNamespace(max_bytes=budget_frames * nbytes_of(FRAME)))

    def __len__(self) -> int:
        return self.n

    def frame(self, i: int) -> np.ndarray:
        with self.lock:
            self.cached.add(i)
        return FRAME

    def prefetch(self, i: int) -> None:
        with self.lock:
            self.prefetched.append(i)
            self.cached.add(i)

    def is_cached(self, i: int) -> bool:
        return i in self.cached


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def held_pool():
    """One worker, busy until the test releases it: prefetches stay queued and inspectable."""
    pool = DecodePool(1)
    gate, started = threading.Event(), threading.Event()
    pool.submit(lambda: (started.set(), gate.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)
    yield pool, gate
    gate.set()
    pool.shutdown()


def visit(pf: StackPrefetcher, target: FakeTarget, clock: Clock, frames, fps: float) -> None:
    """Request ``frames`` at ``fps``; frames are made cached first so requests never wait on the held pool."""
    for i in frames:
        clock.t += 1.0 / fps
        target.cached.add(i)
        pf.request(i)


def ahead_behind(window: list[int], position: int) -> tuple[int, int]:
    return sum(k > position for k in window), sum(k < position for k in window)


def test_at_rest_two_either_side(held_pool) -> None:
    pool, _ = held_pool
    target, clock = FakeTarget(200), Clock()
    pf = StackPrefetcher(target, pool, clock=clock)
    visit(pf, target, clock, [100], fps=1)
    assert sorted(pf.window) == [98, 99, 101, 102]
    assert sorted(pf.pending()) == [98, 99, 101, 102]
    assert pf.direction == 0


def test_window_grows_with_speed_in_the_direction_of_travel(held_pool) -> None:
    pool, _ = held_pool
    target, clock = FakeTarget(1000), Clock()
    pf = StackPrefetcher(target, pool, clock=clock)
    visit(pf, target, clock, range(100, 111), fps=10)
    slow_ahead, slow_behind = ahead_behind(pf.window, 110)
    assert pf.direction == 1 and slow_ahead == 10 and slow_behind == 2
    visit(pf, target, clock, range(111, 131), fps=30)
    fast_ahead, fast_behind = ahead_behind(pf.window, 130)
    assert fast_ahead == 30 and fast_behind == 2
    visit(pf, target, clock, range(131, 161), fps=500)
    assert ahead_behind(pf.window, 160) == (100, 2)  # capped at max_ahead
    assert pf.window[0] == 161  # nearest ahead is queued first


def test_backward_motion_grows_downwards_and_cancels_stale_prefetches(held_pool) -> None:
    pool, gate = held_pool
    target, clock = FakeTarget(1000), Clock()
    pf = StackPrefetcher(target, pool, clock=clock)
    visit(pf, target, clock, range(500, 521), fps=30)
    stale = [k for k in pf.pending() if k > 525]
    assert len(stale) > 20
    visit(pf, target, clock, range(519, 509, -1), fps=30)
    assert pf.direction == -1
    above, below = ahead_behind(pf.window, 510)
    assert below >= 10 and above == 2  # travelling down: the window grows below
    assert min(pf.window) < 500 and max(pf.window) <= 512
    assert not set(stale) & set(pf.pending())
    assert pf.stats().cancelled >= len(stale)
    gate.set()
    pf.cancel()  # drop what is still queued, then drain
    pool.shutdown(cancel_pending=False)
    assert not set(stale) & set(target.prefetched)  # a cancelled prefetch never ran


def test_a_jump_or_a_pause_returns_to_the_rest_window(held_pool) -> None:
    pool, _ = held_pool
    target, clock = FakeTarget(1000), Clock()
    pf = StackPrefetcher(target, pool, clock=clock)
    visit(pf, target, clock, range(20), fps=60)
    assert len(pf.window) > 40
    visit(pf, target, clock, [700], fps=60)  # random jump
    assert sorted(pf.window) == [698, 699, 701, 702]
    visit(pf, target, clock, range(701, 706), fps=60)
    assert pf.direction == 1
    clock.t += 5  # pause
    visit(pf, target, clock, [706], fps=1e9)
    assert sorted(pf.window) == [704, 705, 707, 708]


def test_cine_backward_at_the_start_stays_in_range(held_pool) -> None:
    pool, _ = held_pool
    target, clock = FakeTarget(50), Clock()
    pf = StackPrefetcher(target, pool, clock=clock)
    visit(pf, target, clock, range(10, -1, -1), fps=30)
    assert pf.window and all(0 <= k < 50 for k in pf.window)
    wrapping = StackPrefetcher(target, pool, clock=clock, wrap=True)
    visit(wrapping, target, clock, range(10, -1, -1), fps=30)
    assert 49 in wrapping.window  # a looping cine continues at the end


def test_window_is_capped_by_the_budget_share(held_pool) -> None:
    pool, _ = held_pool
    target, clock = FakeTarget(1000, budget_frames=40), Clock()
    pf = StackPrefetcher(target, pool, clock=clock, budget_share=0.5)
    visit(pf, target, clock, range(40), fps=200)
    assert len(pf.window) <= 20


def test_idle_fills_around_the_position_up_to_the_budget_share(held_pool) -> None:
    pool, gate = held_pool
    target, clock = FakeTarget(1000, budget_frames=40), Clock()
    pf = StackPrefetcher(target, pool, clock=clock, budget_share=0.5)
    visit(pf, target, clock, [500], fps=1)
    gate.set()
    load = pf.idle()
    assert load is not None and load.wait(TIMEOUT)
    filled = {k for k in target.cached if k != 500}
    assert len(filled) == 20 and max(abs(k - 500) for k in filled) <= 14
    assert load.completed == len(load.order)


def test_requested_frame_is_not_decoded_twice_when_queued_as_prefetch(held_pool) -> None:
    pool, gate = held_pool
    target, clock = FakeTarget(100), Clock()
    pf = StackPrefetcher(target, pool, clock=clock)
    visit(pf, target, clock, [50], fps=1)
    assert 51 in pf.pending()
    clock.t += 0.1
    result: list[np.ndarray] = []
    t = threading.Thread(target=lambda: result.append(pf.request(51)))  # not cached: waits for the pool
    t.start()
    gate.set()
    t.join(TIMEOUT)
    assert result and 51 not in target.prefetched  # the queued prefetch was cancelled, not run


def test_on_a_miss_prefetches_wait_until_the_frame_is_ready() -> None:
    target, clock = FakeTarget(100), Clock()
    decoding, finish = threading.Event(), threading.Event()
    plain_frame = target.frame

    def slow_frame(i: int) -> np.ndarray:
        decoding.set()
        assert finish.wait(TIMEOUT)
        return plain_frame(i)

    target.frame = slow_frame  # type: ignore[method-assign]
    with DecodePool(2) as pool:
        pf = StackPrefetcher(target, pool, clock=clock)
        t = threading.Thread(target=pf.request, args=(50,))
        t.start()
        assert decoding.wait(TIMEOUT)
        assert sorted(pf.window) == [48, 49, 51, 52] and pf.pending() == []  # planned, not yet submitted
        finish.set()
        t.join(TIMEOUT)
        pool.shutdown(cancel_pending=False)  # runs what is queued, joins the workers
        assert sorted(target.prefetched) == [48, 49, 51, 52]


def test_prefetcher_on_a_real_instance_returns_the_right_frames(tmp_path) -> None:
    path = write_multiframe(tmp_path / "ls.dcm", frames=30, syntax="jpeg-ls", rows=64, columns=64)
    with dcmstream.open(path, cache=False) as plain:
        reference = [plain.frame(i) for i in range(len(plain))]
    cache = FrameCache(max_bytes=1 << 20)
    with dcmstream.open(path, cache=cache) as inst, DecodePool(2) as pool:
        pf = StackPrefetcher(inst, pool)
        for i in list(range(30)) + list(range(29, -1, -3)):
            np.testing.assert_array_equal(pf.request(i), reference[i])
        load = pf.idle()
        assert load is not None and load.wait(TIMEOUT)
        assert sum(inst.is_cached(i) for i in range(30)) == 30  # half of 1 MiB holds all 30 frames
        pf.close()
        stats = cache.stats()
        assert stats.decoded.hits + stats.decoded.misses >= 40


# -- volume order -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [*range(40), 101, 1000])
def test_volume_order_is_a_coarse_to_fine_permutation(n: int) -> None:
    order = volume_order(n)
    assert sorted(order) == list(range(n))
    if n >= 3:
        assert order[:3] == [n // 2, 0, n - 1]
    rest = order[3:]
    rank = {k: r for r, k in enumerate(rest)}
    fours = [k for k in rest if k % 4 == 0]
    others = [k for k in rest if k % 4]
    if fours and others:
        assert max(rank[k] for k in fours) < min(rank[k] for k in others)
    evens = [k for k in rest if k % 2 == 0]
    odds = [k for k in rest if k % 2]
    if evens and odds:
        assert max(rank[k] for k in evens) < min(rank[k] for k in odds)


def test_load_volume_decodes_everything_in_volume_order(tmp_path) -> None:
    path = write_multiframe(tmp_path / "ls.dcm", frames=30, syntax="jpeg-ls", rows=64, columns=64)
    with dcmstream.open(path, cache=False) as plain:
        reference = np.stack([plain.frame(i) for i in range(len(plain))])
    with dcmstream.open(path, cache=FrameCache(max_bytes=1 << 20)) as inst, DecodePool(1) as pool:
        volume = np.zeros_like(reference)
        seen: list[int] = []

        def sink(i: int, arr: np.ndarray) -> None:
            seen.append(i)
            volume[i] = arr

        load = load_volume(inst, pool, sink=sink)
        assert load.wait(TIMEOUT) and load.completed == 30 and load.failed == 0
        np.testing.assert_array_equal(volume, reference)
        assert seen == volume_order(30)  # one worker: completion order is the load order
        into_cache = load_volume(inst, pool)
        assert into_cache.wait(TIMEOUT)
        assert all(inst.is_cached(i) for i in range(30))


def test_load_volume_can_be_cancelled() -> None:
    target = FakeTarget(1000)
    pool = DecodePool(1)
    gate, started = threading.Event(), threading.Event()
    pool.submit(lambda: (started.set(), gate.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)
    load = load_volume(target, pool, depth=4)
    assert load.submitted == 4
    load.cancel()
    gate.set()
    assert load.wait(TIMEOUT)
    pool.shutdown()
    assert target.prefetched == [] and load.skipped == 4
