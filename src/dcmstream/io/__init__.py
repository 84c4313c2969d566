"""Byte sources: where frame bytes come from (local files now; HTTP ranges later)."""

from .reader import SourceReader
from .source import ByteSource, BytesSource, FileObjectSource, FileSource, as_source

__all__ = ["ByteSource", "FileSource", "BytesSource", "FileObjectSource", "SourceReader", "as_source"]
