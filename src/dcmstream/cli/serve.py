"""``dcmstream serve [ARCHIVE_DIR]``: the archive's DICOMweb server (uvicorn)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

_DEMO_MARKER = "demo.json"
#: Small real files shipped with pydicom, added to the demo archive.
DEMO_TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "US1_J2KR.dcm", "emri_small_jpeg_2k_lossless.dcm")
#: (label, write_multiframe arguments) of the generated demo studies.
DEMO_SAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("CT JPEG-LS, 1,000 frames 512x512", dict(frames=1000, syntax="jpeg-ls", kind="ct", rows=512, columns=512, seed=1)),
    (
        "US RGB JPEG baseline, 120 frames 480x640",
        dict(frames=120, syntax="jpeg-baseline", kind="us", rows=480, columns=640, seed=2),
    ),
)


def fill_demo(archive: object, console: Console) -> None:
    """Add the demo studies to ``archive`` once (a marker file remembers it)."""
    from pydicom.data import get_testdata_file

    from ..archive import Archive
    from ..io.atomic import atomic_write
    from ..samples import write_multiframe

    assert isinstance(archive, Archive)
    marker = archive.root / _DEMO_MARKER
    if marker.exists():
        console.print(f"demo data already in {archive.root}")
        return
    stored = []
    for label, kwargs in DEMO_SAMPLES:
        started = time.perf_counter()
        path = archive.staging_path(".dcm")
        with console.status(f"generating {label} ..."):
            write_multiframe(path, **kwargs)
            size = path.stat().st_size
            result = archive.ingest_file(path, move=True)
        path.unlink(missing_ok=True)
        console.print(f"  {label}: {size / 1e6:.0f} MB, {result.status} in {time.perf_counter() - started:.1f} s")
        stored.append({"label": label, "sop": result.sop_uid, "study": result.study_uid, "series": result.series_uid})
    for name in DEMO_TEST_FILES:
        test_file = get_testdata_file(name)
        if not isinstance(test_file, str):
            continue
        result = archive.ingest_file(test_file)
        console.print(f"  {name}: {result.status}")
        stored.append({"label": name, "sop": result.sop_uid, "study": result.study_uid, "series": result.series_uid})
    atomic_write(marker, json.dumps(stored, indent=1))


def banner(root: Path, counts: dict[str, int], host: str, port: int,
           cors_origins: list[str] | tuple[str, ...] = ()) -> str:
    """The start message: what is served, one address a line (short enough for 80 columns)."""
    from ..web.viewer_routes import VIEWER_DIR, ohif_dir

    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    lines = [f"archive {root}: {counts['studies']} studies, {counts['series']} series, "
             f"{counts['instances']} instances",
             f"  DICOMweb  {base}/dicomweb"]
    if (VIEWER_DIR / "index.html").is_file():
        lines.append(f"  viewer    {base}/viewer")
    if ohif_dir() is not None:
        lines.append(f"  OHIF      {base}/ohif")
    lines.append(f"  metrics   {base}/metrics")
    if cors_origins:
        lines.append(f"  CORS      allowed for {', '.join(cors_origins)}")
    lines.append("Ctrl+C stops the server.")
    return "\n".join(lines)


def serve(
    archive_dir: Path = typer.Argument(
        Path("archive"), help="archive folder (catalog.sqlite + objects/); created if missing"
    ),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8042, help="TCP port"),
    demo: bool = typer.Option(
        False, "--demo", help="add sample studies (a 1,000-frame JPEG-LS CT, an RGB US cine, pydicom test files) once"
    ),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="allow browser viewers from this origin (repeatable; '*' for any). Default: CORS off"
    ),
    max_upload_mb: int = typer.Option(4096, help="largest STOW-RS request body, in MB"),
    public_url: str = typer.Option(
        "", help="public root (e.g. https://pacs.example behind a proxy) for RetrieveURL/BulkDataURI"
    ),
    cache_mb: int = typer.Option(
        64, help="frame cache budget in MB, encoded and decoded frames together (a quarter of it for encoded)"
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
    compress_policy: Path | None = typer.Option(
        None,
        "--compress-policy",
        help="JSON/TOML rules (modality / transfer syntax / size -> lossless target) applied after ingest",
        exists=True,
        dir_okay=False,
    ),
) -> None:
    """Serve an archive over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) at http://HOST:PORT/dicomweb,
    with the viewer at /viewer (and OHIF at /ohif when installed) and metrics at /metrics."""
    import uvicorn

    from ..archive import Archive
    from ..cache import FrameCache, set_default_cache, tune_malloc
    from ..web import create_app
    from ..web.app import UVICORN_OPTIONS
    from ..web.common import ServerConfig

    console = Console(stderr=True)
    # Frames are 0.1-2 MB buffers allocated and freed on every request by a pool of
    # threads: keep glibc from hoarding them, so RSS stays at the cache budget.
    tune_malloc()
    # The server's whole footprint has a budget (issue 5: <= 250 MB RSS), so the frame
    # cache gets a fixed share rather than the library default (5% of RAM).
    set_default_cache(FrameCache(max(cache_mb, 1) << 20))
    archive = Archive(archive_dir)
    worker = None
    if compress_policy is not None:
        from ..policy import PolicyWorker, load_policy

        policy = load_policy(compress_policy)
        if policy.rules:
            worker = PolicyWorker(archive, policy).start()
            console.print(f"compression policy {compress_policy}: {len(policy.rules)} rules")
    if demo:
        fill_demo(archive, console)
    counts = archive.catalog.counts()
    config = ServerConfig(cors_origins=tuple(cors_origin), max_upload_bytes=max_upload_mb << 20, public_url=public_url or None)
    app = create_app(archive, config)
    console.print(banner(archive.root, counts, host, port, cors_origin), highlight=False, markup=False,
                  soft_wrap=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30, **UVICORN_OPTIONS)
    finally:
        if worker is not None:
            worker.stop(drain=False)  # queued instances just stay as stored
