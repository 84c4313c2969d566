"""Dask arrays (lazy, one chunk per frame, picklable by path) and zero-copy frame views."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import dcmstream
from dcmstream.cache import FrameCache
from dcmstream.samples import write_multiframe

from .conftest import write_ct

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def jls(tmp_path_factory):
    return write_multiframe(tmp_path_factory.mktemp("dask") / "ct.dcm", frames=5, syntax="jpeg-ls", kind="ct", rows=40, columns=30)


def test_instance_to_dask_is_lazy_and_exact(jls):
    with dcmstream.open(jls, cache=FrameCache()) as inst:
        inst.source.reset_counters()
        arr = inst.to_dask()
        assert arr.shape == (5, 40, 30) and arr.dtype == inst.pixel_spec.dtype
        assert arr.chunks == ((1,) * 5, (40,), (30,))
        assert inst.source.read_calls == 0  # nothing read to build it
        expected = np.stack([inst.frame(i) for i in range(5)])
        np.testing.assert_array_equal(arr.compute(scheduler="threads"), expected)
        np.testing.assert_array_equal(arr[3].compute(scheduler="sync"), expected[3])
        np.testing.assert_array_equal(arr.max(axis=0).compute(), expected.max(axis=0))
        small = inst.to_dask(level=1)
        assert small.shape == (5, 20, 15)
        np.testing.assert_array_equal(small.compute(), expected[:, ::2, ::2])
        assert inst.to_dask().name == arr.name  # deterministic names


def test_dask_array_pickles_by_path_and_reopens(jls):
    inst = dcmstream.open(jls, cache=False)
    expected = np.stack(list(inst.frames()))
    blob = pickle.dumps(inst.to_dask())
    inst.close()
    restored = pickle.loads(blob)  # as a dask.distributed worker would get it
    np.testing.assert_array_equal(restored.compute(scheduler="threads"), expected)
    # the original array also survives its instance being closed (reopens by path)
    with dcmstream.open(jls, cache=False) as again:
        arr = again.to_dask()
    np.testing.assert_array_equal(arr.compute(), expected)


def test_reopened_instances_are_shared_not_closed_under_a_reader(jls, monkeypatch):
    # Many threads reopening the same path at once (a pickled dask array on a threaded
    # worker): the first instance registered is everyone's; none is closed while another
    # thread reads through it (that failed as "the instance is closed").
    import threading

    from dcmstream.image import arrays

    monkeypatch.setattr(arrays, "_open", arrays._process_lru())
    start = threading.Barrier(8)
    got: list = []
    errors: list = []

    def reader():
        try:
            start.wait()
            inst = arrays._opened(str(jls))
            got.append(inst)
            for i in range(len(inst)):
                inst.frame(i)
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 8 and all(not i.source.closed for i in got)
    assert len(arrays._open) == 1


def test_dask_with_the_processes_scheduler(jls):
    with dcmstream.open(jls, cache=False) as inst:
        arr = inst.to_dask()
        expected = np.stack(list(inst.frames()))
    np.testing.assert_array_equal(arr.compute(scheduler="processes", num_workers=1), expected)


def test_series_to_dask(shuffled_series):
    folder, _ = shuffled_series(7)
    with dcmstream.open_series(folder, cache=FrameCache(), max_open=2) as series:
        arr = series.to_dask()
        assert arr.shape == (7, 16, 12) and arr.chunks[0] == (1,) * 7
        expected = np.stack(list(series.frames()))
        np.testing.assert_array_equal(arr.compute(scheduler="threads"), expected)
        assert series.open_count <= 2
        blob = pickle.dumps(arr)
    np.testing.assert_array_equal(pickle.loads(blob).compute(), expected)
    np.testing.assert_array_equal(arr.compute(), expected)  # the series is closed: by path
    assert [int(v) for v in expected[:, -1, -1]] == list(range(7))


# -- frame_view ----------------------------------------------------------------------
def test_frame_view_is_a_read_only_memmap(tmp_path):
    frames = np.random.default_rng(2).integers(-3000, 3000, (4, 24, 20)).astype(np.int16)
    path = write_ct(tmp_path / "v.dcm", frames, series_uid="1.2.3")
    with dcmstream.open(path, cache=False) as inst:
        assert inst.can_view
        view = inst.frame_view(2)
        assert isinstance(view, np.memmap) and not view.flags.writeable
        np.testing.assert_array_equal(view, inst.frame(2))
        np.testing.assert_array_equal(view, frames[2])
        np.testing.assert_array_equal(inst.frame_view(-1), frames[3])
        with pytest.raises(ValueError):
            view[0, 0] = 1
    np.testing.assert_array_equal(view, frames[2])  # the mapping outlives the instance


def test_frame_view_rgb_and_8_bit(tmp_path):
    path = write_multiframe(tmp_path / "us.dcm", frames=3, syntax="explicit", kind="us", rows=20, columns=16)
    with dcmstream.open(path, cache=False) as inst:
        assert inst.can_view
        view = inst.frame_view(1)
        assert isinstance(view, np.memmap) and view.shape == (20, 16, 3)
        np.testing.assert_array_equal(view, inst.frame(1))


@pytest.mark.parametrize("syntax", ["explicit", "big-endian", "deflated", "jpeg-ls"])
def test_frame_view_falls_back_to_a_copy(tmp_path, syntax):
    # The CT samples store 12 of 16 bits (masking needed); the others need byte
    # swapping, inflating or decoding.
    path = write_multiframe(tmp_path / f"{syntax}.dcm", frames=2, syntax=syntax, kind="ct", rows=16, columns=16)
    with dcmstream.open(path, cache=False) as inst:
        assert not inst.can_view
        view = inst.frame_view(1)
        assert not isinstance(view, np.memmap)
        np.testing.assert_array_equal(view, inst.frame(1))


def test_frame_view_of_bytes_source_falls_back(tmp_path):
    frames = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    path = write_ct(tmp_path / "b.dcm", frames, series_uid="1.2.3")
    with dcmstream.open(path.read_bytes(), cache=False) as inst:
        assert not inst.can_view
        np.testing.assert_array_equal(inst.frame_view(1), frames[1])
