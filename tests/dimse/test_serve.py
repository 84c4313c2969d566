"""``dcmstream serve ARCHIVE --dimse-port N``: the DIMSE listener runs next to the HTTP
server (one process, and with --workers 2 in the main process), and stops with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server_util import free_port

from .conftest import corpus_file, dcmtk, run, wait_port

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_dimse(tmp_path: Path, workers: int) -> None:
    http_port, dimse_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "dcmstream", "serve", str(tmp_path / "archive"), "--port", str(http_port),
         "--workers", str(workers), "--dimse-port", str(dimse_port), "--ae-title", "MYARCHIVE"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        wait_port(dimse_port, 60)
        wait_port(http_port, 60)
        run(dcmtk("echoscu"), "-aec", "MYARCHIVE", "127.0.0.1", str(dimse_port))
        run(dcmtk("storescu"), "-aec", "MYARCHIVE", "127.0.0.1", str(dimse_port), str(corpus_file("CT_small.dcm")))
        deadline = time.monotonic() + 30
        found: list = []
        while not found and time.monotonic() < deadline:
            found = httpx.get(f"http://127.0.0.1:{http_port}/dicomweb/studies", timeout=10).json()
        assert len(found) == 1
        assert "MYARCHIVE@" in log.read_text()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(30) is not None
        finally:
            process.kill()
            process.wait(10)
    # both ports are free again
    for port in (http_port, dimse_port):
        import socket

        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_config_dimse_and_forwarding(tmp_path: Path, storescp) -> None:
    """``[dimse]`` and ``[[forward]]`` of a --config file: an instance received by C-STORE
    from CT1 is forwarded to the storescp peer; C-MOVE to it works too."""
    import pydicom

    http_port, dimse_port = free_port(), free_port()
    config = tmp_path / "archive.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///catalog.sqlite"
[storage.hot]
url = "file://{tmp_path / 'blobs'}"
[server]
port = {http_port}
[dimse]
ae_title = "CFGARCHIVE"
port = {dimse_port}
accepted_calling_ae_titles = ["CT1", "WS"]
[[dimse.peers]]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {storescp.port}
[[forward]]
to = "STORESCP"
calling_ae_title = "CT1"
""")
    log = tmp_path / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "dcmstream", "serve", "--config", str(config)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        wait_port(dimse_port, 60)
        ct = corpus_file("CT_small.dcm")
        refused = run(dcmtk("storescu"), "-aet", "STRANGER", "-aec", "CFGARCHIVE", "127.0.0.1", str(dimse_port), str(ct),
                      check=False)
        assert refused.returncode != 0
        run(dcmtk("storescu"), "-aet", "CT1", "-aec", "CFGARCHIVE", "127.0.0.1", str(dimse_port), str(ct))
        deadline = time.monotonic() + 30
        while not storescp.files() and time.monotonic() < deadline:
            time.sleep(0.1)
        (forwarded,) = storescp.files()
        assert pydicom.dcmread(forwarded, stop_before_pixels=True).SOPInstanceUID == \
            pydicom.dcmread(ct, stop_before_pixels=True).SOPInstanceUID
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        finally:
            process.kill()
            process.wait(10)
    assert "CFGARCHIVE@" in log.read_text()
