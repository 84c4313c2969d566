"""Shared pieces of the reliability suite: generated instances with fresh UIDs, STOW-RS
bodies, multipart parsing of answers, and the figures file the benchmark reads.

The figures (acknowledged, lost, requests, errors, peak RSS, fuzz cases) are what the
issue's closing note reports: each test adds its own to the JSON file named by
``DCMSTREAM_RELIABILITY_REPORT`` when that variable is set (``bench/bench_reliability.py``
sets it), and prints them either way.
"""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dcmstream.samples import write_multiframe
from dcmstream.web.media import parse_content_type
from dcmstream.web.multipart import MultipartParser, PartData, PartEnd, PartHeaders

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
BOUNDARY = "dcmstream-reliability-boundary"
REPORT_ENV = "DCMSTREAM_RELIABILITY_REPORT"
_report_lock = threading.Lock()


def record_figures(section: str, figures: dict[str, Any]) -> None:
    """Print ``figures`` and merge them under ``section`` into the report file, if one is named."""
    print(f"reliability {section}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with _report_lock:
        report_path = Path(path)
        data = json.loads(report_path.read_text()) if report_path.exists() else {}
        data[section] = figures
        report_path.write_text(json.dumps(data, indent=1))


def env_seconds(name: str, default: float) -> float:
    """A duration from the environment (CI keeps the defaults)."""
    return float(os.environ.get(name, default))


class Templates:
    """Templates to stamp fresh instances from: pydicom's CT_small (single frame, native)
    and a generated 8-frame JPEG-LS CT (multiframe, encapsulated).

    :meth:`make` gives a new instance (new study/series/SOP UIDs when asked) as Part 10 bytes.
    """

    def __init__(self, folder: Path) -> None:
        ct = get_testdata_file("CT_small.dcm")
        assert isinstance(ct, str)
        multi = write_multiframe(folder / "multi.dcm", frames=8, syntax="jpeg-ls", kind="ct", rows=64, columns=64, seed=5)
        self.datasets = {"ct": pydicom.dcmread(ct), "multiframe": pydicom.dcmread(multi)}
        self._lock = threading.Lock()

    def make(self, kind: str, study: str, series: str) -> tuple[str, bytes]:
        """(SOP Instance UID, Part 10 bytes) of a new instance of ``kind`` in ``study``/``series``."""
        with self._lock:
            ds = self.datasets[kind]
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            sop = ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            return sop, buf.getvalue()


def stow_body(parts: list[bytes], boundary: str = BOUNDARY) -> tuple[bytes, dict[str, str]]:
    """A STOW-RS body of ``parts`` (application/dicom each) and its request headers."""
    b = boundary.encode()
    out = bytearray()
    for data in parts:
        out += b"--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
    out += b"--" + b + b"--\r\n"
    return bytes(out), {"Content-Type": f"{DICOM_MULTIPART}; boundary={boundary}"}


def stored_sops(response: httpx.Response) -> list[str]:
    """SOP Instance UIDs of a STOW-RS answer's ReferencedSOPSequence."""
    items = response.json().get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def multipart_parts(content: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart/related answer."""
    media, params = parse_content_type(content_type)
    assert media == "multipart/related", content_type
    parser = MultipartParser(params["boundary"])
    parts: list[tuple[dict[str, str], bytes]] = []
    body = bytearray()
    headers: dict[str, str] = {}
    for event in parser.feed(content):
        if isinstance(event, PartHeaders):
            headers, body = event.headers, bytearray()
        elif isinstance(event, PartData):
            body += event.data
        elif isinstance(event, PartEnd):
            parts.append((headers, bytes(body)))
    parser.finish()
    return parts
