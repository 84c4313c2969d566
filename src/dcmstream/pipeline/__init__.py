"""Cohort processing within a memory budget, on one machine or a dask cluster.

::

    from dcmstream import pipeline
    from dcmstream.pipeline import ExecutionOptions, ItemOptions, RunOptions

    def stats(frame):                       # a Frame: .source, .frame, .array
        a = frame.array
        return {"min": int(a.min()), "max": int(a.max()), "mean": float(a.mean())}

    report = pipeline.run("cohort/", stats, memory_budget="2GB", sink="stats.csv")
    print(report.summary())

    # tiles of whole-slide images (TILED_FULL) or of any large frame, with overlap,
    # only where a low-resolution look finds tissue, written to Zarr:
    tiles = ItemOptions(tile_size=1024, overlap=32, roi=lambda low: low.mean(axis=-1) < 220)
    pipeline.run("slides/", lambda t: t.array, unit="tile", sink="out.zarr",
                 options=RunOptions(items=tiles))

    # on a dask cluster (same results as the local run):
    cluster = ExecutionOptions(scheduler="tcp://scheduler:8786")
    pipeline.run("cohort/", stats, sink="stats.csv", options=RunOptions(execution=cluster))

See :func:`run` for the parameters, :mod:`.options` for the settings (grouped by concern)
and :class:`RunReport` for what a run reports.
"""

from .budget import BatchSizer, initial_batch, parse_size
from .dtypes import modality_dtype, narrowest_int, storage_dtype
from .items import Failure, Frame, InstanceItem, ItemInfo, SeriesItem, Tile
from .monitor import MemoryMonitor, PauseStats
from .options import BudgetOptions, ExecutionOptions, ItemOptions, RunOptions
from .runner import ProgressInfo, RunReport, run
from .sinks import CallbackSink, ListSink, NullSink, Sink, StatsSink, ZarrSink, as_sink
from .sources import InputRef, iter_inputs
from .tiles import SlideGeometry, TileSpec, read_region, slide_geometry, tile_grid

__all__ = [
    "run",
    "RunOptions",
    "ItemOptions",
    "ExecutionOptions",
    "BudgetOptions",
    "RunReport",
    "ProgressInfo",
    "Frame",
    "Tile",
    "InstanceItem",
    "SeriesItem",
    "ItemInfo",
    "Failure",
    "Sink",
    "NullSink",
    "ListSink",
    "CallbackSink",
    "StatsSink",
    "ZarrSink",
    "as_sink",
    "InputRef",
    "iter_inputs",
    "TileSpec",
    "tile_grid",
    "SlideGeometry",
    "slide_geometry",
    "read_region",
    "parse_size",
    "initial_batch",
    "BatchSizer",
    "MemoryMonitor",
    "PauseStats",
    "narrowest_int",
    "storage_dtype",
    "modality_dtype",
]
