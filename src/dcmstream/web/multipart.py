"""multipart/related (RFC 2387) for DICOMweb: a streaming writer and a bounded parser.

The writer produces the framing bytes around parts whose bodies are streamed
separately, so a 500 MB instance never has to be in memory. The parser is fed the
request body chunk by chunk and emits events; it bounds everything an attacker
controls (header block size, number of parts, boundary length) and reports a body
that ends before its closing delimiter as truncated.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..errors import DcmstreamError

__all__ = [
    "MultipartWriter",
    "MultipartParser",
    "MultipartError",
    "PartHeaders",
    "PartData",
    "PartEnd",
]

_MAX_BOUNDARY = 70  # RFC 2046 5.1.1


class MultipartError(DcmstreamError, ValueError):
    """The body is not well-formed multipart (truncated, oversized headers, ...)."""


class MultipartWriter:
    """Framing bytes of one multipart/related body."""

    def __init__(self, boundary: str | None = None) -> None:
        self.boundary = boundary or uuid.uuid4().hex
        self._first = True

    def content_type(self, part_type: str, **params: str) -> str:
        """The response's Content-Type header value."""
        extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
        return f'multipart/related; type="{part_type}"{extra}; boundary={self.boundary}'

    def part_header(self, content_type: str, headers: dict[str, str] | None = None) -> bytes:
        """The delimiter and headers that open the next part."""
        lead = b"" if self._first else b"\r\n"
        self._first = False
        lines = [f"--{self.boundary}", f"Content-Type: {content_type}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return lead + ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def close(self) -> bytes:
        """The closing delimiter."""
        return f"\r\n--{self.boundary}--\r\n".encode("latin-1")

    def part(self, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        return self.part_header(content_type, headers) + body


@dataclass
class PartHeaders:
    index: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class PartData:
    index: int
    data: bytes


@dataclass
class PartEnd:
    index: int


Event = PartHeaders | PartData | PartEnd


class MultipartParser:
    """Incremental parser: ``feed(chunk)`` returns events, ``finish()`` checks the end.

    ``max_header_bytes`` bounds one part's header block, ``max_parts`` the number of
    parts; violations raise :class:`MultipartError`.
    """

    def __init__(self, boundary: str, *, max_header_bytes: int = 16 * 1024, max_parts: int = 10_000) -> None:
        if not boundary or len(boundary) > _MAX_BOUNDARY:
            raise MultipartError(f"invalid multipart boundary (1 to {_MAX_BOUNDARY} characters)")
        self.dash_boundary = b"--" + boundary.encode("latin-1")
        self.delimiter = b"\r\n" + self.dash_boundary
        self.max_header_bytes = max_header_bytes
        self.max_parts = max_parts
        self._buf = bytearray()
        self._state = "preamble"
        self._index = -1
        self.done = False

    @property
    def parts(self) -> int:
        return self._index + 1

    def feed(self, chunk: bytes) -> list[Event]:
        if self.done:
            return []  # epilogue: ignored
        self._buf += chunk
        events: list[Event] = []
        while True:
            if self._state == "preamble":
                # The first delimiter may come without its leading CRLF.
                if self._buf.startswith(self.dash_boundary):
                    pos = 0
                else:
                    pos = self._buf.find(self.delimiter)
                    if pos < 0:
                        # Keep a tail in case the delimiter straddles chunks; bound the preamble.
                        if len(self._buf) > 64 * 1024:
                            raise MultipartError("no multipart boundary found in the first 64 KiB of the body")
                        return events
                    pos += 2
                del self._buf[: pos + len(self.dash_boundary)]
                self._state = "after_delimiter"
            elif self._state == "after_delimiter":
                # "--" closes the body; otherwise optional whitespace then CRLF.
                if len(self._buf) < 2:
                    return events
                if self._buf[:2] == b"--":
                    self.done = True
                    self._buf.clear()
                    return events
                eol = self._buf.find(b"\r\n")
                if eol < 0:
                    if len(self._buf) > 256:
                        raise MultipartError("malformed multipart delimiter line")
                    return events
                if self._buf[:eol].strip(b" \t"):
                    raise MultipartError("malformed multipart delimiter line")
                del self._buf[: eol + 2]
                self._index += 1
                if self._index >= self.max_parts:
                    raise MultipartError(f"more than {self.max_parts} parts")
                self._state = "headers"
            elif self._state == "headers":
                end = self._buf.find(b"\r\n\r\n")
                if self._buf.startswith(b"\r\n"):
                    end, skip = 0, 2  # no headers at all
                else:
                    skip = 4
                if end < 0:
                    if len(self._buf) > self.max_header_bytes:
                        raise MultipartError(f"part {self._index + 1}: headers exceed {self.max_header_bytes} bytes")
                    return events
                if end > self.max_header_bytes:
                    raise MultipartError(f"part {self._index + 1}: headers exceed {self.max_header_bytes} bytes")
                block = bytes(self._buf[:end]).decode("latin-1")
                del self._buf[: end + skip]
                headers: dict[str, str] = {}
                for line in block.split("\r\n"):
                    if not line:
                        continue
                    name, sep, value = line.partition(":")
                    if not sep or not name.strip():
                        raise MultipartError(f"part {self._index + 1}: malformed header line {line[:80]!r}")
                    headers[name.strip().lower()] = value.strip()
                events.append(PartHeaders(self._index, headers))
                self._state = "body"
            elif self._state == "body":
                pos = self._buf.find(self.delimiter)
                if pos < 0:
                    # Everything except a possible partial delimiter at the end is data.
                    safe = len(self._buf) - len(self.delimiter) + 1
                    if safe > 0:
                        events.append(PartData(self._index, bytes(self._buf[:safe])))
                        del self._buf[:safe]
                    return events
                if pos:
                    events.append(PartData(self._index, bytes(self._buf[:pos])))
                events.append(PartEnd(self._index))
                del self._buf[: pos + len(self.delimiter)]
                self._state = "after_delimiter"

    def finish(self) -> None:
        """Raise :class:`MultipartError` unless the closing delimiter was seen."""
        if not self.done:
            if self._index < 0:
                raise MultipartError("the body has no multipart parts (wrong boundary, or not multipart)")
            raise MultipartError(f"the multipart body is truncated (part {self._index + 1} has no closing delimiter)")
