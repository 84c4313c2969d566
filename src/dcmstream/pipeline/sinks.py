"""Sinks: where results go, one at a time, from the pipeline's single writer thread.

Results arrive in plan order (the writer re-orders them within the window of items in
flight), so outputs are the same whatever the number of workers. A sink never needs to
hold more than one result: that is what makes results out-of-core.

* :class:`ZarrSink` - arrays into a Zarr v3 store, chunked and compressed (Blosc zstd,
  bit-shuffled): one array per source, placed by frame or by tile core.
* :class:`StatsSink` - per-item records (a dict of numbers per item) to CSV, JSON,
  JSON Lines or NPY (a structured array).
* :class:`ListSink` keeps (info, result) pairs (small runs and tests), :class:`CallbackSink`
  calls a function, :class:`NullSink` drops results.

:func:`as_sink` turns ``"out.zarr"``, ``"stats.csv"``, a callable or None into a sink.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, MissingDependencyError
from .items import ItemInfo

if TYPE_CHECKING:
    import zarr

__all__ = ["Sink", "NullSink", "ListSink", "CallbackSink", "StatsSink", "ZarrSink", "as_sink"]


class Sink:
    """Base class: ``open()`` once, ``write(info, result)`` per item, ``close()`` once."""

    def open(self) -> None:
        pass

    def write(self, info: ItemInfo, result: Any) -> None:
        raise NotImplementedError

    def close(self) -> Any:
        """Finish writing; returns a description of the output (a path, a count...)."""
        return None


class NullSink(Sink):
    def write(self, info: ItemInfo, result: Any) -> None:
        pass


class ListSink(Sink):
    """Keeps every (info, result): only for results that fit in memory."""

    def __init__(self) -> None:
        self.items: list[tuple[ItemInfo, Any]] = []

    def write(self, info: ItemInfo, result: Any) -> None:
        self.items.append((info, result))

    @property
    def results(self) -> list[Any]:
        return [r for _, r in self.items]

    def by_key(self) -> dict[str, Any]:
        return {info.key: r for info, r in self.items}

    def close(self) -> int:
        return len(self.items)


class CallbackSink(Sink):
    def __init__(self, callback: Callable[[ItemInfo, Any], None]) -> None:
        self.callback = callback

    def write(self, info: ItemInfo, result: Any) -> None:
        self.callback(info, result)


# -- per-item records ---------------------------------------------------------------------------
def _record(info: ItemInfo, result: Any) -> dict[str, Any]:
    rec = info.as_dict()
    items: Iterable[tuple[Any, Any]]
    if isinstance(result, Mapping):
        items = result.items()
    elif isinstance(result, np.ndarray) and result.dtype.names:
        items = ((n, result[n]) for n in result.dtype.names)
    else:
        items = (("value", result),)
    for k, v in items:
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.item() if v.size == 1 else v.tolist()
        rec[str(k)] = v
    return rec


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class StatsSink(Sink):
    """Per-item records to ``path``: ``.csv``, ``.json`` (an array), ``.jsonl`` or ``.npy``.

    A result is a dict of scalars (or a scalar, stored as ``value``); each record also
    has ``source``, ``unit`` and, where they apply, ``frame`` and the tile core
    ``y, x, height, width``. Records stream to disk as they come. CSV columns are those
    of the first record. NPY goes through a temporary JSON Lines file and becomes a
    structured array at :meth:`close` (written through a memory map, never whole in memory).
    """

    FORMATS = (".csv", ".json", ".jsonl", ".npy")

    def __init__(self, path: str | os.PathLike[str], format: str | None = None) -> None:  # noqa: A002 - public keyword
        self.path = Path(path)
        self.format = (format or self.path.suffix).lower()
        if not self.format.startswith("."):
            self.format = "." + self.format
        if self.format not in self.FORMATS:
            raise InvalidArgumentError(f"{self.path}: a stats sink writes {', '.join(self.FORMATS)}")
        self.count = 0
        self._fh: TextIO | None = None  # open from open() (or the first write) to close()
        self._csv: csv.DictWriter[str] | None = None
        self._tmp: Path | None = None  # NPY: the JSON Lines file the array is built from

    def open(self) -> None:
        self._file()

    def _file(self) -> TextIO:
        """The output being written, opened on first use."""
        if self._fh is not None:
            return self._fh
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == ".npy":
            fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=self.path.parent, prefix=f".{self.path.name}.")
            self._tmp = Path(tmp)
            fh = os.fdopen(fd, "w")
        else:
            # held across write() calls until close(): no with-block can span them
            fh = open(self.path, "w", newline="")  # noqa: SIM115
            if self.format == ".json":
                fh.write("[")
        self._fh = fh
        return fh

    def write(self, info: ItemInfo, result: Any) -> None:
        fh = self._file()
        rec = _record(info, result)
        if self.format == ".csv":
            if self._csv is None:
                self._csv = csv.DictWriter(fh, fieldnames=list(rec), extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerow(rec)
        elif self.format == ".json":
            fh.write(("\n" if not self.count else ",\n") + json.dumps(rec, default=_json_default))
        else:
            fh.write(json.dumps(rec, default=_json_default) + "\n")
        self.count += 1

    def close(self) -> str:
        fh = self._file()
        if self.format == ".json":
            fh.write("\n]\n")
        fh.close()
        self._fh = None
        if self._tmp is not None:
            try:
                self._to_npy(self._tmp)
            finally:
                self._tmp.unlink(missing_ok=True)
                self._tmp = None
        return str(self.path)

    def _to_npy(self, records: Path) -> None:
        fields: dict[str, np.dtype] = {}
        widths: dict[str, int] = {}
        with open(records) as fh:
            for line in fh:
                for k, v in json.loads(line).items():
                    if isinstance(v, (str, list, dict)):
                        widths[k] = max(widths.get(k, 1), len(str(v)))
                        fields[k] = np.dtype("U1")
                    elif isinstance(v, bool):
                        fields.setdefault(k, np.dtype(bool))
                    elif isinstance(v, int) and fields.get(k, np.dtype("i8")).kind in "ib":
                        fields[k] = np.dtype("i8")
                    elif v is None:
                        fields.setdefault(k, np.dtype("f8"))
                    else:
                        if fields.get(k, np.dtype("f8")).kind != "U":
                            fields[k] = np.dtype("f8")
        dtype = np.dtype([(k, f"U{widths[k]}" if dt.kind == "U" else dt) for k, dt in fields.items()])
        out = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=(self.count,))
        with open(records) as fh:
            for n, line in enumerate(fh):
                rec = json.loads(line)
                row: list[Any] = []
                for k, dt in fields.items():
                    v = rec.get(k)
                    if dt.kind == "U":
                        row.append("" if v is None else str(v))
                    elif v is None:
                        row.append(math.nan if dt.kind == "f" else 0)
                    else:
                        row.append(v)
                out[n] = tuple(row)
        out.flush()
        del out


# -- arrays -------------------------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ZarrSink(Sink):
    """Array results into a Zarr v3 group at ``path``, one array per source.

    Placement by unit:

    * ``frame``: result k of shape S goes to ``array[frame]`` of an array
      (frames, *S), one chunk per frame.
    * ``tile``: a result shaped like the tile (or like its core) has its core written at
      the tile's position in an array of the image's size ((frames,) rows, columns[, ...]),
      chunks of the tile size, so every core fills whole chunks and nothing overlaps.
      Any other shape goes to the tile's grid cell: (grid rows, grid columns, *S).
    * ``instance`` / ``series``: the result array as it is.

    Arrays are created at the first result of their source, with its dtype (or
    ``dtype=``); the array's ``source`` attribute holds the full source name. Only one
    result is held at a time; each write compresses and stores the chunks it fills.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dtype: npt.DTypeLike | None = None,
        clevel: int = 3,
        cname: str = "zstd",
        overwrite: bool = False,
        name: Callable[[ItemInfo], str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.clevel = clevel
        self.cname = cname
        self.overwrite = overwrite
        self.name_of = name
        self._group: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._names: dict[str, str] = {}
        self.written = 0

    def open(self) -> None:
        try:
            import zarr
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise MissingDependencyError("the Zarr sink needs zarr: pip install 'dcmstream[dask]'") from exc
        self._group = zarr.open_group(str(self.path), mode="w" if self.overwrite else "a")

    def _compressor(self, dtype: np.dtype) -> zarr.codecs.BloscCodec:
        from zarr.codecs import BloscCname, BloscCodec, BloscShuffle

        shuffle = BloscShuffle.bitshuffle if dtype.itemsize == 1 else BloscShuffle.shuffle
        return BloscCodec(cname=BloscCname(self.cname), clevel=self.clevel, shuffle=shuffle)

    def _name(self, info: ItemInfo) -> str:
        key = info.source if info.unit != "series" else (info.series_uid or info.source)
        if key in self._names:
            return self._names[key]
        if self.name_of is not None:
            base = self.name_of(info)
        else:
            base = _SAFE.sub("_", Path(key).stem if info.unit != "series" else key).strip("_") or "item"
        name, n = base, 1
        taken = set(self._names.values())
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        self._names[key] = name
        return name

    def _array(
        self, info: ItemInfo, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype, placement: str
    ) -> zarr.Array:
        name = self._name(info)
        arr = self._arrays.get(name)
        if arr is None:
            assert self._group is not None  # opened by write()
            arr = self._group.create_array(
                name, shape=shape, chunks=chunks, dtype=dtype, compressors=self._compressor(dtype),
                fill_value=0, overwrite=True,
            )
            arr.attrs.update({"source": info.source, "unit": info.unit, "placement": placement})
            self._arrays[name] = arr
        return arr

    def write(self, info: ItemInfo, result: Any) -> None:
        if self._group is None:
            self.open()
        if result is None:
            return
        res = np.asarray(result)
        if self.dtype is not None:
            res = res.astype(self.dtype, copy=False)
        if info.unit == "frame":
            assert info.frame is not None  # frame items are numbered
            arr = self._array(info, (info.frames, *res.shape), (1, *res.shape), res.dtype, "frame")
            arr[info.frame] = res
        elif info.unit == "tile":
            self._write_tile(info, res)
        else:
            arr = self._array(info, res.shape, res.shape if res.ndim < 3 else (1, *res.shape[1:]), res.dtype, "whole")
            arr[...] = res
        self.written += 1

    def _write_tile(self, info: ItemInfo, res: np.ndarray) -> None:
        assert info.core is not None and info.y is not None and info.x is not None
        cy, cx, ch, cw = info.core
        multi = info.frames > 1
        lead = (info.frames,) if multi else ()
        lead_chunk = (1,) if multi else ()
        where = (info.frame,) if multi else ()
        if res.shape[:2] in ((info.height, info.width), (ch, cw)):
            if res.shape[:2] == (info.height, info.width):
                res = res[cy - info.y : cy - info.y + ch, cx - info.x : cx - info.x + cw]
            h, w = info.image_shape[:2]
            ts = self._tile_chunk(info)
            arr = self._array(info, (*lead, h, w, *res.shape[2:]), (*lead_chunk, *ts, *res.shape[2:]), res.dtype, "pixels")
            arr[(*where, slice(cy, cy + ch), slice(cx, cx + cw))] = res
        else:
            gh, gw = info.grid_shape or (1, 1)
            arr = self._array(info, (*lead, gh, gw, *res.shape), (*lead_chunk, 1, 1, *res.shape), res.dtype, "grid")
            r, c = info.grid or (0, 0)
            arr[(*where, r, c)] = res

    @staticmethod
    def _tile_chunk(info: ItemInfo) -> tuple[int, int]:
        """The tile size, from the core and grid position (cores start at multiples of it)."""
        assert info.core is not None
        cy, cx, ch, cw = info.core
        r, c = info.grid or (0, 0)
        return (cy // r if r else ch), (cx // c if c else cw)

    def close(self) -> str:
        return str(self.path)


def as_sink(sink: Any) -> Sink:
    """A Sink from None (drop results), a Sink, a callable ``(info, result)`` or a path."""
    if sink is None:
        return NullSink()
    if isinstance(sink, Sink):
        return sink
    if isinstance(sink, (str, os.PathLike)):
        suffix = Path(sink).suffix.lower()
        if suffix == ".zarr":
            return ZarrSink(sink)
        if suffix in StatsSink.FORMATS:
            return StatsSink(sink)
        raise InvalidArgumentError(
            f"{sink}: no sink for {suffix or 'paths without a suffix'} (use .zarr, .csv, .json, .jsonl or .npy)"
        )
    if callable(sink):
        return CallbackSink(sink)
    raise InvalidArgumentTypeError(f"not a sink: {type(sink).__name__}")
