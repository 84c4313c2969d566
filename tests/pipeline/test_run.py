"""pipeline.run: units, results independent of workers and executors, failures, sinks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import dcmstream
from dcmstream import pipeline
from dcmstream.pipeline import ExecutionOptions, ItemOptions, RunOptions
from dcmstream.pipeline.ops import frame_stats


def stats(item):  # module level: pickles for worker processes and dask
    a = item.array
    return {"min": int(a.min()), "max": int(a.max()), "sum": int(a.sum(dtype=np.int64))}


def fails_on_frame_3(item):
    if item.frame == 3:
        raise ValueError("frame 3 is cursed")
    return int(item.array.max())


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm"))


def expected_stats(root: Path) -> dict[str, dict]:
    out = {}
    for path in files(root):
        with dcmstream.open(path, cache=False) as inst:
            for i in range(len(inst)):
                a = inst.frame(i)
                out[f"{path}#{i}"] = {"min": int(a.min()), "max": int(a.max()), "sum": int(a.sum(dtype=np.int64))}
    return out


def collect(root, **kw) -> tuple[pipeline.RunReport, dict]:
    sink = pipeline.ListSink()
    report = pipeline.run(root, stats, sink=sink, memory_budget="64MB", **kw)
    return report, sink.by_key()


def test_frames_of_a_folder(cohort: Path) -> None:
    report, got = collect(cohort, workers=2)
    assert got == expected_stats(cohort)
    assert report.items == 12 + 8 + 6 and report.failed == 0
    assert report.skipped == 1  # notes.txt
    assert report.bytes == sum(np.prod(s) * 2 for s in [(12, 64, 48), (8, 40, 56), (6, 32, 32)])
    assert report.peak_rss >= report.baseline_rss > 0
    assert "processed" in report.summary()


def test_same_results_with_one_and_two_workers_and_in_order(cohort: Path) -> None:
    sinks = []
    for workers in (1, 2):
        sink = pipeline.ListSink()
        pipeline.run(cohort, stats, sink=sink, workers=workers, memory_budget="64MB")
        sinks.append(sink)
    keys = [[info.key for info, _ in s.items] for s in sinks]
    assert keys[0] == keys[1]  # plan order, whatever finished first
    assert [r for _, r in sinks[0].items] == [r for _, r in sinks[1].items]


@pytest.mark.parametrize("max_open, budget", [(3, "64MB"), (64, "64MB"), (8, "200KB")])
def test_chunked_hand_over_keeps_every_frame_in_order(cohort: Path, max_open: int, budget: str) -> None:
    # Frames travel between the threads in chunks that may span several files (the
    # single-frame series) and are cut by the open-file window (max_open) and by the
    # budget's window; none may be lost, doubled or reordered, and no file reopened
    # after the planner let it go.
    sink = pipeline.ListSink()
    report = pipeline.run(cohort, stats, sink=sink, workers=2, memory_budget=budget, options=RunOptions(execution=ExecutionOptions(max_open=max_open)))
    assert report.failed == 0
    keys = [info.key for info, _ in sink.items]
    assert keys == list(expected_stats(cohort))  # plan order: files sorted, frames ascending
    assert sink.by_key() == expected_stats(cohort)


def test_worker_processes_give_the_same_results(cohort: Path) -> None:
    report, got = collect(cohort, workers=2, options=RunOptions(execution=ExecutionOptions(executor="processes")))
    assert report.executor == "processes"
    assert got == expected_stats(cohort)


def test_a_failing_item_does_not_stop_the_run(cohort: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(cohort, folder)
    good = folder / "ct-jls.dcm"
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])  # frames past the cut are missing
    sink = pipeline.ListSink()
    with pytest.warns(UserWarning, match="Basic Offset Table places the last"):  # the truncated file
        report = pipeline.run(folder, fails_on_frame_3, sink=sink, workers=2, memory_budget="64MB")
    keys = {f.key: f for f in report.failures}
    assert f"{folder / 'ct-jls.dcm'}#3" in keys and f"{folder / 'mr-htj2k.dcm'}#3" in keys
    f = keys[f"{folder / 'ct-jls.dcm'}#3"]
    assert f.stage == "fn" and "ValueError: frame 3 is cursed" in f.error and "Traceback" in f.traceback
    truncated = [f for f in report.failures if "truncated" in f.key]
    assert truncated  # the damaged file is reported (at open or per frame), not fatal
    assert report.failed == len(report.failures) and not report.ok
    # everything else went through
    assert report.items == len(sink.items) >= 12 + 8 + 6 - 2


def test_instance_and_series_units(cohort: Path) -> None:
    def per_instance(item):
        return item.source, len(item.instance)

    report = pipeline.run(cohort, per_instance, unit="instance", sink=(sink := pipeline.ListSink()), memory_budget="64MB")
    assert sorted(r[1] for r in sink.results) == [1] * 6 + [8, 12]
    assert report.items == 8

    def per_series(item):
        s = item.series
        return item.series_uid, len(s), [int(s.frame(i)[0, 0]) for i in range(len(s))]

    sink = pipeline.ListSink()
    pipeline.run(cohort, per_series, unit="series", sink=sink, memory_budget="64MB")
    by_uid = {r[0]: r for r in sink.results}
    assert by_uid["1.2.3.4.5"][1] == 6  # one series of six files
    assert len(by_uid) == 3
    with dcmstream.open_series(cohort / "series") as series:
        assert by_uid["1.2.3.4.5"][2] == [int(series.frame(i)[0, 0]) for i in range(6)]


def test_values_views_and_levels(cohort: Path) -> None:
    path = cohort / "ct-jls.dcm"
    sink = pipeline.ListSink()
    pipeline.run(path, lambda f: f.array, sink=sink, options=RunOptions(items=ItemOptions(values="modality")))
    first = sink.results[0]
    with dcmstream.open(path, cache=False) as inst:
        assert first.dtype == np.int16  # 12-bit stored, intercept -1024: int16, not float64
        np.testing.assert_array_equal(first, inst.frame(0).astype(np.int32) - 1024)
        sink = pipeline.ListSink()
        pipeline.run(path, lambda f: f.array, sink=sink, options=RunOptions(items=ItemOptions(values="uint8", window=(40, 400))))
        np.testing.assert_array_equal(sink.results[5], inst.render(5, window=(40, 400)))
        sink = pipeline.ListSink()
        pipeline.run(path, lambda f: f.array, sink=sink, options=RunOptions(items=ItemOptions(level=1)))
        np.testing.assert_array_equal(sink.results[2], inst.frame(2, level=1))


def test_stats_sinks_write_csv_json_npy(cohort: Path, tmp_path: Path) -> None:
    path = cohort / "mr-htj2k.dcm"
    pipeline.run(path, frame_stats, sink=tmp_path / "s.csv")
    pipeline.run(path, frame_stats, sink=tmp_path / "s.json")
    pipeline.run(path, frame_stats, sink=tmp_path / "s.npy")
    pipeline.run(path, frame_stats, sink=tmp_path / "s.jsonl")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["source", "unit", "frame"] and len(lines) == 9
    records = json.loads((tmp_path / "s.json").read_text())
    npy = np.load(tmp_path / "s.npy")
    jsonl = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert records == jsonl and len(npy) == 8
    with dcmstream.open(path, cache=False) as inst:
        for i, rec in enumerate(records):
            a = inst.frame(i)
            assert rec["frame"] == i and rec["max"] == int(a.max()) and rec["sum"] == int(a.sum(dtype=np.int64))
            assert npy["max"][i] == rec["max"] and npy["source"][i] == str(path)
            assert abs(npy["mean"][i] - a.mean()) < 1e-9


def test_archive_folder_is_an_input(cohort: Path, tmp_path: Path) -> None:
    from dcmstream.archive import Archive

    with Archive(tmp_path / "archive", cache=False) as archive:
        for path in files(cohort):
            assert archive.ingest_file(path).ok
    report, got = collect(tmp_path / "archive")
    assert report.items == 26 and report.failed == 0
    assert sorted(got.values(), key=json.dumps) == sorted(expected_stats(cohort).values(), key=json.dumps)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        pipeline.run([], stats, unit="pixel")
    with pytest.raises(FileNotFoundError):
        pipeline.run("/no/such/folder", stats)
    with pytest.raises(ValueError):
        pipeline.parse_size("lots")
    assert pipeline.parse_size("2GB") == 2 * 10**9 and pipeline.parse_size("512MiB") == 512 << 20
