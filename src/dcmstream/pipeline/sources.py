"""Inputs of a pipeline: enumerate them lazily, open them anywhere.

``sources`` given to :func:`dcmstream.pipeline.run` may be, alone or in a list:

* a DICOM file, or a folder (walked recursively, sorted, hidden entries skipped; files
  that are not DICOM images are skipped and counted);
* an archive folder (``catalog.sqlite`` + ``objects/``, see :mod:`dcmstream.archive`) or
  an :class:`~dcmstream.archive.Archive`: every catalogued instance;
* a DICOMweb URL: ``http(s)://host/root`` (everything), ``.../studies/UID`` or
  ``.../studies/UID/series/UID`` (needs ``dicomweb-client``); frames are fetched one by
  one as uncompressed octet-streams;
* objects where they lie (:mod:`dcmstream.io.remote`): ``s3://bucket/prefix/`` or
  ``gs://bucket/prefix/`` (every object under the prefix, listed lazily; objects that are
  not DICOM images are skipped and counted), ``s3://bucket/key``, ``gs://bucket/key``, or
  an ``http(s)://`` URL whose path ends in ``.dcm``; each is read by range requests, a
  frame per request.

An :class:`InputRef` names one instance and is picklable (paths and URLs only), so a
worker process or a dask worker opens it itself (:class:`Opener`, a small LRU of open
instances per process).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from ..cache import FrameCache
from ..cache.lru import OpenLRU
from ..codecs.syntaxes import SYNTAXES
from ..errors import (
    DcmstreamError,
    DicomFormatError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
    PathNotFoundError,
)
from ..image import ImageSource
from ..image.levels import decimate, level_for_size, level_shape
from ..image.render import check_size, resize_area, target_shape
from ..index import PixelSpec
from ..io.remote import is_url, iter_url
from ..io.walk import walk_files
from .tiles import SlideGeometry, slide_geometry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..archive import Archive
    from ..image.render import Renderer

__all__ = ["InputRef", "ImageInfo", "iter_inputs", "Opener", "image_info", "DicomWebInstance", "PipelineImage"]

_J2K_SYNTAXES = frozenset(s.uid for s in SYNTAXES if s.family in ("j2k", "htj2k"))


class PipelineImage(ImageSource, Protocol):
    """What an :class:`Opener` opens (an :class:`~dcmstream.Instance` or a
    :class:`DicomWebInstance`): an ImageSource with its display chain, built once per
    instance, which the ``values`` views and the thumbnails op use."""

    @property
    def renderer(self) -> Renderer: ...

    def thumbnail(self, i: int, size: int = 128) -> np.ndarray:
        """Frame ``i`` rendered with the file's window, ``size`` pixels on the longest side."""
        ...


@dataclass(frozen=True)
class InputRef:
    """One instance to process: a local file or a DICOMweb instance (picklable)."""

    name: str
    kind: str = "file"  # "file" or "dicomweb"
    path: str | None = None
    url: str | None = None
    study: str | None = None
    series: str | None = None
    sop: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What enumeration learnt from an instance's header (no pixels read)."""

    frames: int
    shape: tuple[int, ...]  # one frame: (rows, columns[, samples])
    dtype: str
    transfer_syntax: str
    bits_stored: int
    signed: bool
    slide: SlideGeometry | None = None
    series_uid: str | None = None
    slide_kind: str | None = None  # ImageType value 3 of a slide: VOLUME, LABEL, ...

    @property
    def reduces(self) -> bool:
        """Whether reduced levels are decoded natively (JPEG 2000, HTJ2K)."""
        return self.transfer_syntax in _J2K_SYNTAXES

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def plane_shape(self, level: int = 0) -> tuple[int, ...]:
        """Shape of what tiles are cut from: a frame, or a slide's total pixel matrix."""
        if self.slide is not None:
            shape = (self.slide.total_rows, self.slide.total_columns, *self.shape[2:])
        else:
            shape = self.shape
        return level_shape(shape, level)


def _header_dataset(inst: ImageSource) -> Dataset:
    # The header without the per-frame functional groups (Instance.header_dataset): parsing
    # those (one item per frame) is what makes inst.dataset slow on enhanced multi-frames.
    ds = getattr(inst, "header_dataset", None)
    return ds if ds is not None else inst.dataset


