"""A real uvicorn server on a free loopback port, for the web and viewer tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from dcmstream.web.app import UVICORN_OPTIONS


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
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", uv, thread
