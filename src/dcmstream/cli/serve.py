"""``dcmstream serve [ARCHIVE_DIR | --config FILE]``: the archive's DICOMweb server (uvicorn).

With ``workers`` > 1 uvicorn starts that many processes on the port; each builds its own
app with :func:`create_app_from_env` from the options this command resolved (passed in
the ``DCMSTREAM_SERVE`` environment variable), so each opens the archive itself.

The DIMSE listener (``--dimse-port`` or ``[dimse]``) runs in the main process. Its
counters (and those of the main process's forwarder) are on ``/metrics`` of a
single-process server only: with ``workers`` > 1, ``/metrics`` is answered by a worker,
which reports its own HTTP counters and its own forwarder's, not the listener's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from ..errors import DcmstreamError

if TYPE_CHECKING:
    from ..archive import Archive
    from ..config import ArchiveConfig

from .options import COMPRESS_POLICY_OPTION

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
        # written by temp file and rename beside a file held locked: no sweep takes it meanwhile
        with archive.create_staging(".demo") as held, console.status(f"generating {label} ..."):
            path = held.sibling(".dcm")
            try:
                write_multiframe(path, **kwargs)
                size = path.stat().st_size
                result = archive.ingest_file(path, move=True)
            finally:
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
           cors_origins: list[str] | tuple[str, ...] = (), *, where: str | None = None, workers: int = 1) -> str:
    """The start message: what is served, one address a line (short enough for 80 columns).
    ``where`` names the configuration file of a configured archive (else the folder ``root``)."""
    from ..web.viewer_routes import VIEWER_DIR, ohif_dir

    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    lines = [f"archive {where or root}: {counts['studies']} studies, {counts['series']} series, "
             f"{counts['instances']} instances"]
    if workers > 1:
        lines.append(f"  {workers} server processes")
    lines.append(f"  DICOMweb  {base}/dicomweb")
    if (VIEWER_DIR / "index.html").is_file():
        lines.append(f"  viewer    {base}/viewer")
    if ohif_dir() is not None:
        lines.append(f"  OHIF      {base}/ohif")
    lines.append(f"  metrics   {base}/metrics")
    if cors_origins:
        lines.append(f"  CORS      allowed for {', '.join(cors_origins)}")
    lines.append("Ctrl+C stops the server.")
    return "\n".join(lines)


#: The environment variable through which ``dcmstream serve`` hands its resolved options
#: (JSON) to uvicorn's worker processes, which build their app with :func:`create_app_from_env`.
SERVE_ENV = "DCMSTREAM_SERVE"


@dataclass(frozen=True)
class ServeOptions:
    """What every server process needs to build its app: where the archive is (a
    configuration file or a folder) and the server's settings, flags already applied."""

    config: str | None = None
    archive_dir: str | None = None
    cache_mb: int = 64
    max_upload_mb: int = 4096
    cors_origins: tuple[str, ...] = ()
    public_url: str | None = None
    compress_policy: str | None = None

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, text: str) -> ServeOptions:
        data = json.loads(text)
        data["cors_origins"] = tuple(data.get("cors_origins") or ())
        return cls(**data)


def served_config(options: ServeOptions) -> ArchiveConfig | None:
    """The configuration file of ``options``, read once per process (None: a folder archive)."""
    from ..config import load_config

    return None if options.config is None else load_config(options.config)


def open_served_archive(options: ServeOptions, loaded: ArchiveConfig | None = None) -> Archive:
    """The archive of ``options``: from the configuration file (``loaded``, if already read),
    else the folder."""
    from ..archive import Archive

    if options.config is not None:
        from ..config import open_archive

        config = loaded or served_config(options)
        assert config is not None  # (options.config is set)
        return open_archive(config)
    return Archive(options.archive_dir or "archive")


