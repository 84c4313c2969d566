"""open_series: one series of files as one stack, sorted, lazily opened, LRU-bounded."""

from __future__ import annotations

import os
import shutil

import numpy as np
import psutil
import pytest
from pydicom.uid import generate_uid

import dcmstream
from dcmstream.cache import FrameCache
from dcmstream.image.series import sort_members

from .conftest import write_ct


def _values(series) -> list[int]:
    return [int(series.frame(i)[-1, -1]) for i in range(len(series))]


def test_sorted_by_position_not_by_file_or_instance_number(shuffled_series):
    folder, uid = shuffled_series(12)
    with dcmstream.open_series(folder, cache=FrameCache()) as series:
        assert len(series) == 12 and series.sort_rule == "position" and series.series_uid == uid
        assert _values(series) == list(range(12))  # z ascending
        assert series.frame(-1)[0, 0] == -1000
        assert series.pixel_spec.rows == 16 and series.pixel_spec.columns == 12
        assert series.dataset.SeriesInstanceUID == uid
        first = series.members[0]
        assert series.dataset.SOPInstanceUID == first.sop_instance_uid
        assert [m.position[2] for m in series.members] == [2.5 * k for k in range(12)]
        np.testing.assert_array_equal(np.stack(list(series.frames())), np.stack([series.frame(i) for i in range(12)]))
        with pytest.raises(IndexError):
            series.frame(12)


def test_oblique_stack_sorts_along_the_normal(tmp_path):
    uid = generate_uid()
    row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # sagittal: normal = -x
    normal = np.cross(row, col)
    for name, k in zip("dacb", (3, 0, 2, 1), strict=True):
        position = tuple(float(v) for v in np.array([5.0, -20.0, 7.0]) + 1.7 * k * normal)
        write_ct(tmp_path / f"{name}.dcm", np.full((4, 4), k, np.uint16), series_uid=uid, position=position,
                 orientation=(*row, *col), instance_number=10 - k)
    with dcmstream.open_series(tmp_path, cache=False) as series:
        assert series.sort_rule == "position"
        assert _values(series) == [0, 1, 2, 3]


def test_instance_number_then_file_name(tmp_path):
    uid = generate_uid()
    for name, number in zip("abc", (3, 1, 2), strict=True):
        write_ct(tmp_path / f"{name}.dcm", np.full((4, 4), number, np.uint16), series_uid=uid, instance_number=number)
    with dcmstream.open_series(tmp_path, cache=False) as series:
        assert series.sort_rule == "instance_number" and _values(series) == [1, 2, 3]
    os.remove(tmp_path / "c.dcm")
    write_ct(tmp_path / "c.dcm", np.full((4, 4), 9, np.uint16), series_uid=uid)  # no number: file names
    ordered, rule = sort_members(dcmstream.open_series(tmp_path, cache=False).members)
    assert rule == "file_name" and [os.path.basename(m.path) for m in ordered] == ["a.dcm", "b.dcm", "c.dcm"]


def test_several_series_are_refused_unless_one_is_chosen(shuffled_series, tmp_path):
    folder, uid_a = shuffled_series(4, folder="mixed")
    uid_b = generate_uid()
    write_ct(folder / "other.dcm", np.zeros((16, 12), np.int16), series_uid=uid_b, position=(0, 0, 0), instance_number=1)
    with pytest.raises(dcmstream.DicomFormatError) as info:
        dcmstream.open_series(folder)
    assert uid_a in str(info.value) and uid_b in str(info.value) and "series_uid" in str(info.value)
    with dcmstream.open_series(folder, series_uid=uid_b, cache=False) as series:
        assert len(series) == 1
    with dcmstream.open_series(folder, series_uid=uid_a, cache=False) as series:
        assert _values(series) == [0, 1, 2, 3]
    with pytest.raises(dcmstream.DicomFormatError):
        dcmstream.open_series(folder, series_uid="1.2.3")


