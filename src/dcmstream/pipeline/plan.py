"""The planner: inputs -> WorkRefs, lazily, one instance header at a time.

Per ``unit``:

* ``frame``: every frame of every instance (a TILED_FULL slide's frames are its stored tiles).
* ``tile``: a :func:`~dcmstream.pipeline.tiles.tile_grid` over every frame, or over a
  slide's total pixel matrix. Several instances of one slide (same Series Instance UID,
  different total sizes: a pyramid) are processed at their largest level only; the
  smaller levels serve region-of-interest selection.
* ``instance``: every instance.
* ``series``: the instances grouped by Series Instance UID (all headers are read first,
  to group and sort them; see :func:`dcmstream.open_series`).

Region of interest (``roi=predicate``): the predicate gets a low-resolution image and
returns a boolean mask of its shape (or one bool). Only tiles whose core touches a
True pixel of the mask (frames: with any True pixel) are planned, so nothing else is
ever decoded at full resolution. The low-resolution image is, in order of preference,
a smaller pyramid level of the same slide (the largest one at most ``2**roi_level``
times smaller), the frame at ``level=roi_level`` (JPEG 2000 / HTJ2K decode only the
coarse wavelet levels; other syntaxes are decoded and decimated), or a slide's stored
tiles at that level put side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DcmstreamError, DicomFormatError, InvalidArgumentError
from ..image.levels import level_shape
from ..io.remote import is_url
from .items import Failure, ItemInfo
from .sources import ImageInfo, InputRef, Opener, image_info, iter_inputs
from .tiles import SlideGeometry, read_region, tile_grid
from .work import WorkRef

__all__ = ["Planner", "RoiPredicate"]

RoiPredicate = Callable[[np.ndarray], Any]


def _is_dicom(path: str, exc: BaseException | None = None) -> bool:
    if is_url(path):
        # An object under a listed prefix: one that did not parse as DICOM (and is not
        # named .dcm) is not DICOM; a network failure is a failure (not read here: a request).
        return not isinstance(exc, DicomFormatError) or path.lower().endswith((".dcm", ".dicom"))
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # let opening report it
    return head[128:132] == b"DICM" or path.lower().endswith((".dcm", ".dicom"))


def _scaled(geo: SlideGeometry, level: int) -> SlideGeometry:
    if not level:
        return geo
    f = 1 << level
    return SlideGeometry(-(-geo.total_rows // f), -(-geo.total_columns // f), -(-geo.tile_rows // f), -(-geo.tile_columns // f))


@dataclass
class PlanStats:
    inputs: int = 0
    skipped: int = 0  # files that are not DICOM images
    planned: int = 0
    selected_out: int = 0  # items the region-of-interest predicate left out
    done: bool = False
    failures: list[Failure] = field(default_factory=list)


class Planner:
    """Iterate WorkRefs for one run (see the module docstring)."""

    def __init__(
        self,
        sources: Any,
        *,
        unit: str,
        opener: Opener,
        level: int = 0,
        tile_size: int | tuple[int, int] = 1024,
        overlap: int = 0,
        roi: RoiPredicate | None = None,
        roi_level: int = 3,
    ) -> None:
        self.sources = sources
        self.unit = unit
        self.opener = opener
        self.level = level
        self.tile_size = tile_size
        self.overlap = overlap
        self.roi = roi
        self.roi_level = roi_level
        self.stats = PlanStats()
        self._seq = 0

    # -- helpers --------------------------------------------------------------------------
    def _next_seq(self) -> int:
        s = self._seq
        self._seq += 1
        return s

    def _fail(self, name: str, stage: str, exc: BaseException) -> None:
        self.stats.failures.append(Failure.of(name, stage, exc))

    def _open(self, ref: InputRef) -> ImageInfo | None:
        try:
            with self.opener.use(ref) as inst:
                if not getattr(inst, "has_pixels", True):
                    self.stats.skipped += 1
                    return None
                return image_info(inst)
        except Exception as exc:  # noqa: BLE001 - bad input is normal input: record it, go on
            # A file without the DICM marker (and no .dcm name) is not DICOM at all: it is
            # skipped, not failed. Checked only now, so valid files are opened once.
            if ref.kind == "file" and ref.path is not None and not _is_dicom(ref.path, exc):
                self.stats.skipped += 1
            else:
                self._fail(ref.name, "open", exc)
            return None

    # -- iteration -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[WorkRef]:
        try:
            if self.unit == "series":
                yield from self._series()
            else:
                slides: dict[str, list[tuple[InputRef, ImageInfo]]] = {}
                for ref in iter_inputs(self.sources):
                    self.stats.inputs += 1
                    info = self._open(ref)
                    if info is None:
                        continue
                    if self.unit == "tile" and info.slide is not None and info.slide_kind == "VOLUME" and info.series_uid:
                        slides.setdefault(info.series_uid, []).append((ref, info))
                        continue
                    yield from self._refs(ref, info)
                for group in slides.values():
                    yield from self._slide_group(group)
        finally:
            self.stats.done = True

    def _base(self, ref: InputRef, info: ImageInfo, **kw: Any) -> ItemInfo:
        # A slide's tiles are cut from one plane (its total pixel matrix), not from its frames.
        frames = 1 if self.unit == "tile" and info.slide is not None else info.frames
        return ItemInfo(seq=self._next_seq(), unit=self.unit, source=ref.name, frames=frames,
                        image_shape=info.plane_shape(self.level), dtype=info.dtype, level=self.level,
                        series_uid=info.series_uid, bits_stored=info.bits_stored, **kw)

    def _refs(self, ref: InputRef, info: ImageInfo, lowres: Callable[[int], np.ndarray] | None = None) -> Iterator[WorkRef]:
        if self.unit == "instance":
            self.stats.planned += 1
            yield WorkRef(self._base(ref, info), ref)
            return
        if self.unit == "frame":
            for i in range(info.frames):
                if self.roi is not None and not self._frame_selected(ref, info, i):
                    self.stats.selected_out += 1
                    continue
                self.stats.planned += 1
                yield WorkRef(self._base(ref, info, frame=i), ref)
            return
        # tiles of every frame, or of a slide's total pixel matrix
        plane = info.plane_shape(self.level)
        slide = _scaled(info.slide, self.level) if info.slide is not None else None
        frames = [0] if slide is not None else range(info.frames)
        from .tiles import grid_shape

        gshape = grid_shape(plane[0], plane[1], self.tile_size)
        for i in frames:
            mask = None
            if self.roi is not None:
                try:
                    mask = self._mask(lowres(i) if lowres is not None else self._lowres(ref, info, i))
                except Exception as exc:  # noqa: BLE001 - one unreadable frame, not the run
                    self._fail(f"{ref.name}#{i}", "roi", exc)
                    continue
                if mask is False:
                    self.stats.selected_out += math.prod(gshape)
                    continue
            for t in tile_grid(plane[0], plane[1], self.tile_size, self.overlap):
                if isinstance(mask, np.ndarray) and not _touches(mask, plane, t.core):
                    self.stats.selected_out += 1
                    continue
                self.stats.planned += 1
                yield WorkRef(
                    self._base(ref, info, frame=i, y=t.y, x=t.x, height=t.height, width=t.width, core=t.core,
                               grid=t.grid, grid_shape=gshape),
                    ref, slide=slide,
                )

    # -- region of interest ---------------------------------------------------------------------
    def _mask(self, low: np.ndarray) -> np.ndarray | bool:
        assert self.roi is not None
        m = self.roi(low)
        if isinstance(m, (bool, np.bool_)) or np.ndim(m) == 0:
            return bool(m)
        m = np.asarray(m, dtype=bool)
        if m.shape != low.shape[:2]:
            raise InvalidArgumentError(
                f"the roi predicate returned a mask of shape {m.shape} for an image of shape {low.shape[:2]}"
            )
        return m

    def _lowres(self, ref: InputRef, info: ImageInfo, frame: int) -> np.ndarray:
        with self.opener.use(ref) as inst:
            k = min(self.roi_level, getattr(inst, "max_level", self.roi_level))
            if info.slide is None:
                return inst.frame(frame, level=k)
            geo = _scaled(info.slide, k)
            return read_region(geo, lambda f: inst.frame(f, level=k), 0, 0, geo.total_rows, geo.total_columns)

    def _frame_selected(self, ref: InputRef, info: ImageInfo, frame: int) -> bool:
        try:
            m = self._mask(self._lowres(ref, info, frame))
        except Exception as exc:  # noqa: BLE001 - recorded as a failure of this frame
            self._fail(f"{ref.name}#{frame}", "roi", exc)
            return False
        return bool(m) if isinstance(m, bool) else bool(m.any())

    def _slide_group(self, group: list[tuple[InputRef, ImageInfo]]) -> Iterator[WorkRef]:
        """A slide given as several pyramid levels: tiles of the largest, ROI from a smaller one."""
        group.sort(key=lambda ri: -(ri[1].slide.total_rows * ri[1].slide.total_columns))  # type: ignore[union-attr]
        base_ref, base = group[0]
        lowres = None
        if self.roi is not None and len(group) > 1:
            wanted = 1 << self.roi_level
            bcols = base.slide.total_columns  # type: ignore[union-attr]
            candidates = [(r, i) for r, i in group[1:] if bcols / i.slide.total_columns <= wanted * 1.01]  # type: ignore[union-attr]
            if candidates:
                low_ref, low_info = candidates[-1]
                geo = low_info.slide
                assert geo is not None

                def lowres(_frame: int) -> np.ndarray:
                    with self.opener.use(low_ref) as inst:
                        return read_region(geo, lambda f: inst.frame(f), 0, 0, geo.total_rows, geo.total_columns)

        yield from self._refs(base_ref, base, lowres)

    # -- series --------------------------------------------------------------------------
    def _series(self) -> Iterator[WorkRef]:
        from ..image.series import scan, sort_members

        paths = []
        for ref in iter_inputs(self.sources):
            self.stats.inputs += 1
            if ref.kind != "file" or ref.path is None:
                self._fail(ref.name, "open", DcmstreamError("unit='series' reads local files only"))
                continue
            if _is_dicom(ref.path):
                paths.append(ref.path)
            else:
                self.stats.skipped += 1
        members = scan(paths, skip_bad=True)
        self.stats.skipped += len(paths) - len(members)
        groups: dict[str | None, list[Any]] = {}
        for m in members:
            groups.setdefault(m.series_uid, []).append(m)
        for uid, ms in groups.items():
            ordered, _ = sort_members(ms)
            frames = sum(m.frames for m in ordered)
            self.stats.planned += 1
            info = ItemInfo(seq=self._next_seq(), unit="series", source=uid or ordered[0].path, frames=frames,
                            image_shape=level_shape(tuple(ordered[0].shape), 0), dtype=ordered[0].dtype, series_uid=uid)
            yield WorkRef(info, None, paths=tuple(m.path for m in ordered))


def _touches(mask: np.ndarray, plane: tuple[int, ...], core: tuple[int, int, int, int]) -> bool:
    """Whether the low-res ``mask`` has a True pixel over the full-res ``core`` region."""
    mh, mw = mask.shape
    fy, fx = plane[0] / mh, plane[1] / mw
    cy, cx, ch, cw = core
    y0, y1 = int(cy // fy), max(int(cy // fy) + 1, math.ceil((cy + ch) / fy))
    x0, x1 = int(cx // fx), max(int(cx // fx) + 1, math.ceil((cx + cw) / fx))
    return bool(mask[y0:y1, x0:x1].any())