def image_info(inst: ImageSource) -> ImageInfo:
    """ImageInfo of an opened :class:`~dcmstream.Instance` (or DicomWebInstance)."""
    spec: PixelSpec = inst.pixel_spec
    ds = _header_dataset(inst)
    n = len(inst)
    geo = slide_geometry(ds, spec.rows, spec.columns, n)
    kind = None
    if geo is not None:
        try:
            image_type = list(ds.get("ImageType", []) or [])
            kind = str(image_type[2]).upper() if len(image_type) > 2 else "VOLUME"
        except Exception:  # noqa: BLE001 - a malformed ImageType does not stop a run
            kind = "VOLUME"
    uid = ds.get("SeriesInstanceUID", None) if hasattr(ds, "get") else None
    return ImageInfo(
        frames=n,
        shape=tuple(spec.shape),
        dtype=spec.dtype.str,
        transfer_syntax=str(inst.transfer_syntax),
        bits_stored=int(spec.bits_stored),
        signed=bool(spec.pixel_representation),
        slide=geo,
        series_uid=None if uid is None else str(uid),
        slide_kind=kind,
    )


# -- enumeration ----------------------------------------------------------------------------
def _walk(path: Path) -> Iterator[Path]:
    return walk_files(path)


def _archive_refs(archive: Archive) -> Iterator[InputRef]:
    """Every catalogued instance of an archive whose blob store keeps local files."""
    for record in archive.iter_records():
        path = archive.store_of(record).local_path(record.blob_key)
        if path is None:
            raise DcmstreamError(f"{archive.root}: the pipeline reads archives whose blob store keeps local files")
        yield InputRef(name=f"{archive.root.name}/{record.blob_key}", path=str(path), sop=record.sop_uid,
                       study=record.study_uid, series=record.series_uid)


def _dicomweb_refs(url: str) -> Iterator[InputRef]:
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise MissingDependencyError("DICOMweb inputs need dicomweb-client: pip install dicomweb-client") from exc
    root, study, series = url.rstrip("/"), None, None
    parts = root.split("/studies/", 1)
    if len(parts) == 2:
        root, rest = parts
        bits = rest.split("/series/", 1)
        study = bits[0]
        series = bits[1] if len(bits) == 2 else None
    client = DICOMwebClient(url=root)
    found = client.search_for_instances(study_instance_uid=study, series_instance_uid=series, get_remaining=True)

    def value(d: dict[str, Any], tag: str) -> str | None:
        v = d.get(tag, {}).get("Value")
        return str(v[0]) if v else None

    for d in found:
        st, se, sop = value(d, "0020000D"), value(d, "0020000E"), value(d, "00080018")
        if st and se and sop:
            yield InputRef(name=f"{root}/studies/{st}/series/{se}/instances/{sop}", kind="dicomweb",
                           url=root, study=st, series=se, sop=sop)


def iter_inputs(sources: Any) -> Iterator[InputRef]:
    """InputRefs of every instance ``sources`` names, lazily (see the module docstring)."""
    from ..archive import Archive  # here: SQLAlchemy costs ~0.1 s at import, most runs read files

    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Iterable):
        sources = [sources]
    for src in sources:
        if isinstance(src, InputRef):
            yield src
            continue
        if isinstance(src, Archive):
            yield from _archive_refs(src)
            continue
        if isinstance(src, str) and is_url(src):
            if src.lower().startswith(("s3://", "gs://")):
                urls = iter_url(src) if src.endswith("/") else iter([src])
                for url in urls:
                    yield InputRef(name=url, path=url)
            elif urlsplit(src).path.lower().endswith(".dcm"):
                yield InputRef(name=src, path=src)  # one file on a web server, read by range
            else:
                yield from _dicomweb_refs(src)
            continue
        if not isinstance(src, (str, os.PathLike)):
            raise InvalidArgumentTypeError(f"cannot read pipeline inputs from {type(src).__name__}")
        path = Path(src)
        if path.is_dir():
            if Archive.is_archive(path):
                # Read-only use: no fsync, no frame cache (workers open the files themselves).
                with Archive(path, cache=False, fsync=False) as archive:
                    yield from _archive_refs(archive)
            else:
                for f in _walk(path):
                    yield InputRef(name=str(f), path=str(f))
        elif path.exists():
            yield InputRef(name=str(path), path=str(path))
        else:
            raise PathNotFoundError(f"{path}: no such file or folder")


