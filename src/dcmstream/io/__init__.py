"""Byte sources: where frame bytes come from (local files, memory, file objects, and remote
objects read by range: ``open_url("https://..." | "s3://..." | "gs://...")``)."""

from .open_cache import OpenCache
from .ranged import FetchStats, RangedSource
from .reader import SourceReader
from .remote import RangeNotSupportedError, is_url, list_url, open_url
from .source import ByteSource, BytesSource, FileObjectSource, FileSource, as_source

__all__ = [
    "ByteSource",
    "FileSource",
    "BytesSource",
    "FileObjectSource",
    "SourceReader",
    "as_source",
    "FetchStats",
    "RangedSource",
    "OpenCache",
    "RangeNotSupportedError",
    "is_url",
    "list_url",
    "open_url",
]