def test_directory_skips_non_images_and_paths_can_be_listed(shuffled_series):
    folder, _ = shuffled_series(5)
    (folder / "README.txt").write_text("not dicom")
    with pytest.warns(UserWarning, match="skipped 1"):
        series = dcmstream.open_series(folder, cache=False)
    assert len(series) == 5
    paths = sorted(folder.glob("f*.dcm"))[:3]
    with dcmstream.open_series(paths, cache=False) as picked:
        assert len(picked) == 3 and sorted(_values(picked)) == _values(picked)
    with pytest.raises(dcmstream.DicomFormatError):
        dcmstream.open_series([*paths, folder / "README.txt"])  # an explicit bad file is an error
    with pytest.raises(dcmstream.SourceError):
        dcmstream.open_series(folder / "missing.dcm")
    (folder / "empty").mkdir()
    with pytest.raises(dcmstream.DicomFormatError, match="no files"):
        dcmstream.open_series(folder / "empty")


def test_members_of_different_shape_are_refused(shuffled_series):
    folder, uid = shuffled_series(3)
    write_ct(folder / "big.dcm", np.zeros((32, 32), np.int16), series_uid=uid, position=(0, 0, 99), instance_number=1)
    with pytest.raises(dcmstream.DicomFormatError, match="differ in frame shape"):
        dcmstream.open_series(folder)


def test_open_files_stay_bounded(shuffled_series):
    folder, _ = shuffled_series(40)
    proc = psutil.Process()
    before = proc.num_fds()
    with dcmstream.open_series(folder, cache=FrameCache(), max_open=4) as series:
        assert _values(series) == list(range(40))
        assert series.open_count <= 4
        assert proc.num_fds() - before <= 4
        # cached frames come back without reopening anything
        series.instance(0)
        opened = series.open_count
        assert all(series.is_cached(i) for i in range(40))
        assert _values(series) == list(range(40))
        assert series.open_count == opened
    assert proc.num_fds() == before
    with pytest.raises(dcmstream.SourceError):
        series.frame(0)


def test_multiframe_members_map_global_frames(tmp_path):
    uid = generate_uid()
    for name, base in (("b", 0), ("a", 3)):
        frames = np.stack([np.full((6, 5), base + f, np.uint16) for f in range(3)])
        write_ct(tmp_path / f"{name}.dcm", frames, series_uid=uid, instance_number=base)
    with dcmstream.open_series(tmp_path, cache=False) as series:
        assert len(series) == 6 and series.locate(4) == (1, 1)
        assert _values(series) == [0, 1, 2, 3, 4, 5]


def test_frame_api_matches_the_member_instances(shuffled_series):
    folder, _ = shuffled_series(6, rows=32, columns=24, WindowCenter=5, WindowWidth=10)
    cache = FrameCache()
    with dcmstream.open_series(folder, cache=cache) as series:
        for i in (0, 3, 5):
            path = series.members[i].path
            with dcmstream.open(path, cache=False) as inst:
                assert series.encoded_frame(i) == inst.encoded_frame(0)
                np.testing.assert_array_equal(series.render(i), inst.render(0))
                np.testing.assert_array_equal(series.render(i, window=(0, 4), size=16), inst.render(0, window=(0, 4), size=16))
                np.testing.assert_array_equal(series.frame(i, level=1), inst.frame(0)[::2, ::2])
                np.testing.assert_array_equal(series.thumbnail(i, size=8), inst.thumbnail(0, size=8))
        assert series.render(2)[5, 5] == round((2 - 4.5) / 9 * 255 + 127.5)  # window 5/10, value 2
        series.prefetch(4, level=1)
        assert series.is_cached(4, level=1) and not series.is_cached(4, level=2)
        view = series.frame_view(1)
        assert isinstance(view, np.memmap)
        np.testing.assert_array_equal(view, series.frame(1))
        assert series.max_level == 5
        assert series.purge() > 0 and not series.is_cached(4, level=1)


def test_real_series_from_pydicom_test_files(testfile, tmp_path):
    # dicomdirtests/98892001/CT5N: five CT slices whose z falls as Instance Number rises
    src = os.path.join(os.path.dirname(testfile("DICOMDIR")), "98892001", "CT5N")
    if not os.path.isdir(src):
        pytest.skip("dicomdirtests not in this pydicom")
    shutil.copytree(src, tmp_path / "ct5n")
    with dcmstream.open_series(tmp_path / "ct5n", cache=False) as series:
        assert series.sort_rule == "position"
        z = [m.position[2] for m in series.members]
        assert z == sorted(z) and len(z) == 5
        assert [m.instance_number for m in series.members] == [10, 9, 8, 7, 6]
        assert series.frame(0).shape == (series.pixel_spec.rows, series.pixel_spec.columns)
