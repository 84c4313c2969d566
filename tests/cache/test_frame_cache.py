"""FrameCache: one byte budget for both tiers, LRU order, de-duplication, metrics, purge."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

import dcmstream
from dcmstream.cache import ByteBudgetLRU, CacheBudgetError, FrameCache, nbytes_of


def arr(nbytes: int, fill: int = 0) -> np.ndarray:
    return np.full(nbytes, fill, dtype=np.uint8)


def test_budget_is_bytes_and_lru_evicts_oldest() -> None:
    tier = ByteBudgetLRU("t", max_bytes=3 * nbytes_of(arr(1000)))
    for k in range(3):
        tier.put(k, arr(1000), nbytes_of(arr(1000)))
    assert tier.get(0) is not None  # 0 becomes most recent; 1 is now oldest
    tier.put(3, arr(1000), nbytes_of(arr(1000)))
    assert 1 not in tier and 0 in tier and 3 in tier
    assert tier.bytes <= tier.max_bytes and tier.evictions == 1


def test_entry_larger_than_budget_is_refused_clearly() -> None:
    tier = ByteBudgetLRU("decoded", max_bytes=100)
    with pytest.raises(CacheBudgetError, match="exceeds the whole budget of 100 bytes"):
        tier.put("big", arr(500), 500)
    assert tier.refused == 1 and len(tier) == 0


def test_get_or_load_returns_uncached_when_too_large() -> None:
    cache = FrameCache(max_bytes=200)
    value = cache.get_or_load(("i", 0, "full"), lambda: arr(1000))
    assert value.nbytes == 1000
    assert cache.stats().decoded.refused == 1 and cache.bytes == 0


def test_concurrent_requests_decode_once() -> None:
    cache = FrameCache(max_bytes=1 << 20)
    calls = []
    start = threading.Barrier(8)
    others_waiting = threading.Event()

    def slow_loader() -> np.ndarray:
        calls.append(1)
        # Finish only once the other 7 wait on this very load (the cache counts each
        # waiter under its lock before it blocks): no timing assumption either way.
        while cache.deduplicated < 7:
            assert not others_waiting.wait(0.001)
        return arr(1000, 7)

    def request() -> None:
        start.wait(10)
        results.append(cache.get_or_load("k", slow_loader))

    results: list[np.ndarray] = []
    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert cache.stats().deduplicated == 7


def test_loader_error_reaches_every_waiter_and_is_not_cached() -> None:
    cache = FrameCache()
    with pytest.raises(ZeroDivisionError):
        cache.get_or_load("k", lambda: 1 / 0)
    assert not cache.peek("k")
    assert cache.get_or_load("k", lambda: arr(10)).nbytes == 10


def test_budget_never_exceeded_under_concurrent_random_access(testfile) -> None:
    frame_bytes = 64 * 64 * 2
    cache = FrameCache(max_bytes=8 * frame_bytes)  # 6 frames' worth decoded, 2 encoded
    assert cache.decoded.max_bytes + cache.encoded.max_bytes == cache.max_bytes == 8 * frame_bytes
    assert cache.encoded.max_bytes == 2 * frame_bytes
    peak = [0]
    over: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            decoded, encoded = cache.decoded.bytes, cache.encoded.bytes
            peak[0] = max(peak[0], decoded + encoded)
            if decoded > cache.decoded.max_bytes or encoded > cache.encoded.max_bytes:
                over.append((decoded, encoded))

    with dcmstream.open(testfile("emri_small_jpeg_2k_lossless.dcm"), cache=cache) as inst, dcmstream.open(
        testfile("emri_small_jpeg_2k_lossless.dcm"), cache=False
    ) as plain:
        reference = [plain.frame(i) for i in range(len(plain))]
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            rnd = random.Random(seed)
            try:
                for _ in range(200):
                    i = rnd.randrange(len(inst))
                    np.testing.assert_array_equal(inst.frame(i), reference[i])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        watcher = threading.Thread(target=watch)
        watcher.start()
        workers = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        watcher.join()
    assert not errors, errors[0]
    assert not over and 0 < peak[0] <= cache.max_bytes
    stats = cache.stats()
    assert stats.hits + stats.misses >= 1200 and stats.evictions > 0
    assert stats.encoded.evictions > 0 and stats.decoded.evictions > 0  # both tiers were full
    assert 0 < stats.hit_rate < 1


def test_stats_and_cached_arrays_are_read_only(testfile) -> None:
    cache = FrameCache(max_bytes=1 << 24)
    with dcmstream.open(testfile("emri_small.dcm"), cache=cache) as inst:
        a = inst.frame(0)
        b = inst.frame(0)
        assert a is b and not a.flags.writeable
        stats = cache.stats()
        assert (stats.hits, stats.misses) == (1, 1)
        assert stats.hit_rate == 0.5
        assert stats.bytes == stats.decoded.bytes >= a.nbytes
        assert stats.decodes == 1 and sum(stats.decode_histogram_ms.values()) == 1
        assert {"hits", "misses", "hit_rate", "bytes", "evictions", "max_bytes"} <= set(stats.as_dict())
        assert stats.max_bytes == 1 << 24 == stats.decoded.max_bytes + stats.encoded.max_bytes
        assert stats.encoded_share == 0.25 and stats.used_fraction == stats.bytes / (1 << 24)


def test_reopening_the_same_file_hits_and_purge_drops(testfile) -> None:
    cache = FrameCache(max_bytes=1 << 24)
    path = testfile("emri_small_RLE.dcm")
    with dcmstream.open(path, cache=cache) as inst:
        inst.frame(1)
    with dcmstream.open(path, cache=cache) as again:
        again.frame(1)
        assert cache.stats().decoded.hits == 1
        assert again.purge() >= 1
        assert cache.bytes == 0


def test_prefetched_entries_count_used_and_wasted() -> None:
    cache = FrameCache(max_bytes=2 * nbytes_of(arr(100)), encoded_share=0.0)
    cache.get_or_load("a", lambda: arr(100), prefetch=True)
    cache.get_or_load("b", lambda: arr(100), prefetch=True)
    cache.get("a")  # used
    cache.get_or_load("c", lambda: arr(100))  # evicts b, never used
    stats = cache.stats()
    assert (stats.prefetch_issued, stats.prefetch_used, stats.prefetch_wasted) == (2, 1, 1)


def test_shrink_and_resize() -> None:
    cache = FrameCache(max_bytes=10 * nbytes_of(arr(100)), encoded_share=0.0)
    for k in range(10):
        cache.put(k, arr(100))
    freed = cache.shrink(0.5)
    assert freed > 0 and cache.decoded.bytes <= cache.decoded.max_bytes // 2
    cache.resize(max_bytes=nbytes_of(arr(100)))
    assert len(cache.decoded) == 1 and cache.max_bytes == nbytes_of(arr(100))
    cache.clear()
    assert cache.bytes == 0


def test_max_bytes_is_both_tiers_and_the_share_is_configurable() -> None:
    cache = FrameCache(max_bytes=1000, encoded_share=0.3)
    assert (cache.decoded.max_bytes, cache.encoded.max_bytes, cache.max_bytes) == (700, 300, 1000)
    for k in range(20):
        cache.put(("i", k, "full"), arr(50))
        cache.put(("i", k, "encoded"), b"x" * 50, tier="encoded")
        assert cache.bytes <= cache.max_bytes
    assert cache.decoded.bytes > 500 and cache.encoded.bytes > 200  # each tier fills its share
    cache.resize(encoded_share=0.5)
    assert (cache.decoded.max_bytes, cache.encoded.max_bytes) == (500, 500) and cache.bytes <= 1000
    cache.resize(400)
    assert cache.decoded.max_bytes + cache.encoded.max_bytes == 400 and cache.bytes <= 400
    assert "400" in repr(cache)
    with pytest.raises(ValueError):
        FrameCache(1000, encoded_share=1.5)


def test_default_cache_budget_is_the_whole_cache(monkeypatch) -> None:
    from dcmstream.cache import frame_cache

    monkeypatch.setenv("DCMSTREAM_CACHE_MB", "64")
    monkeypatch.setattr(frame_cache, "_default", None)
    cache = frame_cache.default_cache()
    assert cache.max_bytes == 64 << 20 == cache.decoded.max_bytes + cache.encoded.max_bytes
    assert cache.encoded.max_bytes == 16 << 20


def test_frame_cache_is_exported_at_the_top() -> None:
    assert dcmstream.FrameCache is FrameCache and "FrameCache" in dcmstream.__all__
