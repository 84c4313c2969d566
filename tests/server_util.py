"""The one way tests start a real HTTP server: uvicorn on a free loopback port, in a thread,
or ``dcmstream serve --config`` as a process of its own.

Used by the web, viewer and pipeline (DICOMweb input) tests::

    with running_server(create_app(archive)) as url:
        httpx.get(f"{url}/dicomweb/studies")

    server = start_config_server(config, log=tmp_path / "a.log", env=s3.env)   # a process
    server = start_serve((str(folder), "--cache-mb", "32"), log=tmp_path / "b.log")  # any serve arguments
    ...; server.kill()   # SIGKILL, or server.stop()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from dcmstream.web.app import UVICORN_OPTIONS

__all__ = ["ServerProcess", "free_port", "running_server", "start_config_server", "start_serve", "start_server", "stop_server"]


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


@dataclass
class ServerProcess:
    """A ``dcmstream serve`` process (its own session, so a kill reaches its workers too)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL if it does not end in 20 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_config_server(config: Path, *, log: Path, env: Mapping[str, str] | None = None, port: int | None = None,
                        args: tuple[str, ...] = (), timeout: float = 60.0, prefix: Sequence[str] = (),
                        preexec_fn: Callable[[], object] | None = None) -> ServerProcess:
    """``python -m dcmstream serve --config CONFIG --port PORT`` on a free loopback port,
    with this checkout's sources first on PYTHONPATH; returns once /healthz answers.

    ``prefix``: a command that execs the rest (``unshare ... sh -c '...; exec "$@"'``);
    ``preexec_fn``: run in the child before the exec (resource limits)."""
    return start_serve(("--config", str(config), *args), log=log, env=env, port=port, timeout=timeout,
                       prefix=prefix, preexec_fn=preexec_fn)


def start_serve(args: tuple[str, ...], *, log: Path, env: Mapping[str, str] | None = None, port: int | None = None,
                timeout: float = 60.0, prefix: Sequence[str] = (),
                preexec_fn: Callable[[], object] | None = None) -> ServerProcess:
    """``python -m dcmstream serve ARGS --host 127.0.0.1 --port PORT`` (ARGS: an archive folder
    or ``--config FILE``, plus options), as :func:`start_config_server`; ``log`` is appended to."""
    import httpx

    port = port or free_port()
    src = str(Path(__file__).resolve().parents[1] / "src")
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (src, full_env.get("PYTHONPATH", "")) if p)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "dcmstream", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True, preexec_fn=preexec_fn,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"dcmstream serve exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"dcmstream serve did not answer in {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
