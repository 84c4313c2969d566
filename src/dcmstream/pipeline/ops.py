"""Ready-made operations (what ``dcmstream process --op`` runs): a ``fn`` plus a sink each.

* ``stats``: per frame min, max, mean (exact integer sum for integer data), std and
  pixel count; records to CSV/JSON/JSONL/NPY, and a cohort summary.
* ``histogram``: the histogram of stored values over the whole cohort; integer data is
  counted exactly per value (``bincount`` over the frame's own range, so a 12-bit CT
  frame sends ~4,096 counters to the sink, not 65,536); CSV/JSON/NPY of (value, count).
* ``mip``: maximum intensity projection per series (frames of every instance of a
  series, or the frames of one multi-frame instance), in the stored dtype; one ``.npy``
  and one windowed ``.png`` per series.
* ``to-zarr``: every frame (or tile) into a Zarr store, in the narrowest dtype that holds
  Bits Stored.
* ``thumbnails``: a PNG of the middle frame of every instance, windowed as the file says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from .dtypes import storage_dtype
from .items import Frame, InstanceItem, ItemInfo, Tile
from .sinks import ListSink, Sink, StatsSink, ZarrSink

__all__ = ["OPS", "Operation", "operation", "frame_stats", "frame_histogram"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def frame_stats(item: Frame | Tile) -> dict[str, Any]:
    """min, max, mean, std and count of an item's pixels (exact sums for integers)."""
    a = item.array if not isinstance(item, Tile) else item.core_array
    n = int(a.size)
    if a.dtype.kind in "iub":
        total = int(a.sum(dtype=np.int64))
        mean = total / n
        return {"count": n, "min": int(a.min()), "max": int(a.max()), "sum": total, "mean": mean,
                "std": float(a.std(dtype=np.float64))}
    return {"count": n, "min": float(a.min()), "max": float(a.max()), "sum": float(a.sum(dtype=np.float64)),
            "mean": float(a.mean(dtype=np.float64)), "std": float(a.std(dtype=np.float64))}


def frame_histogram(item: Frame | Tile) -> tuple[int, np.ndarray]:
    """(lowest value, counts from it upwards) of an integer item; floats: 256 bins of [min, max]."""
    a = item.array if not isinstance(item, Tile) else item.core_array
    if a.dtype.kind in "iub":
        lo = int(a.min())
        hi = int(a.max())
        shifted = a.astype(np.int64) - lo if lo or a.dtype.kind == "i" else a
        return lo, np.bincount(shifted.ravel(), minlength=hi - lo + 1)
    raise InvalidArgumentTypeError("the histogram operation counts integer pixel values (use values='stored')")


