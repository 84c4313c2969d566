"""Series: the instances of one DICOM series as one stack of frames.

``open_series(paths_or_dir)`` reads every file's header once (a small thread
pool; the files are opened, parsed and closed again), keeps the files of one
Series Instance UID, sorts them along the slice normal and then behaves like a
multi-frame :class:`Instance`: frame ``i`` is frame ``local`` of member ``m``.

Members are reopened on demand and at most ``max_open`` stay open (least recently
used closed first), so a 2,000-file series never holds 2,000 file descriptors.
A frame already in the (shared) cache is served without opening its file.

Sort order, first rule that every member satisfies:

1. Image Position (Patient) along the normal of Image Orientation (Patient)
   (all orientations parallel to the first), ascending; ties by Instance Number.
   For enhanced multi-frame members, the first frame's Plane Position and the
   shared or first per-frame Plane Orientation are used.
2. Instance Number, ascending.
3. File name.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..cache import FrameCache, default_cache
from ..cache.lru import OpenLRU
from ..errors import (
    DcmstreamError,
    DicomFormatError,
    FrameNumberError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SourceError,
)
from ..index import PixelSpec, pixel_spec_from_dataset
from ..io.remote import is_url, list_url
from ..io.walk import walk_files
from .instance import CacheArg, Instance, file_cache_key
from .levels import check_level, level_for_size, representation
from .render import DisplayParams, check_size, display_params, render_array, resize_area, target_shape

__all__ = ["Series", "SeriesMember", "open_series", "DEFAULT_MAX_OPEN"]

#: Members a Series keeps open at once by default.
DEFAULT_MAX_OPEN = 64

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class SeriesMember:
    """One file of a series: where it is and what sorting needs."""

    path: str
    frames: int
    cache_key: tuple[str, ...]
    series_uid: str | None
    sop_instance_uid: str | None
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    shape: tuple[int, ...]
    dtype: str
    #: display parameters of a single-frame grey/RGB member (render without reopening)
    display: DisplayParams | None = None


# -- reading the sort attributes ------------------------------------------------------
def _get(ds: Dataset | None, keyword: str) -> Any:
    if ds is None:
        return None
    try:
        return ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - corrupt values count as absent
        return None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if not isinstance(value, (MultiValue, list, tuple)) or len(value) != n:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _int(value: Any) -> int | None:
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    seq = _get(ds, keyword)
    try:
        return seq[0] if seq else None
    except Exception:  # noqa: BLE001
        return None


def _geometry(ds: Dataset) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    position = _floats(_get(ds, "ImagePositionPatient"), 3)
    orientation = _floats(_get(ds, "ImageOrientationPatient"), 6)
    if position is None or orientation is None:
        # Enhanced multi-frame: the first frame's functional groups.
        first = _first_item(ds, "PerFrameFunctionalGroupsSequence")
        shared = _first_item(ds, "SharedFunctionalGroupsSequence")
        for group in (first, shared):
            if position is None:
                position = _floats(_get(_first_item(group, "PlanePositionSequence"), "ImagePositionPatient"), 3)
            if orientation is None:
                orientation = _floats(_get(_first_item(group, "PlaneOrientationSequence"), "ImageOrientationPatient"), 6)
    return position, orientation


def _member(ds: Dataset, spec: PixelSpec, path: str, cache_key: tuple[str, ...]) -> SeriesMember:
    position, orientation = _geometry(ds)
    uid = _get(ds, "SeriesInstanceUID")
    sop = _get(ds, "SOPInstanceUID")
    display = None
    if spec.number_of_frames == 1 and spec.photometric_interpretation != "PALETTE COLOR":
        display = display_params(ds, 0)
    return SeriesMember(
        path=path,
        frames=spec.number_of_frames,
        cache_key=cache_key,
        series_uid=None if uid is None else str(uid),
        sop_instance_uid=None if sop is None else str(sop),
        instance_number=_int(_get(ds, "InstanceNumber")),
        position=position,  # type: ignore[arg-type]
        orientation=orientation,
        shape=spec.shape,
        dtype=spec.dtype.str,
        display=display,
    )


def _normal(orientation: tuple[float, ...]) -> np.ndarray | None:
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    return None if norm < 1e-6 else n / norm


def sort_members(members: Sequence[SeriesMember]) -> tuple[list[SeriesMember], str]:
    """Members in stack order and the rule used ("position", "instance_number", "file_name")."""
    by_name = sorted(members, key=lambda m: m.path)
    if by_name and all(m.position is not None and m.orientation is not None for m in by_name):
        normal = _normal(by_name[0].orientation)  # type: ignore[arg-type]
        normals = [_normal(m.orientation) for m in by_name]  # type: ignore[arg-type]
        if normal is not None and all(n is not None and abs(float(n @ normal)) > 0.99 for n in normals):
            inf = float("inf")

            def key(m: SeriesMember) -> tuple[float, float, str]:
                inum = m.instance_number if m.instance_number is not None else inf
                return float(np.dot(m.position, normal)), inum, m.path  # type: ignore[arg-type]

            return sorted(by_name, key=key), "position"
    if by_name and all(m.instance_number is not None for m in by_name):
        return sorted(by_name, key=lambda m: (m.instance_number, m.path)), "instance_number"
    return by_name, "file_name"


# -- finding and scanning files -----------------------------------------------------------
def _expand(paths_or_dir: PathArg | Iterable[PathArg], recursive: bool) -> tuple[list[str], bool]:
    """(file paths, whether they came from a directory listing)."""
    if is_url(paths_or_dir):
        # s3://bucket/prefix/ (or gs://): the objects under the prefix; any other URL: one object.
        url = str(paths_or_dir)
        return (list_url(url), True) if url.endswith("/") else ([url], False)
    if isinstance(paths_or_dir, (str, os.PathLike)):
        p = Path(paths_or_dir)
        if p.is_dir():
            return [str(f) for f in walk_files(p, recursive=recursive)], True
        return [str(p)], False
    return [p if is_url(p) else str(Path(p)) for p in paths_or_dir], False


_PIXEL_TAGS = {
    b"\xe0\x7f\x10\x00": "PixelData",
    b"\xe0\x7f\x08\x00": "FloatPixelData",
    b"\xe0\x7f\x09\x00": "DoubleFloatPixelData",
}


def _scan_one(path: str) -> SeriesMember | None:
    """Read one file's header (not its pixels). None: not an image.

    pydicom's buffered reader parses a small header about 3x faster than a full
    :class:`Instance` open; the frame index is built when the member is first
    opened, and checked against what was read here. Deflated files go through
    Instance, whose inflation is bounded.
    """
    if is_url(path):
        return _scan_instance(path)  # read by range requests (the open is cached for the member's open)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            ds = dcmread(fh, stop_before_pixels=True, force=True)
            if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                return _scan_instance(path)
            tag = fh.read(4)
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad input
        raise DicomFormatError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    keyword = _PIXEL_TAGS.get(tag) or _PIXEL_TAGS.get(tag[1::-1] + tag[:1:-1])  # little or big endian
    if keyword is None:
        return None
    spec = pixel_spec_from_dataset(ds, keyword, path)
    return _member(ds, spec, path, file_cache_key(path, st))


def _scan_instance(path: str) -> SeriesMember | None:
    inst = Instance(path, cache=False)
    try:
        return _member(inst.dataset, inst.pixel_spec, path, inst.cache_key) if inst.has_pixels else None
    finally:
        inst.close()


def scan(paths: Sequence[str], *, skip_bad: bool, workers: int | None = None) -> list[SeriesMember]:
    """Read every file's header with a small thread pool (I/O overlaps; parsing holds the GIL)."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)

    def one(path: str) -> SeriesMember | None:
        try:
            member = _scan_one(path)
        except DcmstreamError:
            if skip_bad:
                return None
            raise
        if member is None and not skip_bad:
            raise DicomFormatError(f"{path}: not a DICOM image (no pixel data element)")
        return member

    if len(paths) <= 2 or workers <= 1:
        found = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dcmstream-scan") as pool:
            found = list(pool.map(one, paths))
    return [m for m in found if m is not None]