def build_app(options: ServeOptions, console: Console | None = None) -> tuple[Any, Archive, Any]:
    """(app, archive, compression policy worker or None) of one server process."""
    from ..cache import FrameCache, set_default_cache, tune_malloc
    from ..web import create_app
    from ..web.common import ServerConfig

    # Frames are 0.1-2 MB buffers allocated and freed on every request by a pool of
    # threads: keep glibc from hoarding them, so RSS stays at the cache budget.
    tune_malloc()
    # The server's whole footprint has a budget (issue 5: <= 250 MB RSS), so the frame
    # cache gets a fixed share rather than the library default (5% of RAM).
    set_default_cache(FrameCache(max(options.cache_mb, 1) << 20))
    loaded = served_config(options)
    archive = open_served_archive(options, loaded)
    worker = None
    if options.compress_policy is not None:
        from ..policy import PolicyWorker, load_policy

        policy = load_policy(options.compress_policy)
        if policy.rules:
            worker = PolicyWorker(archive, policy).start()
            if console is not None:
                console.print(f"compression policy {options.compress_policy}: {len(policy.rules)} rules")
    forwarder = start_forwarder(archive, loaded)
    start_sweeper(archive, loaded)
    collectors = []
    if forwarder is not None:  # its counters on this process's /metrics
        from ..dimse.metrics import ForwarderCollector

        collectors.append(ForwarderCollector(forwarder))
    config = ServerConfig(
        cors_origins=options.cors_origins, max_upload_bytes=options.max_upload_mb << 20, public_url=options.public_url
    )
    auth, audit = security_settings(loaded)
    return create_app(archive, config, auth=auth, audit=audit, collectors=collectors), archive, worker


def security_settings(loaded: ArchiveConfig | None) -> tuple[Any, Any]:
    """(``[auth]``, ``[audit]``) of the configuration file; a folder archive has neither
    (it gets them by being described in a file: ``[catalog] url = "sqlite:///DIR/catalog.sqlite"``
    and ``[storage.hot] url = "file:///DIR"`` is the folder archive ``DIR``)."""
    from ..config import AuditConfig, AuthConfig

    if loaded is None:
        return AuthConfig(), AuditConfig()
    return loaded.auth, loaded.audit


def only_loopback(host: str) -> bool:
    """Whether listening on ``host`` is reachable from this machine only: a loopback
    address, or a name whose every address is one (``0.0.0.0``, ``""``: no)."""
    import socket

    from ..config import is_loopback_host

    loopback = is_loopback_host(host)
    if not loopback and host and not host.replace(".", "").isdigit() and ":" not in host:
        try:  # a host name: loopback when every address it has is
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
            loopback = bool(addresses) and all(is_loopback_host(str(a)) for a in addresses)
        except OSError:
            loopback = False
    return loopback


def check_bind(host: str, auth_mode: str, insecure_bind: bool) -> None:
    """Without authentication the server answers anyone who reaches it: refuse an address
    other hosts can reach unless the operator says so (``--insecure-bind``)."""
    if auth_mode != "none" or insecure_bind:
        return
    if not only_loopback(host):
        raise ServeSecurityError(
            f"refusing to serve patient data on {host} without authentication: configure [auth] in a --config "
            "file (mode = \"oidc\" or \"api-keys\"), or pass --insecure-bind if this network is trusted"
        )


def check_dimse_bind(settings: Any, insecure_bind: bool) -> None:
    """DIMSE has no tokens: its access control is the list of accepted calling AE titles.
    Without one, any peer that reaches the port stores, queries and retrieves: refuse an
    address other hosts can reach unless the operator says so (``--insecure-bind``)."""
    if settings is None or settings.accepted_calling_ae_titles or insecure_bind:
        return
    if not only_loopback(settings.host):
        raise ServeSecurityError(
            f"refusing to accept DICOM associations on {settings.host} from any calling AE title: list the peers "
            "allowed in [dimse] accepted_calling_ae_titles of a --config file (or --dimse-accept TITLE), "
            "or pass --insecure-bind if this network is trusted"
        )


