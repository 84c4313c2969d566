"""kill -9 during STOW-RS: a real ``dcmstream serve`` process (a folder archive, and a
``--config`` archive with a SQLite catalog) is killed ``DCMSTREAM_CRASH_KILLS`` times
(default 10) while several clients store generated instances (distinct UIDs, one to three
per request, some multiframe), and restarted after each kill on the same port.

Then:
- every ACKNOWLEDGED instance (in a 200/202 answer's ReferencedSOPSequence) is retrievable
  byte-identical (WADO-RS, ``transfer-syntax=*``: the stored bytes are the sent bytes);
- an instance sent without an answer is either absent or whole;
- no catalog row lacks its blob;
- once the last server's own start-up sweep has run (``dcmstream_sweep_runs_total`` on its
  ``/metrics``; it runs while the clients still store, which it must survive), every blob
  has its row and the staging folder is empty: the kills' leftovers are gone without any
  maintenance step (the archive is opened here without its open-time sweep).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from dcmstream.archive import Archive
from dcmstream.config import load_config, open_archive

from ..server_util import ServerProcess, free_port, start_serve
from .common import Templates, env_seconds, multipart_parts, record_figures, stored_sops, stow_body

pytestmark = pytest.mark.slow

KILLS = int(env_seconds("DCMSTREAM_CRASH_KILLS", 10))
CLIENTS = 4


class _Load:
    """Clients storing fresh instances until told to stop; what was acknowledged and what
    was sent without an answer (the kill cut it) are kept by SOP Instance UID."""

    def __init__(self, templates: Templates, url: str) -> None:
        self.templates = templates
        self.url = url
        self.acked: dict[str, tuple[str, str, str]] = {}  # sop -> (study, series, sha256)
        self.unanswered: dict[str, tuple[str, str, str]] = {}
        self.multiframe: set[str] = set()  # SOP Instance UIDs of the multiframe instances
        self.refused: list[str] = []  # answers that are neither success nor a cut connection
        self.requests = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        study = generate_uid()
        with httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0)) as client:
            while not self.stop.is_set():
                series = generate_uid()
                sent: dict[str, tuple[str, str, str]] = {}
                parts = []
                for _ in range(rng.randint(1, 3)):
                    kind = "multiframe" if rng.random() < 0.2 else "ct"
                    sop, data = self.templates.make(kind, study, series)
                    sent[sop] = (study, series, hashlib.sha256(data).hexdigest())
                    parts.append(data)
                    if kind == "multiframe":
                        with self._lock:
                            self.multiframe.add(sop)
                body, headers = stow_body(parts)
                try:
                    response = client.post(f"{self.url}/dicomweb/studies", content=body, headers=headers)
                except httpx.ConnectError:  # the server is down: nothing was sent; wait for its restart
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError:  # the kill cut the request or its answer
                    with self._lock:
                        self.unanswered.update(sent)
                    continue
                with self._lock:
                    self.requests += 1
                    if response.status_code not in (200, 202):
                        self.refused.append(f"{response.status_code} {response.text[:300]}")
                        self.unanswered.update(sent)
                        continue
                    stored = set(stored_sops(response))
                    for sop, value in sent.items():
                        (self.acked if sop in stored else self.unanswered)[sop] = value


def _serve(kind: str, tmp_path: Path, port: int) -> tuple[tuple[str, ...], Path]:
    """(serve arguments, log) of the archive kind under test."""
    if kind == "folder":
        return (str(tmp_path / "archive"), "--cache-mb", "16"), tmp_path / "serve.log"
    config = tmp_path / "archive.toml"
    config.write_text(
        f'[archive]\nroot = "{tmp_path}/local"\n[catalog]\nurl = "sqlite:///{tmp_path}/catalog.sqlite"\n'
        f'[storage.hot]\nurl = "file://{tmp_path}/blobs"\n[server]\ncache_mb = 16\n'
    )
    return ("--config", str(config)), tmp_path / "serve.log"


def _open(kind: str, tmp_path: Path) -> Archive:
    """The archive as the servers left it: no sweep at this open (the servers' own count)."""
    if kind == "folder":
        return Archive(tmp_path / "archive", cache=False, sweep_on_open=False)
    return open_archive(load_config(tmp_path / "archive.toml"), cache=False, sweep_on_open=False)


def _sweep_metrics(client: httpx.Client, url: str) -> dict[str, float]:
    """The ``dcmstream_sweep_*`` values of a server's ``/metrics``."""
    r = client.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line.startswith("dcmstream_sweep_"):
            name, value = line.split()
            out[name] = float(value)
    return out


def _wait_for_sweep(url: str, timeout: float = 60.0) -> dict[str, float]:
    """Poll the server's ``/metrics`` until its start-up sweep has run; its counters."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10) as client:
        while True:
            metrics = _sweep_metrics(client, url)
            if metrics.get("dcmstream_sweep_runs_total", 0) >= 1:
                return metrics
            assert time.monotonic() < deadline, f"no sweep ran within {timeout} s: {metrics}"
            time.sleep(0.1)


def _retrieve(client: httpx.Client, url: str, study: str, series: str, sop: str) -> bytes | None:
    r = client.get(f"{url}/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                   headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    parts = multipart_parts(r.content, r.headers["content-type"])
    assert len(parts) == 1
    return parts[0][1]


@pytest.mark.parametrize("kind", ["folder", "config-sqlite"])
def test_kill_during_stow_loses_no_acknowledged_instance(kind: str, tmp_path: Path) -> None:
    port = free_port()
    args, log = _serve(kind, tmp_path, port)
    templates = Templates(tmp_path)
    server: ServerProcess | None = start_serve(args, log=log, port=port)
    load = _Load(templates, server.url)
    threads = [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(CLIENTS)]
    rng = random.Random(7)
    started = time.monotonic()
    try:
        for t in threads:
            t.start()
        for _ in range(KILLS):
            before = load.requests
            deadline = time.monotonic() + 30
            # Kill while requests flow: after a few answers and a random moment more.
            while load.requests < before + 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.05, 0.6))
            server.kill()
            server = start_serve(args, log=log, port=port)
        # the start-up sweep runs in the background while the clients go on storing
        swept = _wait_for_sweep(server.url)
        time.sleep(0.5)
        load.stop.set()
        for t in threads:
            t.join(60)
        assert not load.refused, load.refused[:5]
        assert load.acked, "nothing was acknowledged"
        assert load.multiframe & load.acked.keys(), "no multiframe instance was acknowledged"

        # -- every acknowledged instance, byte-identical; unanswered ones whole or absent --
        lost: list[str] = []
        unanswered_stored = 0
        with httpx.Client(timeout=30) as client:
            for sop, (study, series, digest) in load.acked.items():
                data = _retrieve(client, server.url, study, series, sop)
                if data is None or hashlib.sha256(data).hexdigest() != digest:
                    lost.append(sop)
            for sop, (study, series, digest) in load.unanswered.items():
                data = _retrieve(client, server.url, study, series, sop)
                assert data is None or hashlib.sha256(data).hexdigest() == digest, f"{sop} stored but not whole"
                unanswered_stored += data is not None
        server.stop()
        server = None
    finally:
        load.stop.set()
        if server is not None:
            server.kill()
    elapsed = time.monotonic() - started

    # -- the archive as the servers left it: rows and blobs match, nothing staged --------
    assert swept.get("dcmstream_sweep_errors_total") == 0, swept
    archive = _open(kind, tmp_path)
    try:
        store = archive.blobs
        keys = set(store.keys())
        rows = [archive.catalog.get(Path(key).stem) for key in keys]
        records = [r for r in rows if r is not None and r.blob_key in keys]
        missing = [r.sop_uid for r in records if not store.exists(r.blob_key)]
        assert not missing, f"catalog rows without their blob: {missing[:5]}"
        referenced = {r.blob_key for r in records}
        assert keys == referenced, f"blobs without a row after the server's sweep: {sorted(keys - referenced)[:5]}"
        assert archive.catalog.counts()["instances"] == len(records), "catalog rows without their blob"
        staged = [p.name for p in store.staging_path().parent.iterdir() if p.is_file()]
        assert not staged, f"staging files left: {staged[:5]}"
        for r in records:
            assert store.size(r.blob_key) == r.size
        acked_in_catalog = sum(archive.catalog.get(sop) is not None for sop in load.acked)
    finally:
        archive.close()
    assert not lost, f"{len(lost)} of {len(load.acked)} acknowledged instances lost or changed: {lost[:5]}"
    assert acked_in_catalog == len(load.acked)
    record_figures(f"crash-{kind}", {
        "kills": KILLS, "clients": CLIENTS, "stow_requests": load.requests, "acknowledged": len(load.acked),
        "lost": len(lost), "unacknowledged": len(load.unanswered), "unacknowledged_stored": unanswered_stored,
        "multiframe_acknowledged": len(load.multiframe & load.acked.keys()),
        "last_start_sweep_orphan_blobs": int(swept.get("dcmstream_sweep_orphan_blobs_removed_total", 0)),
        "last_start_sweep_staging_files": int(swept.get("dcmstream_sweep_staging_files_removed_total", 0)),
        "seconds": round(elapsed, 1),
    })
