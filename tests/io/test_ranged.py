"""RangedSource: read-ahead, exact frame reads, counters, retries and typed failures,
over an in-memory fetch callable that records every request."""

from __future__ import annotations

import os
import threading

import pytest

from dcmstream.errors import DicomFormatError, SourceError
from dcmstream.io.ranged import READAHEAD, FetchStats, RangedSource

DATA = os.urandom(1 << 20)


class Remote:
    """``fetch(start, end)`` over DATA, logging the ranges; can fail or cut short on demand."""

    def __init__(self, data: bytes = DATA) -> None:
        self.data = data
        self.ranges: list[tuple[int, int]] = []
        self.failures: list[BaseException] = []  # raised, one per request, before serving
        self.short = 0  # bytes to cut from each answer
        self.lock = threading.Lock()

    def __call__(self, start: int, end: int) -> bytes:
        with self.lock:
            self.ranges.append((start, end))
            if self.failures:
                raise self.failures.pop(0)
        return self.data[start : end - self.short if self.short else end]


def source(remote: Remote, **options) -> RangedSource:
    options.setdefault("backoff", 0.0)
    return RangedSource(remote, len(remote.data), name="remote", **options)


def test_small_reads_share_one_read_ahead_block() -> None:
    remote = Remote()
    src = source(remote)
    walked = b"".join(src.read_at(1000 + i * 12, 12) for i in range(5000))
    assert walked == DATA[1000 : 1000 + 60_000]
    assert remote.ranges == [(1000, 1000 + READAHEAD)]
    assert (src.fetched.requests, src.fetched.bytes) == (1, READAHEAD)
    assert (src.read_calls, src.bytes_read) == (5000, 60_000)  # what callers asked for


def test_a_read_continuing_past_the_block_fetches_only_what_follows() -> None:
    remote = Remote()
    src = source(remote)
    src.read_at(0, 100)
    assert src.read_at(READAHEAD - 50, 100) == DATA[READAHEAD - 50 : READAHEAD + 50]
    assert remote.ranges == [(0, READAHEAD), (READAHEAD, 2 * READAHEAD)]
    # A large read that begins inside the block: the rest exactly, no read-ahead.
    assert src.read_at(2 * READAHEAD - 10, 200_000) == DATA[2 * READAHEAD - 10 : 2 * READAHEAD - 10 + 200_000]
    assert remote.ranges[-1] == (2 * READAHEAD, 2 * READAHEAD - 10 + 200_000)


def test_frame_sized_reads_fetch_exactly_their_range() -> None:
    remote = Remote()
    src = source(remote)
    assert src.read_exact(500_000, 300_000) == DATA[500_000:800_000]
    assert src.read_writable(10, 1000) == bytearray(DATA[10:1010])  # payload reads never read ahead
    assert isinstance(src.read_writable(10, 1000), bytearray)
    assert remote.ranges == [(500_000, 800_000), (10, 1010), (10, 1010)]
    assert src.read_at(700_000, 10) == DATA[700_000:700_010]  # large reads are not kept as blocks
    assert remote.ranges[-1] == (700_000, 700_000 + READAHEAD)


def test_read_ahead_is_clamped_to_the_end_and_can_be_off() -> None:
    remote = Remote()
    src = source(remote)
    assert src.read_at(len(DATA) - 5, 100) == DATA[-5:]
    assert remote.ranges == [(len(DATA) - 5, len(DATA))]
    exact = Remote()
    src = source(exact, readahead=0)
    src.read_at(0, 10)
    src.read_at(10, 10)
    assert exact.ranges == [(0, 10), (10, 20)]


def test_shared_stats_and_read_callback() -> None:
    shared = FetchStats()
    delivered: list[int] = []
    a = source(Remote(), stats=shared, on_read=delivered.append)
    b = source(Remote(), stats=shared, on_read=delivered.append)
    a.read_at(0, 10)
    b.read_writable(0, 70_000)
    assert (shared.requests, shared.bytes) == (2, READAHEAD + 70_000)
    assert delivered == [10, 70_000]


def test_transient_errors_are_retried_then_typed() -> None:
    remote = Remote()
    remote.failures = [ConnectionError("reset"), TimeoutError("slow")]
    src = source(remote, retries=3)
    assert src.read_exact(0, 100_000) == DATA[:100_000]
    assert src.fetched.requests == 3 and len(remote.ranges) == 3
    remote.failures = [ConnectionError("down")] * 10
    with pytest.raises(SourceError, match="after 4 attempts"):
        src.read_exact(0, 100_000)
    assert len(remote.ranges) == 3 + 4  # the first try and 3 retries


def test_other_failures_are_not_retried() -> None:
    remote = Remote()
    remote.failures = [PermissionError("denied")]
    src = source(remote)
    with pytest.raises(SourceError, match="denied"):
        src.read_at(0, 10)
    remote.failures = [SourceError("the object changed")]
    with pytest.raises(SourceError, match="changed"):
        src.read_at(0, 10)
    assert len(remote.ranges) == 2


def test_short_answers_are_source_errors() -> None:
    remote = Remote()
    remote.short = 1
    src = source(remote)
    with pytest.raises(SourceError, match="got 99999"):
        src.read_exact(0, 100_000)
    with pytest.raises(SourceError, match="truncated"):
        src.read_at(0, 10)


def test_reads_past_the_end_and_after_close() -> None:
    src = source(Remote(b"0123456789"))
    assert src.read_at(8, 100) == b"89"
    with pytest.raises(DicomFormatError):
        src.read_exact(8, 100)
    with pytest.raises(DicomFormatError):
        src.read_writable(8, 100)
    closed: list[bool] = []
    src2 = RangedSource(Remote(b"abc"), 3, on_close=lambda: closed.append(True))
    with src2:
        assert src2.read_at(0, 3) == b"abc"
    assert closed == [True]
    with pytest.raises(SourceError, match="closed"):
        src2.read_at(0, 1)
    with pytest.raises(SourceError, match="closed"):
        src2.read_writable(0, 1)


def test_concurrent_readers_get_their_own_bytes() -> None:
    src = source(Remote())
    errors: list[str] = []

    def reader(seed: int) -> None:
        for k in range(200):
            offset = (seed * 7919 + k * 104_729) % (len(DATA) - 5000)
            length = 1 + (seed * 31 + k * 17) % 5000
            if src.read_at(offset, length) != DATA[offset : offset + length]:
                errors.append(f"{seed}/{k}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_dicom_file_opens_and_reads_frames_through_ranges(tmp_path) -> None:
    import numpy as np

    import dcmstream
    from dcmstream.samples import write_multiframe

    path = write_multiframe(tmp_path / "mr.dcm", frames=20, syntax="rle", kind="mr", rows=64, columns=64)
    data = path.read_bytes()
    remote = Remote(data)
    with dcmstream.open(source(remote), cache=False) as inst, dcmstream.open(path, cache=False) as local:
        assert sum(end - start for start, end in remote.ranges) <= len(data)
        for i in (0, 7, 19):
            assert np.array_equal(inst.frame(i), local.frame(i))
