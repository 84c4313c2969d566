"""The exceptions dcmstream raises.

One tree, so callers can catch as broadly or as narrowly as they need::

    DcmstreamError
    ├── DicomFormatError (also ValueError)        malformed or inconsistent input
    │   └── FrameIndexError                        offsets/items that do not add up
    ├── UnsupportedTransferSyntaxError (also NotImplementedError)
    │                                              no installed codec for the syntax
    ├── DecodeError (also ValueError)              a codec rejected one frame's bytes
    └── SourceError (also OSError)                 the byte source failed (I/O, closed)

Every message names where the problem is: the file (or source), the element tag
or frame number, and the cause.
"""

from __future__ import annotations

__all__ = [
    "DcmstreamError",
    "DicomFormatError",
    "FrameIndexError",
    "UnsupportedTransferSyntaxError",
    "DecodeError",
    "SourceError",
]


class DcmstreamError(Exception):
    """Base class of every error raised on purpose by dcmstream."""


class DicomFormatError(DcmstreamError, ValueError):
    """The input is not valid DICOM, or its attributes contradict its data."""


class FrameIndexError(DicomFormatError):
    """Frame offsets, offset tables or item headers are inconsistent."""


class UnsupportedTransferSyntaxError(DcmstreamError, NotImplementedError):
    """No installed codec can decode (or encode) this transfer syntax."""

    def __init__(self, uid: str, name: str = "", hint: str = "") -> None:
        self.uid = uid
        self.name = name
        self.hint = hint
        label = f"{name} ({uid})" if name else uid
        message = f"transfer syntax {label} is not supported"
        if hint:
            message += f": {hint}"
        super().__init__(message)


class DecodeError(DcmstreamError, ValueError):
    """A codec failed on the bytes of one frame."""


class SourceError(DcmstreamError, OSError):
    """Reading from the byte source failed."""