# -- the series -----------------------------------------------------------------------
class Series:
    """The frames of one series' instances as one stack, read lazily.

    Same frame API as :class:`Instance`: ``len``, :meth:`frame` (with
    ``level=``), :meth:`frames`, :meth:`render`, :meth:`thumbnail`,
    :meth:`encoded_frame`, :meth:`prefetch`, :meth:`is_cached`,
    :meth:`frame_view`, :meth:`to_dask`; :attr:`dataset` and
    :attr:`pixel_spec` are the first member's. Use :func:`open_series`.
    """

    def __init__(
        self,
        members: Sequence[SeriesMember],
        *,
        cache: CacheArg = None,
        max_open: int = DEFAULT_MAX_OPEN,
        sort_rule: str = "given",
        first: Instance | None = None,
    ) -> None:
        if not members:
            raise DicomFormatError("a series needs at least one instance with pixel data")
        if max_open < 1:
            raise InvalidArgumentError("max_open must be >= 1")
        self.members: list[SeriesMember] = list(members)
        self.sort_rule = sort_rule
        self.cache: FrameCache | None = default_cache() if cache is None or cache is True else (cache or None)
        self.max_open = int(max_open)
        counts = np.array([m.frames for m in self.members], dtype=np.int64)
        #: global index of each member's first frame
        self.frame_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._total = int(counts.sum())
        self.cache_key = ("series", *(m.cache_key for m in self.members))
        # Open members; the first one (the series' dataset) is never closed by eviction.
        self._open: OpenLRU[int, Instance] = OpenLRU(self.max_open, keep=lambda inst: inst is self._first)
        self._lock = threading.RLock()
        self._closed = False
        self._check_uniform()
        if first is None:
            first = Instance(self.members[0].path, cache=self.cache if self.cache is not None else False)
        self._first = first
        self._open.put(0, first)
        self._max_level: int | None = None

    def _check_uniform(self) -> None:
        ref = self.members[0]
        odd = [m for m in self.members if (m.shape, m.dtype) != (ref.shape, ref.dtype)]
        if odd:
            listed = ", ".join(f"{Path(m.path).name} {m.shape} {m.dtype}" for m in odd[:5])
            raise DicomFormatError(
                f"series members differ in frame shape or type from {Path(ref.path).name} {ref.shape} {ref.dtype}: {listed}"
                + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
            )

    # -- properties --------------------------------------------------------------
    @property
    def dataset(self) -> Dataset:
        """The first member's dataset (without pixel data)."""
        return self._first.dataset

    @property
    def pixel_spec(self) -> PixelSpec:
        """The first member's pixel description (every member has the same frame shape)."""
        return self._first.pixel_spec

    @property
    def series_uid(self) -> str | None:
        return self.members[0].series_uid

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_count(self) -> int:
        """How many members are open (hold a file descriptor) now."""
        return len(self._open)

    def __len__(self) -> int:
        return self._total

    @property
    def max_level(self) -> int:
        """The first member's :attr:`Instance.max_level` (members are assumed alike)."""
        if self._max_level is None:
            with self._use(0) as inst:
                self._max_level = inst.max_level
        return self._max_level

    # -- members -----------------------------------------------------------------
    def locate(self, i: int) -> tuple[int, int]:
        """(member index, frame within that member) of global frame ``i``."""
        if self._closed:
            raise SourceError("the series is closed")
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise InvalidArgumentTypeError(f"frame index must be an integer, not {type(i).__name__}")
        n = self._total
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise FrameNumberError(f"frame {i} out of range (0..{n - 1})")
        m = int(np.searchsorted(self.frame_offsets, j, side="right")) - 1
        return m, j - int(self.frame_offsets[m])

    @contextmanager
    def _use(self, m: int) -> Iterator[Instance]:
        """Member ``m`` opened (or kept open) and pinned against LRU closing while in use."""
        if self._closed:
            raise SourceError("the series is closed")
        with self._open.use(m, lambda: self._reopen(m)) as inst:
            yield inst

    def _reopen(self, m: int) -> Instance:
        member = self.members[m]
        inst = Instance(member.path, cache=self.cache if self.cache is not None else False)
        if len(inst) != member.frames or inst.pixel_spec.shape != member.shape:
            inst.close()
            raise DicomFormatError(f"{member.path}: changed since the series was opened")
        return inst

    def instance(self, m: int) -> Instance:
        """Member ``m`` as an open Instance (it may be closed later by the LRU; do not keep it)."""
        with self._use(m) as inst:
            return inst

    # -- frames ------------------------------------------------------------------
    def _level(self, level: int | None) -> int:
        if level is None:
            return 0
        if isinstance(level, (int, np.integer)) and not isinstance(level, bool) and level == 0:
            return 0
        check_level(level, 0)
        return check_level(level, self.max_level)

    def _cached(self, m: int, local: int, rep: str) -> np.ndarray | None:
        """A cached value of member ``m`` without opening its file."""
        cache = self.cache
        if cache is None:
            return None
        key = (self.members[m].cache_key, local, rep)
        return cache.get(key) if cache.peek(key) else None

    def frame(self, i: int, level: int = 0) -> np.ndarray:
        """Frame ``i`` of the stack (see :meth:`Instance.frame`)."""
        m, local = self.locate(i)
        k = self._level(level)
        hit = self._cached(m, local, representation(k))
        if hit is not None:
            return hit
        with self._use(m) as inst:
            return inst.frame(local, level=k)

    def frames(self, indices: Iterable[int] | None = None, level: int = 0) -> Iterator[np.ndarray]:
        """Yield frames lazily, in stack order."""
        for i in range(len(self)) if indices is None else indices:
            yield self.frame(i, level=level)

    def encoded_frame(self, i: int) -> bytes:
        """The stored bytes of frame ``i`` (see :meth:`Instance.encoded_frame`)."""
        m, local = self.locate(i)
        with self._use(m) as inst:
            return inst.encoded_frame(local)

    def prefetch(self, i: int, level: int = 0) -> None:
        """Decode frame ``i`` into the cache as a prefetch (no-op without cache or when cached)."""
        m, local = self.locate(i)
        k = self._level(level)
        if self.cache is None or self.cache.peek((self.members[m].cache_key, local, representation(k))):
            return
        with self._use(m) as inst:
            inst.prefetch(local, level=k)

    def is_cached(self, i: int, level: int = 0) -> bool:
        """Whether frame ``i`` is decoded in the cache now (no file is opened)."""
        if self.cache is None:
            return False
        m, local = self.locate(i)
        return self.cache.peek((self.members[m].cache_key, local, representation(self._level(level))))

    def frame_view(self, i: int) -> np.ndarray:
        """Frame ``i`` as a read-only file mapping where possible (see :meth:`Instance.frame_view`)."""
        m, local = self.locate(i)
        with self._use(m) as inst:
            return inst.frame_view(local)

    # -- display -----------------------------------------------------------------
    def render(
        self, i: int, window: tuple[float, float] | None = None, size: int | None = None, level: int | None = None
    ) -> np.ndarray:
        """Frame ``i`` as uint8 for display (see :meth:`Instance.render`)."""
        m, local = self.locate(i)
        spec = self.pixel_spec
        if size is not None:
            size = check_size(size)
        if level is None:
            level = 0 if size is None else level_for_size(spec.rows, spec.columns, size, self.max_level)
        arr = self.frame(i, level=level)
        params = self.members[m].display
        if params is not None:
            out = render_array(arr, params, window)
        else:
            with self._use(m) as inst:
                out = inst.renderer.render(arr, local, window)
        if size is not None:
            out = resize_area(out, *target_shape(spec.rows, spec.columns, size))
        return out

    def thumbnail(self, i: int, size: int = 128) -> np.ndarray:
        """:meth:`render` at ``size`` with the file's window; cached like :meth:`Instance.thumbnail`."""
        m, local = self.locate(i)
        size = check_size(size)
        if self.cache is None:
            return self.render(i, size=size)
        key = (self.members[m].cache_key, local, f"thumb{size}")
        return self.cache.get_or_load(key, lambda: self.render(i, size=size), timed=False)

    def to_dask(self, level: int = 0):  # noqa: ANN201 - dask.array.Array
        """A lazy dask array (frames, rows, columns[, samples]), one chunk per frame."""
        from .arrays import series_to_dask

        return series_to_dask(self, self._level(level))

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Close every open member."""
        with self._lock:
            self._closed = True
        self._open.close_all()

    def purge(self) -> int:
        """Drop every member's frames from the cache."""
        if self.cache is None:
            return 0
        return sum(self.cache.purge(m.cache_key) for m in self.members)

    def __enter__(self) -> "Series":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        spec = self.pixel_spec
        return (
            f"<Series {self.series_uid} instances={len(self.members)} frames={len(self)} "
            f"{spec.rows}x{spec.columns} sorted_by={self.sort_rule}>"
        )