class ServeSecurityError(DcmstreamError, RuntimeError):
    """``dcmstream serve`` without authentication (HTTP) or without accepted calling AE
    titles (DIMSE) on an address other hosts can reach."""


class ServeEnvironmentError(DcmstreamError, RuntimeError):
    """The multi-worker app factory was started without the options 'dcmstream serve' passes."""


def create_app_from_env() -> Any:
    """The app of one uvicorn worker process (``[server] workers`` > 1): each process
    opens its own archive from the options ``dcmstream serve`` put in ``DCMSTREAM_SERVE``;
    they share nothing but the catalog database and the blob stores."""
    text = os.environ.get(SERVE_ENV)
    if not text:
        raise ServeEnvironmentError(f"{SERVE_ENV} is not set: this factory is started by 'dcmstream serve --workers N'")
    app, _, _ = build_app(ServeOptions.from_env(text))
    return app


def serve(
    archive_dir: Path | None = typer.Argument(
        None, help="archive folder (catalog.sqlite + objects/; default ./archive); created if missing. Not with --config"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="archive configuration (TOML: [catalog], [storage.*], [server], ...) instead of a "
        "folder; the flags below override its [server] values", exists=True, dir_okay=False,
    ),
    host: str | None = typer.Option(None, help="address to listen on (default 127.0.0.1)"),
    port: int | None = typer.Option(None, help="TCP port (default 8042)"),
    workers: int | None = typer.Option(
        None, help="server processes on the port (default 1); each opens the archive itself"
    ),
    demo: bool = typer.Option(
        False, "--demo", help="add sample studies (a 1,000-frame JPEG-LS CT, an RGB US cine, pydicom test files) once"
    ),
    cors_origin: list[str] | None = typer.Option(
        None, "--cors-origin", help="allow browser viewers from this origin (repeatable; '*' for any). Default: CORS off"
    ),
    max_upload_mb: int | None = typer.Option(None, help="largest STOW-RS request body, in MB (default 4096)"),
    public_url: str | None = typer.Option(
        None, help="public root (e.g. https://pacs.example behind a proxy) for RetrieveURL/BulkDataURI"
    ),
    cache_mb: int | None = typer.Option(
        None, help="frame cache budget in MB per process, encoded and decoded frames together (a quarter of it for "
        "encoded; default 64)"
    ),
    log_level: str | None = typer.Option(None, help="uvicorn log level (default warning)"),
    compress_policy: Path | None = COMPRESS_POLICY_OPTION,
    insecure_bind: bool = typer.Option(
        False, "--insecure-bind", help="serve without authentication ([auth] mode \"none\"; for DIMSE: without "
        "accepted calling AE titles) on an address other than loopback: anyone who reaches the port reads and "
        "writes every study"
    ),
    dimse_port: int | None = typer.Option(
        None, "--dimse-port", help="also listen for DICOM (DIMSE: C-STORE/FIND/MOVE/GET, storage commitment) on this "
        "port (e.g. 11112; default: the config's [dimse], else off)"
    ),
    dimse_host: str | None = typer.Option(
        None, "--dimse-host", help="address the DIMSE listener listens on (default: the config's [dimse] host, "
        "else 127.0.0.1; not --host's)"
    ),
    ae_title: str | None = typer.Option(None, "--ae-title", help="the DIMSE listener's AE title (default DCMSTREAM)"),
    dimse_accept: list[str] | None = typer.Option(
        None, "--dimse-accept", help="a calling AE title allowed to associate (repeatable; adds to the config's "
        "[dimse] accepted_calling_ae_titles; others are rejected once one is listed)"
    ),
    dimse_peer: list[str] | None = typer.Option(
        None, "--dimse-peer", help="a C-MOVE destination AE@HOST:PORT (repeatable; adds to the config's [[dimse.peers]])"
    ),
) -> None:
    """Serve an archive over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) at http://HOST:PORT/dicomweb,
    with the viewer at /viewer (and OHIF at /ohif when installed) and metrics at /metrics.

    The archive is a folder, or what a --config file describes (a PostgreSQL or SQLite
    catalog, folder or S3 storage). Every flag given overrides the config's [server]
    value. Any number of serve processes, on this host or others, may share one
    configured catalog and storage: they behave as one archive.
    """
    import uvicorn

    from ..config import ServerSettings, load_config
    from ..web.app import UVICORN_OPTIONS

    console = Console(stderr=True)
    settings = ServerSettings()
    auth_mode = "none"
    dimse_settings = None
    loaded: ArchiveConfig | None = None
    if config is not None:
        if archive_dir is not None:
            raise typer.BadParameter("give an archive folder or --config, not both")
        loaded = load_config(config)
        settings, auth_mode = loaded.server, loaded.auth.mode
        dimse_settings = loaded.dimse
        if loaded.audit.path is not None:
            from ..audit import AuditLog

            AuditLog(loaded.audit.path).close()  # unwritable: a ConfigError now, not in each worker later
    dimse_settings = dimse_options(dimse_settings, dimse_port, ae_title, dimse_peer, dimse_host, dimse_accept)
    audit_path = loaded.audit.path if loaded is not None else None
    policy = compress_policy or settings.compress_policy
    options = ServeOptions(
        config=None if config is None else str(config.resolve()),
        archive_dir=None if config is not None else str(archive_dir or Path("archive")),
        cache_mb=cache_mb if cache_mb is not None else settings.cache_mb,
        max_upload_mb=max_upload_mb if max_upload_mb is not None else settings.max_upload_mb,
        cors_origins=tuple(cors_origin) if cors_origin else settings.cors_origins,
        public_url=public_url if public_url is not None else settings.public_url,
        compress_policy=None if policy is None else str(policy),
    )
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    workers = workers if workers is not None else settings.workers
    log_level = log_level if log_level is not None else settings.log_level
    if workers < 1:
        raise typer.BadParameter("--workers must be at least 1")
    check_bind(host, auth_mode, insecure_bind)
    check_dimse_bind(dimse_settings, insecure_bind)
    where = str(config) if config is not None else None
    if workers == 1:
        app, archive, worker = build_app(options, console)
    else:
        # Each worker process builds its own app; this one only prepares and reports
        # (and runs the DIMSE listener, on an archive of its own).
        app, worker = None, None
        archive = open_served_archive(options, loaded)
    dimse = None
    try:
        if demo:
            fill_demo(archive, console)
        counts = archive.catalog.counts()
        console.print(banner(archive.root, counts, host, port, options.cors_origins, where=where, workers=workers),
                      highlight=False, markup=False, soft_wrap=True)
        if dimse_settings is not None:
            if app is None:  # the web workers are other processes: this archive needs its own
                if options.compress_policy is not None:
                    worker = start_policy(archive, options.compress_policy)
                start_forwarder(archive, loaded)
            dimse = start_dimse(archive, dimse_settings, console, audit_path)
            if app is not None:  # its counters on /metrics (one process)
                from ..dimse.metrics import DimseCollector
                from ..web.app import add_collector

                add_collector(app, DimseCollector(dimse))
            else:
                console.print("  (DIMSE counters are not on /metrics with --workers > 1: the listener runs in "
                              "this main process, /metrics is answered by the workers)", highlight=False, markup=False)
        run_options: dict[str, Any] = dict(host=host, port=port, log_level=log_level, timeout_keep_alive=30,
                                           **UVICORN_OPTIONS)
        if app is not None:
            uvicorn.run(app, **run_options)
        else:
            if dimse is None:
                archive.close()
            os.environ[SERVE_ENV] = options.to_env()
            uvicorn.run(f"{__name__}:create_app_from_env", factory=True, workers=workers, **run_options)
    finally:
        if dimse is not None:
            stop_dimse(dimse)
        if worker is not None:
            worker.stop(drain=False)  # queued instances just stay as stored


