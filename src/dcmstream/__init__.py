"""dcmstream: huge DICOM images with bounded memory.

Open any DICOM file lazily and get frame *i* by reading and decoding only that
frame::

    import dcmstream
    with dcmstream.open("ct.dcm") as inst:
        print(len(inst), inst.transfer_syntax, inst.frame_index.kind)
        arr = inst.frame(500)
"""

from .errors import (
    DcmstreamError,
    DecodeError,
    DicomFormatError,
    FrameIndexError,
    SourceError,
    UnsupportedTransferSyntaxError,
)
from .image import Instance, open
from .index import FrameIndex, OffsetTableKind, PixelSpec
from .io import ByteSource, BytesSource, FileObjectSource, FileSource

__version__ = "0.1.0"

__all__ = [
    "open",
    "Instance",
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
