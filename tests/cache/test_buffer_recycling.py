"""Frames decoded into a cache's recycled buffers: same pixels, one budget, and a buffer
is recycled only when nobody can see it any more.

Frames are read as users read them, ``Instance.frame`` through a cache, from generated
multi-frame JPEG-LS and native CTs.
"""

from __future__ import annotations

import random
import threading
import weakref

import numpy as np
import pytest

import dcmstream
from dcmstream.cache import BufferPool, FrameCache, MemoryGovernor, MemorySample, nbytes_of
from dcmstream.samples import write_multiframe

ROWS, COLUMNS, FRAMES = 64, 48, 40
FRAME_BYTES = ROWS * COLUMNS * 2


@pytest.fixture(scope="module", params=["jpeg-ls", "explicit"])
def ct(request, tmp_path_factory):
    """A compressed CT (decoded into the buffers with ``out=``) and a native one (read
    straight into them, ``ByteSource.read_into``)."""
    path = write_multiframe(tmp_path_factory.mktemp("recycling") / f"ct-{request.param}.dcm", frames=FRAMES,
                            syntax=request.param, kind="ct", rows=ROWS, columns=COLUMNS, signed=True)
    with dcmstream.open(path, cache=False) as plain:
        reference = [plain.frame(i) for i in range(FRAMES)]
    return path, reference


def decoded_room(frames: int) -> int:
    return frames * nbytes_of(np.empty((ROWS, COLUMNS), np.int16))