# -- the DIMSE listener (dcmstream.dimse) -----------------------------------------------------
def dimse_options(settings: Any, port: int | None, ae_title: str | None, peers: list[str] | None,
                  host: str | None = None, accept: list[str] | None = None) -> Any:
    """The DIMSE listener's settings: the config's ``[dimse]`` with the flags applied; None
    when neither asks for a listener. Its address is ``--dimse-host``, else the config's
    ``[dimse] host``, else loopback: never the HTTP ``--host`` (an HTTP server opened to
    the network, behind tokens, does not open the DIMSE port, which has none)."""
    from ..config import DimseSettings, parse_peer
    from ..config import _ae_title as checked_ae_title  # the one AE title check (config's and flags')

    if settings is None and port is None:
        return None
    settings = settings or DimseSettings()
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if accept:
        titles = [checked_ae_title(t, "--dimse-accept") for t in accept]
        changes["accepted_calling_ae_titles"] = tuple(dict.fromkeys(settings.accepted_calling_ae_titles + tuple(titles)))
    if port is not None:
        changes["port"] = port
    if ae_title is not None:
        changes["ae_title"] = ae_title.strip()
    if peers:
        changes["peers"] = settings.peers + tuple(parse_peer(p, "--dimse-peer") for p in peers)
    return dataclasses.replace(settings, **changes)