# -- DICOMweb frames --------------------------------------------------------------------------
class DicomWebInstance:
    """Frame access to one DICOMweb instance: metadata once, frames as octet-streams.

    Offers what the pipeline uses of :class:`~dcmstream.Instance`: ``len``,
    ``pixel_spec``, ``transfer_syntax``, ``dataset``, ``frame(i, level)``.
    Reduced levels are decimated here (the octet-stream is full resolution).
    """

    def __init__(self, ref: InputRef) -> None:
        from dicomweb_client.api import DICOMwebClient
        from pydicom import Dataset

        from ..index import pixel_spec_from_dataset

        self.name = ref.name
        self.ref = ref
        url, study, series, sop = ref.url, ref.study, ref.series, ref.sop
        if url is None or study is None or series is None or sop is None:
            raise InvalidArgumentError(f"{ref.name}: a DICOMweb input needs its URL and study, series and instance UIDs")
        self._uids = (study, series, sop)
        self.client = DICOMwebClient(url=url)
        meta = self.client.retrieve_instance_metadata(*self._uids)
        self.dataset = Dataset.from_json(meta, bulk_data_uri_handler=lambda *a: None)
        self.pixel_spec = pixel_spec_from_dataset(self.dataset, "PixelData", self.name)
        self.transfer_syntax = "1.2.840.10008.1.2.1"  # what the octet-stream frames are
        self._renderer: Renderer | None = None

    def __len__(self) -> int:
        return self.pixel_spec.number_of_frames

    @property
    def max_level(self) -> int:
        from ..image.levels import geometric_max_level

        return geometric_max_level(self.pixel_spec.rows, self.pixel_spec.columns)

    def frame(self, i: int, level: int = 0) -> np.ndarray:
        spec = self.pixel_spec
        (data,) = self.client.retrieve_instance_frames(
            *self._uids, frame_numbers=[int(i) + 1],
            media_types=("application/octet-stream",),
        )
        if spec.bits_allocated == 1:
            bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: spec.pixels_per_frame]
            arr = bits.reshape(spec.shape)
        else:
            arr = np.frombuffer(data, spec.dtype.newbyteorder("<")).reshape(spec.shape).astype(spec.dtype)
        return decimate(arr, level)

    @property
    def renderer(self) -> Renderer:
        """The display chain of this instance's header (built once), as :attr:`Instance.renderer`."""
        if self._renderer is None:
            from ..image.render import Renderer

            self._renderer = Renderer(self.dataset)
        return self._renderer

    def render(self, i: int, window: tuple[float, float] | None = None, level: int | None = None) -> np.ndarray:
        return self.renderer.render(self.frame(i, level=level or 0), i, window)

    def thumbnail(self, i: int, size: int = 128) -> np.ndarray:
        """As :meth:`Instance.thumbnail <dcmstream.Instance.thumbnail>` (not cached): rendered
        from the coarsest level with at least ``size`` pixels, area-averaged to ``size``."""
        spec = self.pixel_spec
        size = check_size(size)
        level = level_for_size(spec.rows, spec.columns, size, self.max_level)
        return resize_area(self.render(i, level=level), *target_shape(spec.rows, spec.columns, size))

    def close(self) -> None:
        pass


# -- opening ----------------------------------------------------------------------------------
class Opener:
    """Opens InputRefs, keeping at most ``max_open`` open (least recently used closed first).

    ``cache`` is the FrameCache instances read through (False: none). An instance in use
    (:meth:`use`) is never closed under its user.
    """

    def __init__(self, *, cache: FrameCache | bool = False, max_open: int = 16) -> None:
        self.cache = cache
        self.max_open = max_open
        self._open: OpenLRU[str, PipelineImage] = OpenLRU(max_open)

    def _open_ref(self, ref: InputRef) -> PipelineImage:
        if ref.kind == "dicomweb":
            return DicomWebInstance(ref)
        from ..image.instance import Instance

        if ref.path is None:
            raise InvalidArgumentError(f"{ref.name}: a file input without a path")
        return Instance(ref.path, cache=self.cache)

    def put(self, ref: InputRef, inst: PipelineImage) -> None:
        """Hand over an instance opened elsewhere (enumeration opens every file once)."""
        self._open.put(ref.name, inst)

    def use(self, ref: InputRef) -> AbstractContextManager[PipelineImage]:
        """The open instance of ``ref``, never closed while the ``with`` block runs."""
        return self._open.use(ref.name, lambda: self._open_ref(ref))

    def hold(self, name: str) -> None:
        """Keep ``name`` open (not evicted) until :meth:`release`: its items are pending."""
        self._open.pin(name)

    def release(self, name: str) -> None:
        self._open.unpin(name)

    def close(self) -> None:
        self._open.close_all()


def open_info(ref: InputRef, opener: Opener) -> ImageInfo:
    """Open ``ref`` (keeping it in ``opener``) and describe it; DicomFormatError if no pixels."""
    with opener.use(ref) as inst:
        if not getattr(inst, "has_pixels", True):
            raise DicomFormatError(f"{ref.name}: the dataset has no pixel data")
        return image_info(inst)
