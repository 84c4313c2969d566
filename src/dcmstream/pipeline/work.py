"""Work items: what the planner hands out, how a worker turns one into an item, runs ``fn``.

A :class:`WorkRef` is small and picklable (an :class:`ItemInfo` plus an
:class:`InputRef`), so the same reading code runs in a producer thread, in a worker
process and on a dask worker. :func:`process_batch` is the remote entry point: it reads
and processes a batch of refs where it runs and returns results (or failures) only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..cache import FrameCache
from ..errors import InvalidArgumentTypeError
from ..image import Instance
from .dtypes import modality_dtype, to_modality
from .items import Failure, Frame, InstanceItem, ItemInfo, SeriesItem, Tile
from .sources import InputRef, Opener, PipelineImage
from .tiles import SlideGeometry, read_region

__all__ = [
    "ReadOptions",
    "WorkRef",
    "decoded_of",
    "encoded_of",
    "failure_of",
    "process_batch",
    "read_item",
    "values_of",
]


@dataclass(frozen=True)
class ReadOptions:
    """How items are read (shared by every worker of a run)."""

    unit: str = "frame"
    level: int = 0
    values: str = "stored"
    window: tuple[float, float] | None = None
    tile_cache_bytes: int = 0  # decoded frames kept for the tiles cut from them
    slide_levels: int = 0


@dataclass(frozen=True)
class WorkRef:
    """One unit of work: where it is (``input``) and what it is (``info``)."""

    info: ItemInfo
    input: InputRef | None = None
    paths: tuple[str, ...] = ()  # members of a series (unit="series")
    slide: SlideGeometry | None = None  # TILED_FULL geometry at the read level


def values_of(inst: PipelineImage, arr: np.ndarray, frame: int, opts: ReadOptions) -> np.ndarray:
    """``arr`` (stored values of ``frame`` or part of it) in the view ``opts.values`` asks for.

    ``inst`` is what :class:`~.sources.Opener` opens (an :class:`~dcmstream.Instance` or a
    :class:`~.sources.DicomWebInstance`); both build their ``renderer`` once.
    """
    if opts.values == "stored":
        return arr
    if opts.values == "uint8":
        return inst.renderer.render(arr, frame, opts.window)
    p = inst.renderer.params(frame)
    if p.modality_lut is not None:
        return p.modality_lut.apply(arr)
    spec = inst.pixel_spec
    if arr.dtype.kind not in "iu":
        return arr.astype(np.float64) * p.slope + p.intercept
    dt = modality_dtype(spec.bits_stored, bool(spec.pixel_representation), p.slope, p.intercept)
    return to_modality(arr, p.slope, p.intercept, dt)


def _owned(arr: np.ndarray) -> np.ndarray:
    """A writable array of its own (cached frames are shared and read-only)."""
    return arr if arr.flags.writeable and arr.base is None else np.array(arr)


def read_item(ref: WorkRef, opener: Opener, opts: ReadOptions) -> tuple[Any, Callable[[], object] | None]:
    """(item for ``fn``, a release callback or None). Raises what reading raises."""
    info = ref.info
    if info.unit == "series":
        from ..image.series import open_series

        series = open_series(list(ref.paths), cache=False)
        return SeriesItem(info.series_uid, ref.paths, series, info), series.close

    assert ref.input is not None
    if info.unit == "instance":
        ctx = opener.use(ref.input)
        inst = ctx.__enter__()
        return InstanceItem(info.source, inst, info), lambda: ctx.__exit__(None, None, None)

    with opener.use(ref.input) as inst:
        if info.unit == "frame":
            frame = info.frame
            assert frame is not None  # the planner numbers every frame item
            arr = _owned(values_of(inst, inst.frame(frame, level=info.level), frame, opts))
            info = replace(info, nbytes=int(arr.nbytes))
            return Frame(info.source, frame, arr, info.level, info), None
        # tiles: the planner gives each its place (and a frame, 0 for a whole-slide image)
        y, x, height, width = info.y, info.x, info.height, info.width
        assert y is not None and x is not None and height and width
        frame, level = info.frame or 0, info.level
        if ref.slide is not None:
            region = read_region(ref.slide, lambda f: inst.frame(f, level=level), y, x, height, width)
        else:
            region = inst.frame(frame, level=level)[y : y + height, x : x + width]
        arr = _owned(values_of(inst, region, frame, opts))
        info = replace(info, nbytes=int(arr.nbytes))
        core = info.core or (y, x, height, width)
        tile = Tile(info.source, frame, y, x, height, width, arr, core, level, info.grid or (0, 0), info)
        return tile, None


def encoded_of(inst: PipelineImage, ref: WorkRef) -> bytes | None:
    """The stored bytes of a frame item, read through ``inst`` (already in use for a chunk of
    its frames): the I/O half of reading it. None when the source cannot split reading from
    decoding (DICOMweb, whose frames arrive decoded): :func:`read_item` reads those."""
    assert ref.info.frame is not None
    encoded = getattr(inst, "encoded_frame", None)
    return None if encoded is None or not hasattr(inst, "decode") else encoded(ref.info.frame)


def decoded_of(inst: PipelineImage, ref: WorkRef, data: bytes, opts: ReadOptions) -> Frame:
    """The CPU half: decode ``data`` (from :func:`encoded_of`) into the item for ``fn``.

    Only an :class:`~dcmstream.Instance` splits reading from decoding (:func:`encoded_of`
    returns None for every other source), so ``inst`` is one."""
    if not isinstance(inst, Instance):
        raise InvalidArgumentTypeError(f"{type(inst).__name__} has no separate decode step")
    info = ref.info
    frame = info.frame
    assert frame is not None
    level = min(info.level, inst.max_level) if info.level else 0
    arr = _owned(values_of(inst, inst.decode(data, frame, level), frame, opts))
    info = replace(info, nbytes=int(arr.nbytes))
    return Frame(info.source, frame, arr, info.level, info)


def failure_of(info: ItemInfo, stage: str, exc: BaseException) -> Failure:
    """The record of ``exc`` raised while ``stage`` handled the item ``info`` (with its traceback)."""
    return Failure.of(info.key, stage, exc)


# -- remote execution (process pools, dask workers) -----------------------------------------
_openers: dict[int, Opener] = {}
_openers_lock = threading.Lock()


def _process_opener(cache_bytes: int) -> Opener:
    """This process's Opener for a tile-cache size (one per size, kept between batches)."""
    with _openers_lock:
        opener = _openers.get(cache_bytes)
        if opener is None:
            cache = FrameCache(max_bytes=cache_bytes) if cache_bytes else False
            opener = _openers[cache_bytes] = Opener(cache=cache, max_open=16)
        return opener


def process_batch(refs: list[WorkRef], fn: Callable[[Any], Any], opts: ReadOptions) -> list[tuple[ItemInfo, Any, Failure | None]]:
    """Read and process ``refs`` here; return (info, result, failure) per ref, in order."""
    opener = _process_opener(opts.tile_cache_bytes)
    out: list[tuple[ItemInfo, Any, Failure | None]] = []
    for ref in refs:
        try:
            item, release = read_item(ref, opener, opts)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            out.append((ref.info, None, failure_of(ref.info, "read", exc)))
            continue
        info = getattr(item, "info", None) or ref.info
        try:
            result = fn(item)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            out.append((info, None, failure_of(info, "fn", exc)))
        else:
            out.append((info, result, None))
        finally:
            del item
            if release is not None:
                release()
    return out