def start_policy(archive: Archive, policy_path: str) -> Any:
    """The compression policy worker of this process's archive (the DIMSE listener's, when
    the web workers are other processes), or None when the policy has no rules."""
    from ..policy import PolicyWorker, load_policy

    policy = load_policy(policy_path)
    return PolicyWorker(archive, policy).start() if policy.rules else None


def start_dimse(archive: Archive, settings: Any, console: Console, audit_path: Any = None) -> Any:
    """Start the DIMSE listener on ``archive``, writing its operations to the ``[audit]``
    trail at ``audit_path`` (None: none); stopped by the caller with :func:`stop_dimse`."""
    from ..audit import AuditLog
    from ..dimse import DimseServer

    audit = AuditLog(audit_path) if audit_path is not None else None
    server = DimseServer(archive, settings, audit=audit).start()
    titles = settings.accepted_calling_ae_titles
    console.print(f"  DIMSE     {settings.ae_title}@{settings.host}:{server.port}"
                  f"{' (calling AE titles: ' + ', '.join(titles) + ')' if titles else ''}", highlight=False, markup=False)
    return server


def stop_dimse(server: Any) -> None:
    """Stop the listener of :func:`start_dimse` and close its audit trail."""
    server.stop()
    if server.audit.log is not None:
        server.audit.log.close()


def start_sweeper(archive: Archive, loaded: ArchiveConfig | None) -> Any:
    """Sweep the leftovers of killed writers (staging files, orphan blobs, journalled
    deletions; :mod:`dcmstream.archive.sweep`) in a daemon thread: now, without delaying
    readiness, and every ``[archive] sweep_interval_seconds`` (default an hour)."""
    from ..archive.sweep import Sweeper

    interval = 3600.0 if loaded is None else loaded.sweep_interval
    return Sweeper(archive, interval).start()


def start_forwarder(archive: Archive, config: ArchiveConfig | None) -> Any:
    """The ``[[forward]]`` rules of the configuration, run on what this process's archive
    stores (STOW-RS, DIMSE); None without rules. A daemon thread: queued instances not yet
    sent when the server stops are not forwarded."""
    if config is None or not config.forward:
        return None
    from ..dimse.forward import Forwarder

    title = config.dimse.ae_title if config.dimse is not None else "DCMSTREAM"
    return Forwarder(archive, config.forward, calling_ae_title=title).start()