def test_threads_read_pooled_frames_within_one_budget(ct) -> None:
    path, reference = ct
    # 8 frames decoded + a quarter encoded; idle buffers for the 4 threads
    cache = FrameCache(max_bytes=decoded_room(8) * 4 // 3, buffers=BufferPool(max_bytes=8 * FRAME_BYTES))
    over: list[tuple[int, int]] = []
    peak = [0]
    stop = threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        while not stop.is_set():
            decoded, encoded = cache.decoded.bytes, cache.encoded.bytes
            peak[0] = max(peak[0], decoded + encoded)
            if decoded > cache.decoded.max_bytes or encoded > cache.encoded.max_bytes:
                over.append((decoded, encoded))

    with dcmstream.open(path, cache=cache) as inst:
        native = inst.reader.native

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            held: list[tuple[int, np.ndarray]] = []  # frames and slices this caller keeps a while
            try:
                for _ in range(300):
                    i = rng.randrange(FRAMES)
                    frame = inst.frame(i)
                    np.testing.assert_array_equal(frame, reference[i])
                    assert not frame.flags.writeable
                    held.append((i, frame if rng.random() < 0.5 else frame[3:, ::2]))
                    if len(held) > 3:
                        held.pop(0)
                    for k, kept in held:  # nothing recycled under a caller's feet
                        ref = reference[k] if kept.shape == reference[k].shape else reference[k][3:, ::2]
                        np.testing.assert_array_equal(kept, ref)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        watcher = threading.Thread(target=watch)
        watcher.start()
        workers = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        watcher.join()
    assert not errors, errors[0]
    assert not over and 0 < peak[0] <= cache.max_bytes
    stats = cache.stats()
    assert stats.decoded.evictions > 0 and (native or stats.encoded.evictions > 0)  # native frames: no encoded tier
    pool = stats.buffers
    assert pool is not None and pool.recycled > 0 and pool.reused > 0
    assert pool.idle_bytes <= pool.max_bytes
    assert stats.as_dict()["buffers_recycled"] == pool.recycled


def test_a_buffer_a_caller_still_sees_is_never_recycled(ct) -> None:
    path, reference = ct
    cache = FrameCache(max_bytes=decoded_room(2), encoded_share=0.0, buffers=BufferPool(max_bytes=4 * FRAME_BYTES))
    with dcmstream.open(path, cache=cache) as inst:
        frame = inst.frame(0)
        rows = frame[5:9]  # a caller's slice: it references the buffer, not the frame
        del frame
        held = inst.frame(1)  # the caller keeps this frame itself
        for i in range(2, 12):  # evict 0 and 1 from the cache, decode many frames of that shape
            later = inst.frame(i)
            assert not np.may_share_memory(later, rows) and not np.may_share_memory(later, held)
        del later
        np.testing.assert_array_equal(rows, reference[0][5:9])
        np.testing.assert_array_equal(held, reference[1])
        stats = cache.stats().buffers
        assert stats.kept >= 1  # frame 0 died while its slice lived: left to the GC

        buffer = weakref.ref(held.base)
        del held  # evicted and now unreferenced: back to the pool
        assert cache.stats().buffers.recycled == stats.recycled + 1
        again = inst.frame(20)
        assert again.base is buffer()  # the next decode of that shape takes it
        np.testing.assert_array_equal(again, reference[20])


def test_frames_for_callers_without_cache_never_use_the_pool(ct) -> None:
    path, reference = ct
    pool = BufferPool(max_bytes=8 * FRAME_BYTES)
    cache = FrameCache(max_bytes=decoded_room(4), buffers=pool)
    with dcmstream.open(path, cache=cache) as inst, dcmstream.open(path, cache=False) as plain:
        full = inst.frame(0)  # the one pooled decode
        assert full.base is not None and pool.stats().allocated == 1
        taken = [
            plain.frame(1),  # no cache: the caller's own memory
            inst.decode(inst.encoded_frame(2), 2),  # an explicit decode
            inst.frame(3, level=1),  # decoded in full, decimated into a new array
            inst.frame(0, level=2),  # decimated from the cached full frame
            inst.reader.decode_stored(inst.encoded_frame(4), 4),
        ]
        for arr in taken:
            assert not np.may_share_memory(arr, full)
        assert (pool.stats().allocated, pool.stats().reused) == (1, 0)
        np.testing.assert_array_equal(taken[2], reference[3][::2, ::2])
        np.testing.assert_array_equal(taken[3], reference[0][::4, ::4])
        cache.clear()
        del full
        taken.clear()
        stats = pool.stats()
        assert (stats.recycled, stats.kept, stats.idle_buffers) == (1, 0, 1)  # nothing else came back


NATIVE_LAYOUTS = [  # (file, read straight into the buffer, the frame lives in the buffer)
    ("MR_small_bigendian.dcm", True, True),  # 16-bit big endian: swapped in place
    ("emri_small_big_endian.dcm", True, True),
    ("rtdose_expb.dcm", True, True),  # 32-bit big endian, several frames
    ("SC_rgb_2frame.dcm", True, True),  # interleaved RGB
    ("color-pl.dcm", True, True),  # planar RGB: rearranged through a copy
    ("SC_ybr_full_uncompressed.dcm", True, False),  # converted to RGB: a new array, the buffer goes back
    ("SC_ybr_full_422_uncompressed.dcm", False, False),  # expanded, then converted to RGB
    ("liver.dcm", False, True),  # 1 bit: unpacked into the buffer
    ("OBXXXX1A_expb_2frame.dcm", False, True),  # 8-bit OW big endian: swapped pairs, copied in
]


@pytest.mark.parametrize("name, straight, lives", NATIVE_LAYOUTS, ids=[n for n, _, _ in NATIVE_LAYOUTS])
def test_native_frames_read_into_pooled_buffers_match(testfile, monkeypatch, name: str, straight: bool, lives: bool) -> None:
    path = testfile(name)
    pool = BufferPool()
    with dcmstream.open(path, cache=FrameCache(64 << 20, buffers=pool)) as inst, dcmstream.open(path, cache=False) as plain:
        refs = [plain.frame(i) for i in range(len(inst))]
        if straight:  # no intermediate buffer: the bytes go into the pooled one
            monkeypatch.setattr(type(inst.source), "read_writable", None)
        for i, ref in enumerate(refs):
            frame = inst.frame(i)
            assert frame.dtype == ref.dtype
            np.testing.assert_array_equal(frame, ref)
            assert (frame.base is not None and frame.base.nbytes == frame.nbytes) == lives
        stats = pool.stats()
        assert stats.allocated + stats.reused == len(inst)


def test_fill_returns_an_unused_buffer_at_once_and_drops_it_on_error() -> None:
    pool = BufferPool()
    fresh = pool.fill((8, 8), np.uint16, lambda out: np.zeros((8, 8), np.uint16))
    assert fresh.base is None and pool.stats().idle_buffers == 1
    with pytest.raises(ZeroDivisionError):
        pool.fill((8, 8), np.uint16, lambda out: 1 / 0)
    assert pool.stats().idle_buffers == 0  # the traceback may still see it: not recycled
    same = pool.fill((8, 8), np.uint16, lambda out: out)
    assert same.base is not None and same.shape == (8, 8)
    base_id = id(same.base)
    del same
    assert pool.stats().recycled == 1 and id(pool.acquire((8, 8), np.uint16)) == base_id


def test_cache_without_pool_decodes_into_fresh_memory() -> None:
    cache = FrameCache(1 << 20, buffers=False)
    seen: list[object] = []
    frame = cache.decode_pooled((4, 4), np.uint8, lambda out: seen.append(out) or np.ones((4, 4), np.uint8))
    assert seen == [None] and frame.sum() == 16 and cache.stats().buffers is None


def test_governor_shrinks_tiers_and_idle_buffers_together(ct) -> None:
    path, _ = ct
    total = decoded_room(16) * 4 // 3
    cache = FrameCache(max_bytes=total, buffers=BufferPool(max_bytes=total // 8))
    with dcmstream.open(path, cache=cache) as inst:
        for i in range(FRAMES):
            inst.frame(i)
        assert cache.bytes > total // 2 and cache.stats().buffers.idle_bytes > 0

        class Pressure:
            def __call__(self) -> MemorySample:
                return MemorySample(system_fraction=0.95, rss=0)

        gov = MemoryGovernor([cache], probe=Pressure())
        assert gov.check()
        stats = cache.stats()
        assert stats.max_bytes == total // 2 == stats.decoded.max_bytes + stats.encoded.max_bytes
        assert stats.bytes <= total // 2
        assert abs(stats.buffers.max_bytes - total // 16) <= 1  # an eighth of the halved budget
        assert stats.buffers.idle_bytes <= stats.buffers.max_bytes
        gov.check()
        assert cache.max_bytes == total // 4 and cache.bytes <= total // 4
