"""A real HTTP/1.1 file server with byte ranges on loopback, for the remote-source tests.

``http.server`` does not implement Range, so this small threaded server does (RFC 9110:
``bytes=a-b``, ``bytes=a-``, ``bytes=-n``; 206 with Content-Range, 416 past the end; HEAD;
ETag, Last-Modified, If-Match -> 412), and counts every request and body byte it sends, so
tests assert request and byte budgets from the server's side. ``mode`` makes it misbehave
the ways real servers do:

* ``"ok"``: a range-capable server (Accept-Ranges: bytes).
* ``"ignore-range"``: answers every GET with 200 and the whole body (no Accept-Ranges).
* ``"drop"``: a ranged GET sends its headers and half the body, then closes the connection.
* ``"short"``: a ranged GET answers 206 for fewer bytes than asked (Content-Range says so).
* ``"slow"``: every request waits ``delay`` seconds first (latency).
* ``"no-etag"``: no ETag header (validation by size + Last-Modified).

    with range_server({"/a.dcm": path}) as server:
        server.url("/a.dcm"); server.stats.requests; server.stats.body_bytes
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["RangeServer", "range_server"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class ServerStats:
    requests: int = 0
    gets: int = 0
    heads: int = 0
    body_bytes: int = 0
    ranges: list[tuple[str, int, int]] = field(default_factory=list)  # (path, start, end exclusive)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        with self.lock:
            self.requests = self.gets = self.heads = self.body_bytes = 0
            self.ranges.clear()


class RangeServer:
    """Files served over HTTP on 127.0.0.1 (see the module)."""

    def __init__(self, files: Mapping[str, str | Path | bytes], mode: str = "ok", delay: float = 0.0, port: int = 0) -> None:
        self.files: dict[str, bytes] = {}
        for name, value in files.items():
            self.files[name] = value if isinstance(value, bytes) else Path(value).read_bytes()
        self.mode = mode
        self.delay = delay
        self.stats = ServerStats()
        self._etags: dict[tuple[str, int, int], str] = {}
        self.mtime = email.utils.formatdate(1_700_000_000, usegmt=True)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def etag(self, path: str) -> str:
        data = self.files[path]
        key = (path, id(data), len(data))  # a test that replaces a file's bytes gets a new ETag
        tag = self._etags.get(key)
        if tag is None:
            tag = self._etags[key] = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        return tag

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as real servers set it on keep-alive connections: otherwise the
            # body's last segment waits for the client's delayed ACK (40 ms per request).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
                pass

            def _headers(self, status: int, length: int, path: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                self.send_header("Content-Type", "application/dicom")
                self.send_header("Last-Modified", server.mtime)
                if server.mode != "no-etag":
                    self.send_header("ETag", server.etag(path))
                if server.mode != "ignore-range":
                    self.send_header("Accept-Ranges", "bytes")
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()

            def _control(self) -> bool:
                """``/__stats`` (the counters as JSON) and ``/__reset``: not counted (benchmarks)."""
                if self.path not in ("/__stats", "/__reset"):
                    return False
                if self.path == "/__reset":
                    server.stats.reset()
                with server.stats.lock:
                    body = json.dumps({"requests": server.stats.requests, "gets": server.stats.gets,
                                       "heads": server.stats.heads, "body_bytes": server.stats.body_bytes}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return True

            def _start(self) -> bytes | None:
                with server.stats.lock:
                    server.stats.requests += 1
                if server.delay:
                    time.sleep(server.delay)
                data = server.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                match = self.headers.get("If-Match")
                if match and server.mode != "no-etag" and match not in ("*", server.etag(self.path)):
                    self.send_response(412)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return data

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                data = self._start()
                with server.stats.lock:
                    server.stats.heads += 1
                if data is not None:
                    self._headers(200, len(data), self.path)

            def do_GET(self) -> None:  # noqa: N802
                if self._control():
                    return
                data = self._start()
                with server.stats.lock:
                    server.stats.gets += 1
                if data is None:
                    return
                size = len(data)
                spec = self.headers.get("Range")
                parsed = _RANGE.match(spec.strip()) if spec else None
                if parsed is None or server.mode == "ignore-range":
                    self._send(200, data, 0, size, size)
                    return
                first, last = parsed.groups()
                if first == "":
                    start, end = max(0, size - int(last or 0)), size
                else:
                    start = int(first)
                    end = min(size, int(last) + 1) if last else size
                if start >= size or end <= start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.mode == "short" and end - start > 1:
                    end = start + (end - start) // 2
                self._send(206, data, start, end, size)

            def _send(self, status: int, data: bytes, start: int, end: int, size: int) -> None:
                extra = {"Content-Range": f"bytes {start}-{end - 1}/{size}"} if status == 206 else {}
                self._headers(status, end - start, self.path, extra)
                body = data[start:end]
                if server.mode == "drop" and status == 206 and len(body) > 1:
                    body = body[: len(body) // 2]
                    self.close_connection = True
                with server.stats.lock:
                    server.stats.ranges.append((self.path, start, end))
                try:
                    # In blocks, each counted before it is handed to the socket (so the count
                    # is complete when the client has the bytes): a client that hangs up early
                    # (a refused 200) is seen not to have taken the rest.
                    for pos in range(0, len(body), 1 << 16):
                        block = body[pos : pos + (1 << 16)]
                        with server.stats.lock:
                            server.stats.body_bytes += len(block)
                        self.wfile.write(block)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                if server.mode == "drop" and status == 206:
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass

        return Handler


@contextmanager
def range_server(files: Mapping[str, str | Path | bytes], mode: str = "ok", delay: float = 0.0) -> Iterator[RangeServer]:
    """A started :class:`RangeServer` for the ``with`` block (stopped after it)."""
    server = RangeServer(files, mode, delay)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve files in the foreground (a benchmark runs it as a process of its own):
    ``python -m tests.http_range_util --port P [--delay S] /url/path=FILE ...``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    files = dict(item.split("=", 1) for item in args.files)
    server = RangeServer(files, args.mode, args.delay, port=args.port)
    print("ready", flush=True)
    server._httpd.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
