"""dask.distributed: pipeline.run on a cluster (ExecutionOptions(scheduler=...)) and Instance/Series.to_dask() on a
LocalCluster give the same results as the local run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dcmstream
from dcmstream import pipeline
from dcmstream.pipeline import ExecutionOptions, ItemOptions, RunOptions

from .test_run import expected_stats, stats

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    # In-process workers keep the test light; the chunks still travel pickled (by path).
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_run_on_a_local_cluster_matches_the_local_run(cohort: Path, client) -> None:
    sink = pipeline.ListSink()
    report = pipeline.run(cohort, stats, sink=sink, memory_budget="64MB", options=RunOptions(execution=ExecutionOptions(scheduler=client)))
    assert report.executor == "dask" and report.workers == 2
    assert sink.by_key() == expected_stats(cohort)
    local = pipeline.ListSink()
    pipeline.run(cohort, stats, sink=local, memory_budget="64MB")
    assert [i.key for i, _ in sink.items] == [i.key for i, _ in local.items]


def test_failures_and_tiles_on_the_cluster(cohort: Path, client) -> None:
    from .test_run import fails_on_frame_3

    report = pipeline.run(cohort / "ct-jls.dcm", fails_on_frame_3, options=RunOptions(execution=ExecutionOptions(scheduler=client)))
    assert report.items == 11 and report.failed == 1 and "cursed" in report.failures[0].error
    sink = pipeline.ListSink()
    pipeline.run(cohort / "ct-jls.dcm", _core_sum, unit="tile", sink=sink, options=RunOptions(items=ItemOptions(tile_size=32, overlap=4), execution=ExecutionOptions(scheduler=client)))
    with dcmstream.open(cohort / "ct-jls.dcm", cache=False) as inst:
        assert sum(sink.results) == sum(int(inst.frame(i).sum(dtype=np.int64)) for i in range(len(inst)))


def _core_sum(tile):
    return int(tile.core_array.sum(dtype=np.int64))


def test_to_dask_on_the_cluster(cohort: Path, client) -> None:
    with dcmstream.open(cohort / "ct-jls.dcm", cache=False) as inst:
        arr = inst.to_dask()
        expected = np.stack(list(inst.frames()))
        np.testing.assert_array_equal(client.compute(arr.max(axis=0)).result(), expected.max(axis=0))
        np.testing.assert_array_equal(client.compute(arr).result(), expected)
    with dcmstream.open_series(cohort / "series", cache=False) as series:
        arr = series.to_dask()
        expected = np.stack(list(series.frames()))
        np.testing.assert_array_equal(client.compute(arr.sum(axis=0)).result(), expected.sum(axis=0))


@pytest.mark.slow
def test_run_with_a_scheduler_address_and_worker_processes(cohort: Path) -> None:
    # A real scheduler address and a worker process: refs travel pickled, files reopen by path.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        sink = pipeline.ListSink()
        report = pipeline.run(cohort, stats, sink=sink, memory_budget="64MB", options=RunOptions(execution=ExecutionOptions(scheduler=cluster.scheduler_address)))
    assert report.executor == "dask" and report.failed == 0
    assert sink.by_key() == expected_stats(cohort)
