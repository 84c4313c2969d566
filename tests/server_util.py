"""The one way tests start a real HTTP server: uvicorn on a free loopback port, in a thread.

Used by the web, viewer and pipeline (DICOMweb input) tests::

    with running_server(create_app(archive)) as url:
        httpx.get(f"{url}/dicomweb/studies")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from dcmstream.web.app import UVICORN_OPTIONS

__all__ = ["free_port", "running_server", "start_server", "stop_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    """uvicorn on a free loopback port in a daemon thread; returns (url, server, thread)."""
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **UVICORN_OPTIONS))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            uv.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", uv, thread


def stop_server(uv: uvicorn.Server, thread: threading.Thread) -> None:
    """Ask the server to finish and wait for its thread."""
    uv.should_exit = True
    thread.join(10)


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """A started server for the ``with`` block; yields its base URL (``http://127.0.0.1:PORT``)."""
    url, uv, thread = start_server(app)
    try:
        yield url
    finally:
        stop_server(uv, thread)
