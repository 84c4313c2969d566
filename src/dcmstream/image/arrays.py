"""Lazy dask arrays over instances and series: one chunk per frame.

A chunk is computed by a small picklable reader. In the process that built the
array it reads through the live :class:`Instance` / :class:`Series` (their
caches and open files). Pickled into another process (dask.distributed workers,
the processes scheduler) it carries only paths and reopens them there, keeping
at most :data:`MAX_OPEN_PER_PROCESS` instances open per process (LRU), because an
Instance holds a file descriptor and cannot itself travel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache.lru import OpenLRU
from ..errors import DcmstreamError, InvalidArgumentTypeError, MissingDependencyError
from .levels import level_shape

if TYPE_CHECKING:
    from .instance import Instance
    from .series import Series

__all__ = ["instance_to_dask", "series_to_dask", "MAX_OPEN_PER_PROCESS"]

#: Instances a worker process keeps open for chunk reads.
MAX_OPEN_PER_PROCESS = 32

def _process_lru() -> OpenLRU[str, Instance]:
    # Entries closed by their user are stale: reopened on the next read.
    return OpenLRU(MAX_OPEN_PER_PROCESS, alive=lambda inst: not inst.source.closed)


_open = _process_lru()


def _opened(path: str) -> "Instance":
    """This process's open Instance of ``path`` (LRU-bounded; when threads reopen the same
    path at once, the first registered instance is everyone's)."""
    from .instance import Instance

    return _open.open(path, lambda: Instance(path))


def _source_path(inst: "Instance") -> str | None:
    """The local file an instance was opened from (None: bytes, file objects, ...)."""
    path = getattr(inst.source, "path", None)
    return None if path is None else str(path)


class _InstanceReader:
    """Reads frame chunks of one instance; pickles as its path."""

    def __init__(self, inst: "Instance", level: int) -> None:
        self._inst: Instance | None = inst
        self.path = _source_path(inst)
        self.key = inst.cache_key
        self.level = level

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            raise InvalidArgumentTypeError("an Instance not opened from a local path cannot be sent to another process")
        return {"path": self.path, "key": self.key, "level": self.level}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._inst = None

    def __dask_tokenize__(self) -> object:
        return ("dcmstream-instance", self.key, self.level)

    def instance(self) -> "Instance":
        inst = self._inst
        if inst is not None and not inst.source.closed:
            return inst
        if self.path is None:
            raise DcmstreamError("the instance behind this dask array is closed and has no path to reopen")
        return _opened(self.path)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return self.instance().frame(int(block[0]), level=self.level)[np.newaxis]


class _SeriesReader:
    """Reads frame chunks of a series; pickles as the member paths and frame counts."""

    def __init__(self, series: "Series", level: int) -> None:
        self._series: Series | None = series
        self.paths = [m.path for m in series.members]
        self.offsets = series.frame_offsets
        self.key = series.cache_key
        self.level = level

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "offsets": self.offsets, "key": self.key, "level": self.level}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._series = None

    def __dask_tokenize__(self) -> object:
        return ("dcmstream-series", self.key, self.level)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        i = int(block[0])
        series = self._series
        if series is not None and not series.closed:
            return series.frame(i, level=self.level)[np.newaxis]
        m = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return _opened(self.paths[m]).frame(i - int(self.offsets[m]), level=self.level)[np.newaxis]


def _frames_array(reader: Callable[[np.ndarray], np.ndarray], n: int, frame_shape: tuple[int, ...], dtype: np.dtype, name: str):  # noqa: ANN202
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("to_dask() needs dask: pip install 'dcmstream[dask]'") from exc
    index = da.arange(n, chunks=1, dtype=np.int64)
    chunks = ((1,) * n, *((s,) for s in frame_shape))
    return index.map_blocks(
        reader,
        dtype=dtype,
        chunks=chunks,
        new_axis=list(range(1, 1 + len(frame_shape))),
        meta=np.empty((0,) * (1 + len(frame_shape)), dtype),
        name=name,
    )


def _token(*parts: object) -> str:
    from dask.base import tokenize

    return tokenize(*parts)


def instance_to_dask(inst: "Instance", level: int = 0):  # noqa: ANN201
    """(frames, rows, columns[, samples]) dask array of ``inst`` at ``level``."""
    spec = inst.pixel_spec
    reader = _InstanceReader(inst, level)
    shape = level_shape(spec.shape, level)
    return _frames_array(reader, len(inst), shape, spec.dtype, f"dcmstream-frames-{_token(inst.cache_key, level)}")


def series_to_dask(series: "Series", level: int = 0):  # noqa: ANN201
    """(frames, rows, columns[, samples]) dask array of all frames of ``series``."""
    spec = series.pixel_spec
    reader = _SeriesReader(series, level)
    shape = level_shape(spec.shape, level)
    return _frames_array(reader, len(series), shape, spec.dtype, f"dcmstream-series-{_token(series.cache_key, level)}")