def _describe(groups: dict[str | None, list[SeriesMember]]) -> str:
    parts = []
    for uid, ms in groups.items():
        parts.append(f"{uid} ({len(ms)} files, e.g. {Path(ms[0].path).name})")
    return "; ".join(parts)


def open_series(
    paths_or_dir: PathArg | Iterable[PathArg],
    *,
    cache: CacheArg = None,
    series_uid: str | None = None,
    max_open: int = DEFAULT_MAX_OPEN,
    recursive: bool = False,
    workers: int | None = None,
) -> Series:
    """Open the instances of one series as one lazily read stack of frames.

    ``paths_or_dir`` is a directory (its files; ``recursive=True`` for sub-folders),
    an ``s3://bucket/prefix/`` or ``gs://bucket/prefix/`` (the objects under it, read
    by range requests) or an iterable of file paths or URLs. Every header is read now, with a thread pool
    of ``workers``, to sort the stack (see the module docstring); in a directory,
    files that are not DICOM images are skipped. When the files hold several
    series, pass ``series_uid=`` to pick one, otherwise DicomFormatError lists
    them. ``cache`` is shared by all members (None: the process-wide cache,
    False: none); at most ``max_open`` members keep a file open.
    """
    paths, listed = _expand(paths_or_dir, recursive)
    if not paths:
        raise DicomFormatError(f"{paths_or_dir}: no files")
    members = scan(paths, skip_bad=listed, workers=workers)
    skipped = len(paths) - len(members)
    if skipped and listed:
        warnings.warn(f"{paths_or_dir}: skipped {skipped} file(s) that are not DICOM images", stacklevel=2)
    if not members:
        raise DicomFormatError(f"{paths_or_dir}: no DICOM images found")
    groups: dict[str | None, list[SeriesMember]] = {}
    for m in members:
        groups.setdefault(m.series_uid, []).append(m)
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomFormatError(f"series {series_uid} is not among the files; found {_describe(groups)}")
        members = groups[series_uid]
    elif len(groups) > 1:
        raise DicomFormatError(
            f"the files hold {len(groups)} series; pass series_uid= to choose one: {_describe(groups)}"
        )
    ordered, rule = sort_members(members)
    return Series(ordered, cache=cache, max_open=max_open, sort_rule=rule)