class HistogramSink(Sink):
    """Adds per-item (offset, counts) into one histogram; writes (value, count) rows."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self.lo: int | None = None
        self.counts = np.zeros(0, np.int64)

    def write(self, info: ItemInfo, result: Any) -> None:
        lo, counts = result
        if self.lo is None:
            self.lo, self.counts = lo, counts.astype(np.int64)
            return
        new_lo = min(self.lo, lo)
        new_hi = max(self.lo + len(self.counts), lo + len(counts))
        if new_lo != self.lo or new_hi != self.lo + len(self.counts):
            grown = np.zeros(new_hi - new_lo, np.int64)
            grown[self.lo - new_lo : self.lo - new_lo + len(self.counts)] = self.counts
            self.lo, self.counts = new_lo, grown
        self.counts[lo - self.lo : lo - self.lo + len(counts)] += counts

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        if self.lo is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        nz = np.nonzero(self.counts)[0]
        return nz + self.lo, self.counts[nz]

    def close(self) -> str | None:
        if self.path is None:
            return None
        values, counts = self.table()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            np.save(self.path, np.stack([values, counts], axis=1))
        elif suffix == ".json":
            import json

            self.path.write_text(json.dumps({"value": values.tolist(), "count": counts.tolist()}) + "\n")
        else:
            with open(self.path, "w") as fh:
                fh.write("value,count\n")
                for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                    fh.write(f"{v},{c}\n")
        return str(self.path)


class MipSink(Sink):
    """Running maximum per series (or per instance without a Series Instance UID).

    ``window`` (center, width) windows the grey PNGs; it is in *stored* values, because
    the MIP is kept in the stored dtype and a series' frames need not share one rescale.
    Without it each PNG spans its own MIP's range (lowest value black, highest white).
    """

    def __init__(self, outdir: str | os.PathLike[str] | None, window: tuple[float, float] | None = None) -> None:
        self.outdir = None if outdir is None else Path(outdir)
        self.window = window
        self.mips: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def write(self, info: ItemInfo, result: Any) -> None:
        arr = np.asarray(result)
        key = (info.series_uid or info.source, arr.shape)
        acc = self.mips.get(key)
        if acc is None:
            self.mips[key] = np.array(arr)
        else:
            np.maximum(acc, arr, out=acc)

    def close(self) -> str | None:
        if self.outdir is None:
            return None
        self.outdir.mkdir(parents=True, exist_ok=True)
        import imagecodecs

        from ..image.render import DisplayParams, render_array

        names: set[str] = set()
        for (key, _shape), mip in self.mips.items():
            name = _SAFE.sub("_", Path(key).stem if os.sep in key else key).strip("_") or "series"
            base, n = name, 1
            while name in names:
                n += 1
                name = f"{base}-{n}"
            names.add(name)
            np.save(self.outdir / f"{name}.mip.npy", mip)
            if mip.ndim == 2:
                # Stored values, no rescale: identity modality step, then the window (or the range).
                params = DisplayParams(bits_stored=8 * mip.dtype.itemsize, signed=mip.dtype.kind == "i")
                png = render_array(mip, params, self.window)
            else:
                png = mip.astype(np.uint8)
            (self.outdir / f"{name}.mip.png").write_bytes(imagecodecs.png_encode(np.ascontiguousarray(png)))
        return str(self.outdir)


class PngSink(Sink):
    """uint8 results as ``OUTDIR/<source stem>.png``."""

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.outdir = Path(outdir)
        self.names: set[str] = set()
        self.count = 0

    def write(self, info: ItemInfo, result: Any) -> None:
        import imagecodecs

        self.outdir.mkdir(parents=True, exist_ok=True)
        name = _SAFE.sub("_", Path(info.source).stem).strip("_") or "image"
        base, n = name, 1
        while name in self.names:
            n += 1
            name = f"{base}-{n}"
        self.names.add(name)
        (self.outdir / f"{name}.png").write_bytes(imagecodecs.png_encode(np.ascontiguousarray(result)))
        self.count += 1

    def close(self) -> str:
        return str(self.outdir)


@dataclass(frozen=True)
class Operation:
    """A named operation: ``fn``, its unit, and a sink factory for an output path."""

    name: str
    fn: Callable[[Any], Any]
    unit: str
    make_sink: Callable[[str | None], Sink]
    values: str = "stored"
    help: str = ""


def _thumbnail(size: int) -> Callable[[InstanceItem], np.ndarray]:
    def thumb(item: InstanceItem) -> np.ndarray:
        inst = item.instance
        return inst.thumbnail(len(inst) // 2, size)

    return thumb


def _mip_fn(item: Frame) -> np.ndarray:
    return item.array


def _zarr_fn(item: Frame | Tile) -> np.ndarray:
    """The item in the narrowest dtype that holds its Bits Stored (8 bits in 16: uint8)."""
    a = item.array
    info = item.info
    if info is not None and info.bits_stored and a.dtype.kind in "iu":
        return a.astype(storage_dtype(a.dtype, info.bits_stored, a.dtype.kind == "i"), copy=False)
    return a


def _stats_sink(path: str | None) -> Sink:
    return StatsSink(path) if path else ListSink()


OPS: dict[str, Operation] = {
    "stats": Operation("stats", frame_stats, "frame", _stats_sink, help="per-frame min/max/mean/std"),
    "histogram": Operation("histogram", frame_histogram, "frame", HistogramSink, help="cohort histogram of stored values"),
    "mip": Operation("mip", _mip_fn, "frame", MipSink, help="maximum intensity projection per series"),
    "to-zarr": Operation("to-zarr", _zarr_fn, "frame", lambda p: ZarrSink(p or "out.zarr"),
                         help="frames (or tiles) into a Zarr store"),
    "thumbnails": Operation("thumbnails", _thumbnail(256), "instance", lambda p: PngSink(p or "thumbnails"),
                            help="PNG of every instance's middle frame"),
}


def operation(name: str, *, thumbnail_size: int = 256, mip_window: tuple[float, float] | None = None) -> Operation:
    """The operation ``name``; ``thumbnail_size`` and ``mip_window`` (stored values) tune theirs."""
    if name not in OPS:
        raise InvalidArgumentError(f"unknown operation {name!r}; choose from {', '.join(OPS)}")
    op = OPS[name]
    if name == "thumbnails" and thumbnail_size != 256:
        op = Operation(op.name, _thumbnail(thumbnail_size), op.unit, op.make_sink, op.values, op.help)
    if name == "mip" and mip_window is not None:
        op = Operation(op.name, op.fn, op.unit, lambda p: MipSink(p, mip_window), op.values, op.help)
    return op
