"""The one real HTTP/1.1 file server with byte ranges on loopback, for remote-file tests and benches.

``http.server`` does not implement Range, so this small threaded server does (RFC 9110):
single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` ranges answer 206 with Content-Range,
416 past the end, anything else (no Range, several ranges, garbage) 200 with the whole
body; HEAD; ETag and Last-Modified, ``If-Match`` -> 412, ``If-None-Match`` -> 304; CORS
headers, so a page of another origin (the viewer on the archive's port) can read ranges.

Every request is logged as a :class:`Served` (path, Range header, method, status, body
bytes sent) when it arrives, and its byte count grows *before* each block goes to the
socket: a client that has the bytes can trust :meth:`RangeServer.counts` (requests, GETs,
HEADs, body bytes, as the remote-source budgets are asserted), and a client that hangs up
early (a refused 200) is seen not to have taken the rest. :meth:`RangeServer.served` lists
the finished requests (the viewer tests' per-request view).

``mode`` (for the whole server, or per file in :meth:`RangeServer.add`) makes it misbehave
the ways real servers do:

* ``"ok"``: a range-capable server (Accept-Ranges: bytes).
* ``"ignore-range"``: answers every GET with 200 and the whole body (no Accept-Ranges).
* ``"drop"``: a ranged GET sends its headers and half the body, then closes the connection.
* ``"short"``: a ranged GET answers 206 for fewer bytes than asked (Content-Range says so).
* ``"slow"``: as ``"ok"``; every request waits ``delay`` seconds first (latency; ``delay``
  applies in any mode and may be changed while the server runs).
* ``"no-etag"``: no ETag header (validation by size + Last-Modified; If-Match ignored).

Files are paths (streamed from disk; ETag from size + mtime, Last-Modified the file's
mtime, as nginx does) or bytes (ETag a hash of the bytes; a fixed Last-Modified). Names
are URL paths, with or without the leading ``/``.

    with range_server({"ct.dcm": path}) as srv:
        url = srv.url("ct.dcm"); ...; srv.counts().requests; srv.served("ct.dcm")

A benchmark runs it as a process of its own (no shared GIL), counters at ``/__stats``:
``python -m tests.range_server --port P [--delay S] [--mode M] /name=FILE ...``.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["MODES", "Counts", "RangeServer", "Served", "range_server"]

MODES = ("ok", "ignore-range", "drop", "short", "slow", "no-etag")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")
_CHUNK = 64 << 10
_BYTES_MTIME = 1_700_000_000  # Last-Modified of files given as bytes


@dataclass
class Served:
    """One request as the server saw it (``sent``: body bytes written so far)."""

    path: str
    range: str | None
    method: str = "GET"
    status: int = 0
    sent: int = 0
    done: bool = False


@dataclass(frozen=True)
class Counts:
    requests: int
    gets: int
    heads: int
    body_bytes: int


def _name(path: str) -> str:
    return path.split("?", 1)[0].lstrip("/")


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (a page refusing a whole-file answer) are normal here: no traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RangeServer:
    """Files served over HTTP on 127.0.0.1 (see the module)."""

    def __init__(self, files: Mapping[str, str | Path | bytes] | None = None, mode: str = "ok",
                 delay: float = 0.0, port: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.delay = delay
        self.files: dict[str, Path | bytes] = {}
        self.modes: dict[str, str] = {}
        self.log: list[Served] = []
        self.lock = threading.Lock()
        self._etags: dict[str, tuple[bytes, str]] = {}
        self.httpd = _QuietServer(("127.0.0.1", port), self._handler())
        self.port = int(self.httpd.server_address[1])
        for name, value in (files or {}).items():
            self.add(name, value)
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- files ---------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{_name(name)}"

    def add(self, name: str, data: str | Path | bytes, *, mode: str | None = None) -> str:
        """Serve ``data`` at ``name`` (replacing what was there: a new version, a new ETag),
        in ``mode`` instead of the server's; returns its URL."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        key = _name(name)
        self.files[key] = data if isinstance(data, bytes) else Path(data)
        if mode is not None:
            self.modes[key] = mode
        return self.url(key)

    def mode_of(self, name: str) -> str:
        return self.modes.get(_name(name), self.mode)

    def _version(self, key: str) -> tuple[int, str, str] | None:
        """(size, ETag, Last-Modified) of the file at ``key``, None when there is none."""
        data = self.files.get(key)
        if isinstance(data, bytes):
            with self.lock:
                cached = self._etags.get(key)
                if cached is None or cached[0] is not data:
                    cached = self._etags[key] = (data, '"' + hashlib.sha1(data).hexdigest()[:16] + '"')
            return len(data), cached[1], email.utils.formatdate(_BYTES_MTIME, usegmt=True)
        if data is None or not data.is_file():
            return None
        st = data.stat()
        return st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', email.utils.formatdate(st.st_mtime, usegmt=True)

    def etag(self, name: str) -> str:
        version = self._version(_name(name))
        if version is None:
            raise KeyError(name)
        return version[1]

    def _blocks(self, key: str, start: int, end: int) -> Iterator[bytes]:
        data = self.files[key]
        if isinstance(data, bytes):
            for pos in range(start, end, _CHUNK):
                yield data[pos : min(end, pos + _CHUNK)]
            return
        with data.open("rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                block = f.read(min(_CHUNK, end - pos))
                if not block:
                    return
                pos += len(block)
                yield block

    # -- the log -------------------------------------------------------------------------
    def served(self, name: str | None = None) -> list[Served]:
        """Finished requests (of ``name``), in the order they arrived."""
        with self.lock:
            return [s for s in self.log if s.done and (name is None or _name(s.path) == _name(name))]

    def counts(self, name: str | None = None) -> Counts:
        """Requests and body bytes so far (of ``name``), those still being answered included."""
        with self.lock:
            log = [s for s in self.log if name is None or _name(s.path) == _name(name)]
            return Counts(len(log), sum(s.method == "GET" for s in log), sum(s.method == "HEAD" for s in log),
                          sum(s.sent for s in log))

    def clear(self) -> None:
        with self.lock:
            self.log.clear()

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as real servers set it on keep-alive connections: otherwise the
            # body's last segment waits for the client's delayed ACK (40 ms per request).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
                pass  # quiet (http.server logs every request to stderr)

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Range, If-Match, If-None-Match")
                self.send_header("Access-Control-Expose-Headers",
                                 "Content-Range, Content-Length, Accept-Ranges, ETag, Last-Modified")

            def _empty(self, entry: Served, status: int, extra: dict[str, str] | None = None) -> None:
                entry.status = status
                self.send_response(status)
                self._cors()
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming; CORS preflight, not logged
                self.send_response(204)
                self._cors()
                self.send_header("Access-Control-Allow-Methods", "GET, HEAD")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("HEAD")

            def do_GET(self) -> None:  # noqa: N802
                if self.path in ("/__stats", "/__reset"):
                    self._control()
                    return
                self._serve("GET")

            def _control(self) -> None:
                """``/__stats`` (the counts as JSON) and ``/__reset``: not logged (benchmarks)."""
                if self.path == "/__reset":
                    server.clear()
                c = server.counts()
                body = json.dumps({"requests": c.requests, "gets": c.gets, "heads": c.heads,
                                   "body_bytes": c.body_bytes}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, method: str) -> None:
                entry = Served(self.path.split("?", 1)[0], self.headers.get("Range"), method)
                with server.lock:
                    server.log.append(entry)
                try:
                    self._answer(entry)
                except ConnectionError:
                    self.close_connection = True  # the client stopped reading (hung up)
                finally:
                    entry.done = True

            def _answer(self, entry: Served) -> None:
                if server.delay:
                    time.sleep(server.delay)
                key = _name(entry.path)
                mode = server.mode_of(key)
                version = server._version(key)
                if version is None:
                    self._empty(entry, 404)
                    return
                size, etag, modified = version
                if mode != "no-etag":
                    match = self.headers.get("If-Match")
                    if match and match.strip() != "*" and etag not in (t.strip() for t in match.split(",")):
                        self._empty(entry, 412)
                        return
                    none_match = self.headers.get("If-None-Match")
                    if none_match and (none_match.strip() == "*" or etag in (t.strip() for t in none_match.split(","))):
                        self._empty(entry, 304, {"ETag": etag})
                        return
                start, end, status = 0, size, 200
                m = _RANGE.match(entry.range or "") if entry.method == "GET" and mode != "ignore-range" else None
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                    else:
                        start = max(0, size - int(m.group(2)))
                    if start >= size or end <= start:
                        self._empty(entry, 416, {"Content-Range": f"bytes */{size}"})
                        return
                    status = 206
                    if mode == "short" and end - start > 1:
                        end = start + (end - start) // 2
                entry.status = status
                self.send_response(status)
                self._cors()
                self.send_header("Content-Type", "application/dicom")
                self.send_header("Content-Length", str(end - start))
                self.send_header("Last-Modified", modified)
                if mode != "no-etag":
                    self.send_header("ETag", etag)
                if mode != "ignore-range":
                    self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if entry.method == "HEAD":
                    return
                drop = mode == "drop" and status == 206 and end - start > 1
                stop = start + (end - start) // 2 if drop else end
                for block in server._blocks(key, start, stop):
                    with server.lock:
                        entry.sent += len(block)  # counted before the client can have it
                    self.wfile.write(block)
                self.wfile.flush()
                if drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass

        return Handler


@contextmanager
def range_server(files: Mapping[str, str | Path | bytes] | None = None, mode: str = "ok",
                 delay: float = 0.0) -> Iterator[RangeServer]:
    """A started :class:`RangeServer` on a free 127.0.0.1 port for the ``with`` block."""
    server = RangeServer(files, mode, delay)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve files in the foreground until terminated (see the module); prints ``ready``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("files", nargs="+", help="/url/path=FILE")
    args = parser.parse_args(argv)
    files = dict(item.split("=", 1) for item in args.files)
    server = RangeServer(files, args.mode, args.delay, port=args.port)
    print("ready", flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.1)
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
