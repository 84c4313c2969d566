"""BufferPool: reuse, bounds, ownership rules, and decoding into pooled buffers."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from dcmstream.cache import BufferPool
from dcmstream.samples import synthetic_frames


def test_released_buffer_is_handed_out_again() -> None:
    pool = BufferPool()
    a = pool.acquire((64, 64), np.uint16)
    assert a.shape == (64, 64) and a.dtype == np.uint16 and a.flags.writeable
    assert pool.release(a)
    b = pool.acquire((64, 64), "<u2")
    assert b is a
    c = pool.acquire((64, 64), np.uint16)
    assert c is not a  # pool empty for that key again
    d = pool.acquire((32, 64), np.uint16)
    assert d.shape == (32, 64)
    stats = pool.stats()
    assert stats.reused == 1 and stats.allocated == 3 and stats.idle_buffers == 0


def test_views_and_foreign_memory_are_refused() -> None:
    pool = BufferPool()
    base = np.zeros((8, 8), np.uint8)
    assert not pool.release(base[:4])
    assert not pool.release(np.frombuffer(b"\0" * 16, np.uint8))  # read-only, not owned
    assert not pool.release(np.zeros((8, 8), np.uint8).T)  # not C-contiguous
    assert pool.stats().discarded == 3


def test_pool_is_bounded_per_key_and_in_bytes() -> None:
    pool = BufferPool(max_bytes=10 * 1024, max_per_key=3)
    kept = [pool.release(np.empty(1024, np.uint8)) for _ in range(5)]
    assert kept == [True, True, True, False, False]
    assert not pool.release(np.empty(16 * 1024, np.uint8))  # larger than the byte bound
    assert pool.stats().idle_bytes == 3 * 1024
    pool.clear()
    assert pool.stats().idle_bytes == 0


@pytest.mark.parametrize(
    "encode, decode",
    [
        (imagecodecs.jpegls_encode, imagecodecs.jpegls_decode),
        (imagecodecs.htj2k_encode, imagecodecs.htj2k_decode),
        (lambda a: imagecodecs.jpeg2k_encode(a, level=0), imagecodecs.jpeg2k_decode),
        (imagecodecs.ljpeg_encode, imagecodecs.jpeg8_decode),
    ],
    ids=["jpegls", "htj2k", "jpeg2k", "jpeg8-lossless"],
)
def test_decode_into_reused_buffers_matches_fresh_decode(encode, decode) -> None:
    source = synthetic_frames("ct", rows=64, columns=64)
    frames = [source(n) for n in range(0, 40, 7)]
    encoded = [encode(f) for f in frames]
    pool = BufferPool(max_per_key=1)
    for frame, data in zip(frames, encoded, strict=True):
        out = pool.decode_into(decode, data, frame.shape, frame.dtype)
        np.testing.assert_array_equal(out, decode(data))
        np.testing.assert_array_equal(out, frame)
        assert pool.release(out)  # the next frame decodes into this same memory: no stale pixels
    assert pool.stats().reused == len(frames) - 1


def test_decode_error_returns_the_buffer() -> None:
    pool = BufferPool()
    with pytest.raises(imagecodecs.JpeglsError):
        pool.decode_into(imagecodecs.jpegls_decode, b"not a codestream", (64, 64), np.uint16)
    assert pool.stats().idle_buffers == 1


def test_codecs_refuse_an_out_of_the_wrong_shape() -> None:
    data = imagecodecs.jpegls_encode(synthetic_frames("ct", rows=64, columns=64)(0))
    with pytest.raises(ValueError):
        imagecodecs.jpegls_decode(data, out=np.empty((32, 32), np.uint16))


def test_lease_releases_at_the_end_of_the_block() -> None:
    pool = BufferPool()
    with pool.lease(100, np.float32) as buf:
        buf[:] = 1.0
    assert pool.acquire(100, np.float32) is buf
