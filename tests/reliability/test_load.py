"""Load: 8 clients mixing STOW-RS, QIDO-RS, metadata, frames and rendered against a real
``dcmstream serve`` process with a set ``--cache-mb``, for ``DCMSTREAM_LOAD_SECONDS``
(default 60). Every request must succeed (any non-2xx answer or connection error is an
error) and the server's RSS, sampled with psutil, must stay within a bound derived from
its configured budgets (see ``_rss_bound``). Requests per second are reported, not asserted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dcmstream.archive import Archive
from dcmstream.samples import write_multiframe
from dcmstream.web.common import ServerConfig

from ..server_util import start_serve
from .common import Templates, env_seconds, record_figures, stored_sops, stow_body

pytestmark = pytest.mark.slow

LOAD_SECONDS = env_seconds("DCMSTREAM_LOAD_SECONDS", 60.0)
CLIENTS = 8
CACHE_MB = 32
MiB = 1 << 20
#: What the process needs besides its budgets. Measured: an idle `dcmstream serve` is about
#: 120 MB (CPython, numpy, pydicom, imagecodecs, SQLAlchemy, Starlette/uvicorn, the SQLite
#: catalog). Plus 40 MB for the work in flight: 8 concurrent requests each hold at most a few
#: frames (256x256x2 B decoded, a JPEG/PNG being encoded, 1 MiB STOW spool and retrieve
#: chunks) on top of the thread pool's stacks and glibc's arenas (tune_malloc caps them).
FIXED_OVERHEAD_MB = 160
_FRAMES = 30
_OPS = ("stow", "qido", "metadata", "frames", "rendered")
_WEIGHTS = (15, 25, 20, 25, 15)


def _rss_bound() -> int:
    """The frame cache budget (--cache-mb) + the metadata cache budget (ServerConfig's,
    which `dcmstream serve` keeps) + the fixed overhead above."""
    return CACHE_MB * MiB + ServerConfig().metadata_cache_bytes + FIXED_OVERHEAD_MB * MiB


def _seed(root: Path, data: Path) -> list[tuple[str, str, str, int]]:
    """Instances to read: a 30-frame JPEG-LS CT, a native multiframe, pydicom's CT and MR."""
    files = [
        write_multiframe(data / "jls.dcm", frames=_FRAMES, syntax="jpeg-ls", kind="ct", rows=256, columns=256, seed=31),
        write_multiframe(data / "native.dcm", frames=_FRAMES, syntax="explicit", kind="ct", rows=128, columns=128, seed=32),
    ]
    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = get_testdata_file(name)
        if path is not None:
            files.append(Path(path))
    archive = Archive(root, cache=False)
    try:
        out = []
        for path in files:
            result = archive.ingest_file(path)
            assert result.ok, result
            record = archive.record(result.sop_uid)
            assert record is not None
            out.append((result.study_uid, result.series_uid, result.sop_uid, record.number_of_frames))
        return out
    finally:
        archive.close()


