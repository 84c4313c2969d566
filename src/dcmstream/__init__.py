"""dcmstream: huge DICOM images with bounded memory.

Open any DICOM file lazily and get frame *i* by reading and decoding only that
frame::

    import dcmstream
    with dcmstream.open("ct.dcm") as inst:
        print(len(inst), inst.transfer_syntax, inst.frame_index.kind)
        arr = inst.frame(500)
        small = inst.frame(500, level=2)        # 1/4 per side; J2K decodes fewer levels
        png_ready = inst.render(500, window=(40, 400), size=256)   # uint8

    with dcmstream.open_series("study/series-dir") as series:   # single-frame files, sorted
        thumb = series.thumbnail(len(series) // 2)

    cache = dcmstream.FrameCache(64 << 20)    # 64 MiB for encoded + decoded frames together
    inst = dcmstream.open("ct.dcm", cache=cache)
"""

from .cache import FrameCache
from .errors import (
    DcmstreamError,
    DecodeError,
    DicomFormatError,
    FrameIndexError,
    SourceError,
    UnsupportedTransferSyntaxError,
)
from .image import Instance, Series, open, open_series  # noqa: A004 - dcmstream.open is the public entry point (README)
from .index import FrameIndex, OffsetTableKind, PixelSpec
from .io import ByteSource, BytesSource, FileObjectSource, FileSource

__version__ = "0.1.0"

__all__ = [
    "open",
    "open_series",
    "Instance",
    "Series",
    "FrameCache",
    "FrameIndex",
    "OffsetTableKind",
    "PixelSpec",
    "ByteSource",
    "FileSource",
    "BytesSource",
    "FileObjectSource",
    "DcmstreamError",
    "DicomFormatError",
    "FrameIndexError",
    "UnsupportedTransferSyntaxError",
    "DecodeError",
    "SourceError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # ``dcmstream.pipeline`` without importing it (and psutil threads, typer...) at start.
    if name == "pipeline":
        import importlib

        return importlib.import_module(".pipeline", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
