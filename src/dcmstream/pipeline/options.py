"""The settings of a pipeline run, grouped by what they decide (frozen dataclasses).

::

    from dcmstream import pipeline
    from dcmstream.pipeline import ExecutionOptions, ItemOptions, RunOptions

    pipeline.run("cohort/", stats, memory_budget="2GB", sink="stats.csv")   # the defaults
    pipeline.run("slides/", fn, unit="tile", sink="out.zarr",
                 options=RunOptions(items=ItemOptions(tile_size=512, overlap=32)))
    pipeline.run("cohort/", stats, sink="stats.csv",
                 options=RunOptions(execution=ExecutionOptions(scheduler="tcp://scheduler:8786")))

* :class:`ItemOptions` - what each item holds and which items are kept: resolution level,
  value view (stored, modality, windowed uint8), tile size and overlap, region of interest;
* :class:`ExecutionOptions` - where ``fn`` runs: threads, processes or a dask cluster,
  readers, open files, result order;
* :class:`BudgetOptions` - how the memory budget is kept: the pressure threshold, the probe
  and its interval, the stall time-out, the largest batch.

The budget itself, the unit, the sink, the number of workers and the progress callback are
plain arguments of :func:`~dcmstream.pipeline.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cache import MemorySample
from ..errors import InvalidArgumentError
from .plan import RoiPredicate

__all__ = ["BudgetOptions", "ExecutionOptions", "ItemOptions", "RunOptions"]

VALUES = ("stored", "modality", "uint8")
EXECUTORS = ("threads", "processes")


@dataclass(frozen=True)
class ItemOptions:
    """What each item holds and which items are kept.

    ``level`` k reads frames at 1/2**k per side. ``values``: "stored", "modality"
    (rescaled, narrowest exact dtype) or "uint8" (windowed by ``window``, a (center, width)
    pair; the file's own window when None). Tiles (``unit="tile"``): ``tile_size`` pixels
    (one side, or (rows, columns)) with ``overlap``; TILED_FULL whole-slide images are tiled
    over their total pixel matrix. ``roi`` selects frames or tiles from a low-resolution
    image first, read at ``roi_level`` (see :mod:`dcmstream.pipeline.plan`).
    """

    level: int = 0
    values: str = "stored"
    window: tuple[float, float] | None = None
    tile_size: int | tuple[int, int] = 1024
    overlap: int = 0
    roi: RoiPredicate | None = None
    roi_level: int = 3

    def __post_init__(self) -> None:
        if self.values not in VALUES:
            raise InvalidArgumentError("values must be 'stored', 'modality' or 'uint8'")
        if self.level < 0:
            raise InvalidArgumentError("level must be >= 0")


@dataclass(frozen=True)
class ExecutionOptions:
    """Where ``fn`` runs. ``executor="processes"`` uses worker processes instead of threads
    (``fn`` must pickle); ``scheduler`` (an address or a ``dask.distributed.Client``) a
    dask cluster. ``readers`` threads read (default: as many as workers); at most
    ``max_open`` files are open at once; ``ordered`` hands results to the sink in plan
    order (whatever the number of workers), otherwise as they finish."""

    executor: str = "threads"
    scheduler: Any = None
    readers: int | None = None
    max_open: int = 64
    ordered: bool = True

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise InvalidArgumentError("executor must be 'threads' or 'processes'")


@dataclass(frozen=True)
class BudgetOptions:
    """How the memory budget is kept. Producers pause while the machine or the process
    (its growth above the run's starting RSS) is above ``memory_threshold`` of the budget,
    sampled every ``monitor_interval`` seconds by ``memory_probe`` (default: psutil); after
    ``stall_timeout`` seconds of pause with nothing in flight one item is let through. A
    batch holds at most ``max_batch`` items."""

    memory_threshold: float = 0.8
    memory_probe: Callable[[], MemorySample] | None = None
    monitor_interval: float = 0.05
    stall_timeout: float = 5.0
    max_batch: int = 1024


@dataclass(frozen=True)
class RunOptions:
    """Everything :func:`~dcmstream.pipeline.run` can be told besides its plain arguments."""

    items: ItemOptions = field(default_factory=ItemOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    budget: BudgetOptions = field(default_factory=BudgetOptions)