class _Clients:
    def __init__(self, url: str, instances: list[tuple[str, str, str, int]], templates: Templates) -> None:
        self.url = url + "/dicomweb"
        self.instances = instances
        self.templates = templates
        self.study = generate_uid()
        self.stored: list[tuple[str, str]] = []  # (series, sop) stored by STOW during the run
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _request(self, client: httpx.Client, rng: random.Random, op: str) -> httpx.Response:
        study, series, sop, frames = rng.choice(self.instances)
        inst = f"{self.url}/studies/{study}/series/{series}/instances/{sop}"
        if op == "stow":
            series_uid = generate_uid() if rng.random() < 0.2 or not self.stored else rng.choice(self.stored)[0]
            new_sop, data = self.templates.make("ct", self.study, series_uid)
            body, headers = stow_body([data])
            r = client.post(f"{self.url}/studies", content=body, headers=headers)
            if r.status_code == 200 and stored_sops(r) == [new_sop]:
                with self._lock:
                    self.stored.append((series_uid, new_sop))
            elif r.status_code == 200:
                raise AssertionError(f"STOW acknowledged {stored_sops(r)}, not {new_sop}")
            return r
        json_accept = {"Accept": "application/dicom+json"}
        if op == "qido":
            path = rng.choice([
                "/studies?PatientName=*&limit=20", f"/studies/{study}/series", f"/studies/{study}/series/{series}/instances",
                "/instances?Modality=CT&limit=50&includefield=all", f"/studies/{self.study}/instances?limit=100",
                "/series?offset=1&limit=5",
            ])
            return client.get(self.url + path, headers=json_accept)
        if op == "metadata":
            with self._lock:
                new = rng.choice(self.stored) if self.stored and rng.random() < 0.3 else None
            if new is not None:
                return client.get(f"{self.url}/studies/{self.study}/series/{new[0]}/metadata", headers=json_accept)
            target = rng.choice([inst, f"{self.url}/studies/{study}/series/{series}", f"{self.url}/studies/{study}"])
            return client.get(f"{target}/metadata", headers=json_accept)
        if op == "frames":
            numbers = ",".join(str(rng.randint(1, frames)) for _ in range(rng.choice((1, 1, 3))))
            accept = rng.choice(['multipart/related; type="application/octet-stream"',
                                 'multipart/related; type="application/octet-stream"; transfer-syntax=*'])
            return client.get(f"{inst}/frames/{numbers}", headers={"Accept": accept})
        frame = rng.randint(1, frames)
        target = rng.choice([f"{inst}/frames/{frame}/rendered", f"{inst}/rendered?window=40,400", f"{inst}/thumbnail"])
        return client.get(target, headers={"Accept": rng.choice(["image/jpeg", "image/png"])})

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                op = rng.choices(_OPS, _WEIGHTS)[0]
                try:
                    r = self._request(client, rng, op)
                    r.read()
                    ok = 200 <= r.status_code < 300
                    why = f"{op}: {r.status_code} {r.request.url} {r.text[:200]}"
                except (httpx.HTTPError, AssertionError) as exc:
                    ok, why = False, f"{op}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self.counts[op] += 1
                    if not ok:
                        self.errors.append(why)


def test_mixed_load_has_no_errors_and_bounded_rss(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    instances = _seed(root, tmp_path)
    server = start_serve((str(root), "--cache-mb", str(CACHE_MB)), log=tmp_path / "serve.log")
    clients = _Clients(server.url, instances, Templates(tmp_path))
    process = psutil.Process(server.process.pid)
    samples: list[int] = []
    idle = process.memory_info().rss
    threads = [threading.Thread(target=clients.run, args=(i,), daemon=True) for i in range(CLIENTS)]
    try:
        started = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - started < LOAD_SECONDS:
            samples.append(process.memory_info().rss)
            time.sleep(0.25)
        clients.stop.set()
        for t in threads:
            t.join(90)
        elapsed = time.monotonic() - started
        samples.append(process.memory_info().rss)
        assert server.process.poll() is None, "the server died"
    finally:
        clients.stop.set()
        server.stop()
    total = sum(clients.counts.values())
    peak = max(samples)
    quarters = [round(max(samples[len(samples) * q // 4 : max(len(samples) * (q + 1) // 4, 1)]) / MiB) for q in range(4)]
    record_figures("load", {
        "clients": CLIENTS, "seconds": round(elapsed, 1), "requests": total, "requests_per_s": round(total / elapsed, 1),
        "errors": len(clients.errors), "by_op": dict(sorted(clients.counts.items())), "stored": len(clients.stored),
        "cache_mb": CACHE_MB, "idle_rss_mb": round(idle / MiB), "peak_rss_mb": round(peak / MiB), "peak_rss_mb_by_quarter": quarters,
        "rss_bound_mb": round(_rss_bound() / MiB),
    })
    assert not clients.errors, f"{len(clients.errors)} errors: {clients.errors[:5]}"
    assert all(clients.counts[op] > 0 for op in _OPS), clients.counts
    assert peak <= _rss_bound(), f"peak RSS {peak / MiB:.0f} MB exceeds the bound {_rss_bound() / MiB:.0f} MB"
