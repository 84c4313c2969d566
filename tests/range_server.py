"""A real HTTP server with Range support on loopback, for remote-file tests (viewer ``?url=``).

``http.server`` (threaded) serving named byte files: single ``bytes=a-b`` / ``bytes=a-`` /
``bytes=-n`` ranges answer 206 with Content-Range, anything else 200 with the whole body.
Every request is logged (path, Range header, status, body bytes sent), so tests can prove
how many bytes a client fetched. CORS headers let a page of another origin (the viewer on
the archive's port) read the ranges. A file added with ``ignore_range=True`` is served as
many plain servers do: 200 and the whole body whatever the Range header says.

    with range_server({"ct.dcm": path}) as srv:
        url = srv.url("ct.dcm"); ...; srv.log  # [Served(path, range, status, sent), ...]
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["RangeServer", "Served", "range_server"]

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")
_CHUNK = 64 << 10


@dataclass(frozen=True)
class Served:
    path: str
    range: str | None
    status: int
    sent: int  # body bytes actually written (a client that aborts gets fewer)


@dataclass
class RangeServer:
    httpd: ThreadingHTTPServer
    files: dict[str, Path]
    ignore_range: set[str] = field(default_factory=set)
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def add(self, name: str, path: Path, *, ignore_range: bool = False) -> str:
        self.files[name] = Path(path)
        if ignore_range:
            self.ignore_range.add(name)
        return self.url(name)

    def served(self, name: str | None = None) -> list[Served]:
        with self.lock:
            return [s for s in self.log if name is None or s.path == f"/{name}"]

    def bytes_sent(self, name: str | None = None) -> int:
        return sum(s.sent for s in self.served(name))

    def clear(self) -> None:
        with self.lock:
            self.log.clear()


class _QuietServer(ThreadingHTTPServer):
    """Clients that abort (a page refusing a whole-file answer) are normal here: no traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _handler(server: RangeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet (http.server logs every request to stderr)
            pass

        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Range")
            self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges")

        def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(204)
            self._cors()
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            path = server.files.get(name)
            header = self.headers.get("Range")
            if path is None or not path.is_file():
                self._finish(404, header, b"not found")
                return
            size = path.stat().st_size
            start, end, status = 0, size, 200
            m = _RANGE.match(header or "") if name not in server.ignore_range else None
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:
                    start = max(0, size - int(m.group(2)))
                if start >= size or end <= start:
                    self.send_response(416)
                    self._cors()
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._note(header, 416, 0)
                    return
                status = 206
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/dicom")
            self.send_header("Content-Length", str(end - start))
            if name not in server.ignore_range:
                self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            sent = 0
            if not head:
                try:
                    with path.open("rb") as f:
                        f.seek(start)
                        while sent < end - start:
                            chunk = f.read(min(_CHUNK, end - start - sent))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client stopped reading (aborted)
            self._note(header, status, sent)

        def _finish(self, status: int, header: str | None, body: bytes) -> None:
            self.send_response(status)
            self._cors()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self._note(header, status, len(body))

        def _note(self, header: str | None, status: int, sent: int) -> None:
            with server.lock:
                server.log.append(Served(self.path.split("?", 1)[0], header, status, sent))

    return Handler


@contextmanager
def range_server(files: Mapping[str, Path] | None = None) -> Iterator[RangeServer]:
    """A range-capable HTTP server on a free 127.0.0.1 port for the ``with`` block."""
    httpd = _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server = RangeServer(httpd, {k: Path(v) for k, v in (files or {}).items()})
    httpd.RequestHandlerClass = _handler(server)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
