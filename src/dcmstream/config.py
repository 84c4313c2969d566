"""The archive configuration file (``--config archive.toml``) and the archive it describes.

Without a configuration file dcmstream archives into one folder (SQLite catalog +
``objects/``). A configuration file describes a scale-out archive instead: a catalog
database (SQLite or PostgreSQL), one or more blob stores (folders or S3 buckets) in
tier order, lifecycle rules between them, and the server's settings::

    [archive]
    root = "/srv/dcmstream"        # local folder: staging files (optional)
    sweep_interval_seconds = 3600  # servers sweep killed writers' leftovers at start and this often
    [catalog]
    url = "postgresql://dcm@db.example:5432/dcmstream"   # or sqlite:////path/catalog.sqlite
    [storage.hot]                  # the first [storage.*] table: new instances go here
    url = "file:///srv/dcmstream"  # blobs in its objects/, staging files in its tmp/
    price_per_gb_month = 0.10      # optional, for cost estimates
    [storage.cold]
    url = "s3://bucket/prefix"
    endpoint_url = "http://127.0.0.1:9000"   # credentials: the AWS_* environment variables
    [[lifecycle]]
    from = "hot"
    to = "cold"
    after_days_without_access = 30           # and/or after_days_since_ingest
    [server]
    host = "127.0.0.1"
    port = 8042
    workers = 4
    [auth]                         # who may do what (default mode "none": loopback only)
    mode = "oidc"                  # or "api-keys" or "none"
    issuer = "https://idp.example/realms/radiology"
    jwks_url = "https://idp.example/realms/radiology/protocol/openid-connect/certs"  # or file://
    audience = "dcmstream"
    roles_claim = "realm_access.roles"       # dotted path to a list of reader/uploader/admin
    client_id = "dcmstream-viewer"           # the browser viewers' public client (PKCE)
    [auth.api_keys]                # machine clients: SHA-256 hex of the key -> role
    "9f86d081884c7d65...0f00a08" = "uploader"
    [audit]
    path = "/var/log/dcmstream/audit.jsonl"  # one JSON object a line, appended

:func:`load_config` reads and checks a file (an unknown key, a wrong type, a URL of an
unknown scheme or a credential written into the file is a :class:`ConfigError` naming
the key and the file); :func:`open_archive` builds the :class:`~dcmstream.archive.Archive`
it describes. Every server process and every host opening the same file shares one
archive: the catalog database and the blob stores are the shared state, nothing else is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .archive.archive import UnknownTierError
from .archive.lifecycle import LifecycleRule  # the engine's rule: the config only reads it
from .errors import DcmstreamError

if TYPE_CHECKING:
    from .archive import Archive, BlobStore, Catalog
    from .cache import FrameCache

__all__ = [
    "ConfigError",
    "ArchiveConfig",
    "StorageConfig",
    "LifecycleRule",
    "ServerSettings",
    "AuthConfig",
    "ApiKey",
    "AuditConfig",
    "AUTH_MODES",
    "is_loopback_host",
    "ROLES",
    "DimsePeer",
    "DimseSettings",
    "ForwardRule",
    "parse_peer",
    "load_config",
    "parse_config",
    "open_archive",
    "open_catalog",
    "open_store",
    "CONFIG_ENV",
]

#: The environment variable through which a server passes its configuration file to its
#: worker processes (``[server] workers > 1``).
CONFIG_ENV = "DCMSTREAM_CONFIG"

_CATALOG_SCHEMES = ("sqlite", "postgresql", "postgres")
_STORAGE_SCHEMES = ("file", "s3")
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: Keys that would put a secret into the file: credentials come from the environment.
_CREDENTIAL_KEYS = frozenset(
    {"aws_secret_access_key", "aws_access_key_id", "aws_session_token", "secret_access_key",
     "access_key_id", "secret_key", "access_key", "session_token", "password", "secret"}
)


class ConfigError(DcmstreamError, ValueError):
    """The configuration file is missing, not TOML, or has an unknown or invalid key."""


@dataclass(frozen=True)
class StorageConfig:
    """One ``[storage.NAME]`` table: a blob store (a tier). ``options`` are the store's
    own settings (for S3: ``endpoint_url``, ``region``, ...), already checked."""

    name: str
    url: str
    price_per_gb_month: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` table; ``dcmstream serve``'s flags override each value."""

    host: str = "127.0.0.1"
    port: int = 8042
    workers: int = 1
    cache_mb: int = 64
    max_upload_mb: int = 4096
    cors_origins: tuple[str, ...] = ()
    public_url: str | None = None
    compress_policy: Path | None = None
    log_level: str = "warning"


#: ``[auth] mode``: "none" (no identities; the server refuses non-loopback addresses unless
#: told ``--insecure-bind``), "oidc" (JWT bearer tokens of an OpenID Connect issuer, plus any
#: ``[auth.api_keys]``), "api-keys" (only the configured keys).
AUTH_MODES = ("none", "oidc", "api-keys")
#: The roles, weakest first: each includes the ones before it.
ROLES = ("reader", "uploader", "admin")
#: Signature algorithms a token may use: asymmetric only (never "none", never HMAC, whose
#: "secret" would be the issuer's public key).
_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256")
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ApiKey:
    """One ``[auth.api_keys]`` entry: the SHA-256 (hex) of a machine client's key, never the
    key itself, its role and the name the audit trail records for it."""

    sha256: str
    role: str
    name: str


@dataclass(frozen=True)
class AuthConfig:
    """The ``[auth]`` table. The default (mode "none") is today's behaviour: no identities.

    ``jwks_url``, ``authorization_endpoint`` and ``token_endpoint`` left out are discovered
    from ``{issuer}/.well-known/openid-configuration`` when first needed (by the server,
    not when the file is read: reading a configuration needs no network).
    """

    mode: str = "none"
    issuer: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"
    algorithms: tuple[str, ...] = _DEFAULT_ALGORITHMS
    leeway_seconds: int = 30
    #: The browser viewers' public OIDC client (authorization code + PKCE, no secret).
    client_id: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    scope: str = "openid profile"
    api_keys: tuple[ApiKey, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclass(frozen=True)
class AuditConfig:
    """The ``[audit]`` table: where the audit trail (JSON lines) is appended; None: off."""

    path: Path | None = None


@dataclass(frozen=True)
class ArchiveConfig:
    """A whole configuration file, checked. ``storages`` are in file order: the tiers,
    the first one hot (new instances are written to it)."""

    path: Path | None
    catalog_url: str
    storages: tuple[StorageConfig, ...]
    lifecycle: tuple[LifecycleRule, ...] = ()
    server: ServerSettings = ServerSettings()
    root: Path | None = None
    #: Staging files older than this (seconds) are swept when the archive opens.
    staging_max_age: float = 3600.0
    #: ``[archive] sweep_interval_seconds``: a server sweeps leftovers of killed writers at
    #: start and then this often (0: only at start); see :mod:`dcmstream.archive.sweep`.
    sweep_interval: float = 3600.0
    auth: AuthConfig = AuthConfig()
    audit: AuditConfig = AuditConfig()
    #: ``[dimse]``: the DICOM network listener (None: no listener).
    dimse: DimseSettings | None = None
    #: ``[[forward]]``: routing rules run after every stored instance.
    forward: tuple[ForwardRule, ...] = ()

    @property
    def hot(self) -> StorageConfig:
        return self.storages[0]

    def storage(self, name: str) -> StorageConfig:
        """The ``[storage.NAME]`` table; :class:`~dcmstream.archive.archive.UnknownTierError`
        (a KeyError) when there is none."""
        for s in self.storages:
            if s.name == name:
                return s
        have = ", ".join(s.name for s in self.storages)
        raise UnknownTierError(f"{self.path or 'the configuration'}: no [storage.{name}] table (have: {have})")

    def local_root(self) -> Path:
        """The archive's local folder (staging files, the demo marker): ``[archive] root``,
        else the folder of the first ``file://`` store, else of a SQLite catalog, else a
        folder under the system's temporary folder named after the catalog."""
        if self.root is not None:
            return self.root
        for s in self.storages:
            if s.scheme == "file":
                return _file_path(s.url)
        if self.catalog_url.startswith("sqlite:///"):
            return Path(self.catalog_url[len("sqlite:///"):]).parent
        digest = hashlib.sha256(self.catalog_url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"dcmstream-{digest}"


# -- parsing ----------------------------------------------------------------------------------
class _Table:
    """A TOML table being read: every key taken is checked, leftovers are errors."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {where or 'the file'} must be a table")
        self.data = dict(data)
        self.where = where
        self.source = source

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.name(key)} {message}")

    def take(self, key: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.source}: {'[' + self.where + '] ' if self.where else ''}needs a {key!r} key")
            return default
        value = self.data.pop(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # TOML integers are numbers too
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"must be {_KIND_NAMES.get(kind, kind.__name__)}, not {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any = None) -> Any:
        """A number that must be > 0 when given."""
        if key not in self.data:
            return default
        value = self.take(key, kind)
        if value <= 0:
            raise self.fail(key, f"must be positive, not {value!r}")
        return value

    def done(self) -> None:
        for key in self.data:
            if key.lower() in _CREDENTIAL_KEYS:
                raise ConfigError(
                    f"{self.source}: {self.name(key)}: credentials do not belong in the configuration file; "
                    "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment "
                    "(PGPASSWORD or ~/.pgpass for the catalog database)"
                )
            raise ConfigError(f"{self.source}: unknown key {self.name(key)!r}")


_KIND_NAMES: dict[type, str] = {
    str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"
}


def _file_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def _relative_to(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _catalog_url(table: _Table, base: Path) -> str:
    url = table.take("url", str, required=True)
    scheme = urlparse(url).scheme.split("+", 1)[0]
    if scheme not in _CATALOG_SCHEMES:
        raise table.fail("url", f"{url!r}: expected sqlite:///PATH or postgresql://HOST/DATABASE")
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise table.fail("url", f"{url!r}: a SQLite catalog is sqlite:///PATH (relative to the file) "
                                    "or sqlite:////ABSOLUTE/PATH")
        return f"sqlite:///{_relative_to(base, url[len('sqlite:///'):])}"
    return url


_S3_OPTIONS: dict[str, tuple[type, bool]] = {
    # key: (type, must be positive)
    "endpoint_url": (str, False),
    "region": (str, False),
    "addressing_style": (str, False),
    "staging_dir": (str, False),
    "multipart_threshold_mb": (int, True),
    "multipart_chunksize_mb": (int, True),
    "max_concurrency": (int, True),
}


def _storage(name: str, table: _Table, base: Path) -> StorageConfig:
    url = table.take("url", str, required=True)
    parsed = urlparse(url)
    if parsed.scheme not in _STORAGE_SCHEMES:
        raise table.fail("url", f"{url!r}: expected file:///FOLDER or s3://BUCKET/PREFIX")
    price = table.take("price_per_gb_month", float)
    if price is not None and price < 0:
        raise table.fail("price_per_gb_month", f"must not be negative, not {price!r}")
    options: dict[str, Any] = {}
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise table.fail("url", f"{url!r}: expected file:///ABSOLUTE/FOLDER")
        fsync = table.take("fsync", bool)
        if fsync is not None:
            options["fsync"] = fsync
    else:
        if not parsed.netloc:
            raise table.fail("url", f"{url!r}: expected s3://BUCKET/PREFIX")
        for key, (kind, positive) in _S3_OPTIONS.items():
            value = table.positive(key, kind) if positive else table.take(key, kind)
            if value is not None:
                options[key] = value
        if "endpoint_url" in options and urlparse(options["endpoint_url"]).scheme not in ("http", "https"):
            raise table.fail("endpoint_url", f"{options['endpoint_url']!r}: expected http(s)://HOST[:PORT]")
        if "staging_dir" in options:
            options["staging_dir"] = str(_relative_to(base, options["staging_dir"]))
    table.done()
    return StorageConfig(name, url, price, options)


def _lifecycle(table: _Table, names: set[str]) -> LifecycleRule:
    source = table.take("from", str, required=True)
    target = table.take("to", str, required=True)
    for key, value in (("from", source), ("to", target)):
        if value not in names:
            raise table.fail(key, f"names no [storage.{value}] table (have: {', '.join(sorted(names))})")
    if source == target:
        raise table.fail("to", "must name another storage than 'from'")
    idle = table.positive("after_days_without_access", float)
    age = table.positive("after_days_since_ingest", float)
    table.done()
    if idle is None and age is None:
        raise ConfigError(f"{table.source}: {table.where} needs after_days_without_access and/or after_days_since_ingest")
    return LifecycleRule(source, target, idle, age)


def _server(table: _Table, base: Path) -> ServerSettings:
    defaults = ServerSettings()
    port = table.positive("port", int, defaults.port)
    if port > 65535:
        raise table.fail("port", f"must be a TCP port (1-65535), not {port}")
    origins = table.take("cors_origins", list, [])
    if not all(isinstance(o, str) for o in origins):
        raise table.fail("cors_origins", "must be a list of strings")
    policy = table.take("compress_policy", str)
    log_level = table.take("log_level", str, defaults.log_level).lower()
    if log_level not in _LOG_LEVELS:
        raise table.fail("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
    public_url = table.take("public_url", str)
    settings = ServerSettings(
        host=table.take("host", str, defaults.host),
        port=port,
        workers=table.positive("workers", int, defaults.workers),
        cache_mb=table.positive("cache_mb", int, defaults.cache_mb),
        max_upload_mb=table.positive("max_upload_mb", int, defaults.max_upload_mb),
        cors_origins=tuple(origins),
        public_url=public_url or None,
        compress_policy=None if policy is None else _relative_to(base, policy),
        log_level=log_level,
    )
    table.done()
    return settings


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, IPv6 in brackets or not) is this machine's
    loopback: ``localhost``, 127.0.0.0/8, ``::1``. Other names are not resolved here."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _auth_url(table: _Table, key: str, *, file_ok: bool = False) -> str | None:
    """An https:// URL (http:// only to a loopback host: a test or a local issuer;
    file:// where ``file_ok``), or None when the key is absent."""
    url = table.take(key, str)
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.netloc:
        return url
    if parsed.scheme == "http" and parsed.hostname and is_loopback_host(parsed.hostname):
        return url
    if file_ok and parsed.scheme == "file" and parsed.path.startswith("/") and parsed.netloc in ("", "localhost"):
        return url
    also = ", file:///ABSOLUTE/PATH" if file_ok else ""
    raise table.fail(key, f"{url!r}: expected https://... (http:// only to a loopback address{also})")


def _api_keys(table: _Table) -> tuple[ApiKey, ...]:
    keys = []
    for digest in list(table.data):
        value = table.data.pop(digest)
        where = table.name(digest)
        text = digest.lower()
        if len(text) != 64 or not set(text) <= _HEX:
            raise ConfigError(
                f"{table.source}: {where}: an [auth.api_keys] name must be the SHA-256 (64 hex digits) of the key, "
                "never the key itself (printf %s \"$KEY\" | sha256sum)"
            )
        if isinstance(value, str):
            role, name = value, f"api-key-{text[:8]}"
        elif isinstance(value, Mapping):
            entry = _Table(value, where, table.source)
            role = entry.take("role", str, required=True)
            name = entry.take("name", str, f"api-key-{text[:8]}")
            entry.done()
        else:
            raise ConfigError(f"{table.source}: {where} must be a role ({', '.join(ROLES)}) or a table {{role, name}}")
        if role not in ROLES:
            raise ConfigError(f"{table.source}: {where} role must be one of {', '.join(ROLES)}, not {role!r}")
        keys.append(ApiKey(text, role, name))
    return tuple(keys)


def _auth(table: _Table) -> AuthConfig:
    """The ``[auth]`` table, checked; secrets (a client secret, a key in clear) are refused."""
    defaults = AuthConfig()
    for key in ("client_secret", "api_key", "key", "token"):
        if key in table.data:
            raise table.fail(key, "is a secret and does not belong in the configuration file: the viewers are public "
                                  "clients (PKCE), and [auth.api_keys] holds the SHA-256 of each key")
    mode = table.take("mode", str, defaults.mode)
    if mode not in AUTH_MODES:
        raise table.fail("mode", f"must be one of {', '.join(repr(m) for m in AUTH_MODES)}, not {mode!r}")
    issuer = _auth_url(table, "issuer")
    jwks_url = _auth_url(table, "jwks_url", file_ok=True)
    audience = table.take("audience", str)
    roles_claim = table.take("roles_claim", str, defaults.roles_claim)
    if not roles_claim or any(not part for part in roles_claim.split(".")):
        raise table.fail("roles_claim", f"must be a claim name or a dotted path (realm_access.roles), not {roles_claim!r}")
    algorithms = table.take("algorithms", list, list(defaults.algorithms))
    bad = [a for a in algorithms if a not in _TOKEN_ALGORITHMS]
    if bad or not algorithms:
        raise table.fail("algorithms", f"must be a non-empty list of {', '.join(_TOKEN_ALGORITHMS)} (asymmetric "
                                       f"signatures only), not {bad or algorithms!r}")
    leeway = table.take("leeway_seconds", int, defaults.leeway_seconds)
    if not 0 <= leeway <= 600:
        raise table.fail("leeway_seconds", f"must be between 0 and 600, not {leeway}")
    client_id = table.take("client_id", str)
    authorization_endpoint = _auth_url(table, "authorization_endpoint")
    token_endpoint = _auth_url(table, "token_endpoint")
    scope = table.take("scope", str, defaults.scope)
    keys = _api_keys(_Table(table.take("api_keys", dict, {}), f"{table.where}.api_keys", table.source))
    table.done()
    if mode == "oidc":
        for key, value in (("issuer", issuer), ("audience", audience)):
            if not value:
                raise ConfigError(f"{table.source}: [auth] mode = \"oidc\" needs {key!r}")
    if mode == "api-keys" and not keys:
        raise ConfigError(f"{table.source}: [auth] mode = \"api-keys\" needs at least one [auth.api_keys] entry")
    if mode == "none" and (keys or issuer):
        raise table.fail("mode", "is \"none\" but the table configures identities: set mode = \"oidc\" or \"api-keys\"")
    return AuthConfig(
        mode=mode, issuer=issuer, jwks_url=jwks_url, audience=audience,
        roles_claim=roles_claim, algorithms=tuple(algorithms), leeway_seconds=leeway, client_id=client_id,
        authorization_endpoint=authorization_endpoint, token_endpoint=token_endpoint, scope=scope, api_keys=keys,
    )


def _audit(table: _Table, base: Path) -> AuditConfig:
    path = table.take("path", str)
    table.done()
    if path is not None and not path.strip():
        raise table.fail("path", "must name a file")
    return AuditConfig(None if path is None else _relative_to(base, path))


def parse_config(data: Mapping[str, Any], *, source: str = "<config>", base: Path | None = None) -> ArchiveConfig:
    """Check a parsed TOML document; ``base`` is the folder relative paths start from."""
    base = (base or Path.cwd()).resolve()
    top = _Table(data, "", source)
    archive = _Table(top.take("archive", dict, {}), "archive", source)
    root_text = archive.take("root", str)
    staging_max_age = archive.positive("staging_max_age_seconds", float, 3600.0)
    sweep_interval = archive.take("sweep_interval_seconds", float, 3600.0)
    if sweep_interval < 0:
        raise archive.fail("sweep_interval_seconds", f"must be 0 (only at start) or positive, not {sweep_interval!r}")
    archive.done()
    catalog = _Table(top.take("catalog", dict, required=True), "catalog", source)
    catalog_url = _catalog_url(catalog, base)
    catalog.done()
    storage_tables = top.take("storage", dict, required=True)
    if not storage_tables:
        raise ConfigError(f"{source}: needs at least one [storage.NAME] table")
    storages = tuple(
        _storage(name, _Table(table, f"storage.{name}", source), base) for name, table in storage_tables.items()
    )
    rules_data = top.take("lifecycle", list, [])
    names = {s.name for s in storages}
    rules = tuple(
        _lifecycle(_Table(rule, f"lifecycle[{i}]", source), names) for i, rule in enumerate(rules_data)
    )
    server = _server(_Table(top.take("server", dict, {}), "server", source), base)
    auth = _auth(_Table(top.take("auth", dict, {}), "auth", source))
    audit = _audit(_Table(top.take("audit", dict, {}), "audit", source), base)
    dimse, forward = _dimse_tables(top, source)
    top.done()
    return ArchiveConfig(
        path=None,
        catalog_url=catalog_url,
        storages=storages,
        lifecycle=rules,
        server=server,
        root=None if root_text is None else _relative_to(base, root_text),
        staging_max_age=staging_max_age,
        sweep_interval=sweep_interval,
        auth=auth,
        audit=audit,
        dimse=dimse,
        forward=forward,
    )


def load_config(path: str | os.PathLike[str]) -> ArchiveConfig:
    """Read and check a configuration file (relative paths in it are relative to it)."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return replace(parse_config(data, source=str(path), base=path.parent), path=path)


# -- [dimse] and [[forward]] --------------------------------------------------------------------
@dataclass(frozen=True)
class DimsePeer:
    """A DICOM application entity the archive talks to: a C-MOVE destination, a forwarding
    target, the ``dcmstream send --to AE@HOST:PORT`` address."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class DimseSettings:
    """The ``[dimse]`` table: the DIMSE listener of ``dcmstream serve`` (C-ECHO, C-STORE,
    C-FIND, C-MOVE, C-GET, storage commitment)."""

    ae_title: str = "DCMSTREAM"
    host: str = "127.0.0.1"
    port: int = 11112
    #: Calling AE titles allowed to associate; empty: any.
    accepted_calling_ae_titles: tuple[str, ...] = ()
    #: Known destinations of C-MOVE (and of storage commitment reports on a new association).
    peers: tuple[DimsePeer, ...] = ()
    max_associations: int = 32
    #: Seconds without a PDU from the peer before the association is aborted.
    network_timeout: float = 60.0

    def peer(self, ae_title: str) -> DimsePeer | None:
        """The configured peer with this AE title (trailing spaces ignored)."""
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == wanted), None)


@dataclass(frozen=True)
class ForwardRule:
    """A ``[[forward]]`` rule: instances stored afterwards that match ``modality`` and
    ``calling_ae_title`` (both optional; None matches anything) are sent to ``to``."""

    to: DimsePeer
    modality: str | None = None
    calling_ae_title: str | None = None

    def matches(self, modality: str | None, calling_ae_title: str | None) -> bool:
        if self.modality is not None and (modality or "").upper() != self.modality.upper():
            return False
        return self.calling_ae_title is None or (calling_ae_title or "").strip() == self.calling_ae_title


def _ae_title(value: str, what: str) -> str:
    """A checked AE title: 1-16 printable ASCII characters, no backslash (PS3.5 AE)."""
    title = value.strip()
    if not 0 < len(title) <= 16 or not all(32 <= ord(c) < 127 for c in title) or "\\" in title:
        raise ConfigError(f"{what}: {value!r} is not an AE title (1-16 ASCII characters, no backslash)")
    return title


def _tcp_port(value: int, what: str) -> int:
    if not 0 < value <= 65535:
        raise ConfigError(f"{what} must be a TCP port (1-65535), not {value}")
    return value


def parse_peer(text: str, what: str = "peer") -> DimsePeer:
    """``AE@HOST:PORT`` (``--to``, ``--dimse-peer``) as a :class:`DimsePeer`."""
    title, at, address = text.rpartition("@")
    host, colon, port_text = address.rpartition(":")
    if not at or not colon or not host or not port_text.isdigit():
        raise ConfigError(f"{what}: {text!r} is not AE@HOST:PORT")
    return DimsePeer(_ae_title(title, what), host.strip("[]"), _tcp_port(int(port_text), what))


def _peer_table(table: _Table) -> DimsePeer:
    peer = DimsePeer(
        _ae_title(table.take("ae_title", str, required=True), f"{table.source}: {table.name('ae_title')}"),
        table.take("host", str, required=True),
        _tcp_port(table.take("port", int, required=True), f"{table.source}: {table.name('port')}"),
    )
    table.done()
    return peer


def _dimse_tables(top: _Table, source: str) -> tuple[DimseSettings | None, tuple[ForwardRule, ...]]:
    """``[dimse]`` (with its ``[[dimse.peers]]``) and the ``[[forward]]`` rules."""
    data = top.take("dimse", dict)
    settings = None
    if data is not None:
        table = _Table(data, "dimse", source)
        defaults = DimseSettings()
        titles = table.take("accepted_calling_ae_titles", list, [])
        if not all(isinstance(t, str) for t in titles):
            raise table.fail("accepted_calling_ae_titles", "must be a list of strings")
        peers = tuple(
            _peer_table(_Table(p, f"dimse.peers[{i}]", source)) for i, p in enumerate(table.take("peers", list, []))
        )
        settings = DimseSettings(
            ae_title=_ae_title(table.take("ae_title", str, defaults.ae_title), f"{source}: dimse.ae_title"),
            host=table.take("host", str, defaults.host),
            port=_tcp_port(table.positive("port", int, defaults.port), f"{source}: dimse.port"),
            accepted_calling_ae_titles=tuple(_ae_title(t, f"{source}: dimse.accepted_calling_ae_titles") for t in titles),
            peers=peers,
            max_associations=table.positive("max_associations", int, defaults.max_associations),
            network_timeout=table.positive("network_timeout_seconds", float, defaults.network_timeout),
        )
        table.done()
    rules = []
    for i, rule in enumerate(top.take("forward", list, [])):
        table = _Table(rule, f"forward[{i}]", source)
        to_text = table.take("to", str, required=True)
        to = settings.peer(to_text) if settings is not None else None
        if to is None:
            to = parse_peer(to_text, f"{source}: forward[{i}].to (a [[dimse.peers]] AE title or AE@HOST:PORT)")
        modality = table.take("modality", str)
        calling = table.take("calling_ae_title", str)
        table.done()
        rules.append(ForwardRule(to, modality or None, calling.strip() if calling else None))
    return settings, tuple(rules)


# -- building ---------------------------------------------------------------------------------
def open_catalog(config: ArchiveConfig) -> Catalog:
    """The catalog database of ``config`` (schema created or migrated on open)."""
    from .archive import SQLCatalog, SQLiteCatalog

    if config.catalog_url.startswith("sqlite:///"):
        path = Path(config.catalog_url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteCatalog(path)
    return SQLCatalog(config.catalog_url)


def open_store(storage: StorageConfig) -> BlobStore:
    """The blob store of one ``[storage.NAME]`` table."""
    from .archive import FilesystemBlobStore, S3BlobStore

    options = dict(storage.options)
    if storage.scheme == "file":
        return FilesystemBlobStore(_file_path(storage.url), fsync=bool(options.get("fsync", True)))
    mib = 1 << 20
    kwargs: dict[str, Any] = {
        "endpoint_url": options.get("endpoint_url"),
        "region_name": options.get("region"),
        "addressing_style": options.get("addressing_style"),
        "staging_dir": options.get("staging_dir"),
        # The archive sweeps every store's staging files when it opens (its age limit).
        "clean_staging_older_than": None,
    }
    if "multipart_threshold_mb" in options:
        kwargs["multipart_threshold"] = options["multipart_threshold_mb"] * mib
    if "multipart_chunksize_mb" in options:
        kwargs["multipart_chunksize"] = options["multipart_chunksize_mb"] * mib
    if "max_concurrency" in options:
        kwargs["max_concurrency"] = options["max_concurrency"]
    return S3BlobStore.from_url(storage.url, **kwargs)


def open_archive(config: ArchiveConfig, *, cache: FrameCache | None | bool = None, sweep_on_open: bool = True) -> Archive:
    """The :class:`~dcmstream.archive.Archive` a configuration describes: its catalog, its
    first storage as the store new instances go to, the others as further tiers
    (``sweep_on_open``: as for :class:`~dcmstream.archive.Archive`)."""
    from .archive import Archive

    stores = {s.name: open_store(s) for s in config.storages}
    catalog = open_catalog(config)
    try:
        return Archive(
            config.local_root(),
            catalog=catalog,
            tiers=stores,  # in file order: the first is hot, where new instances go
            tier_prices={s.name: s.price_per_gb_month for s in config.storages if s.price_per_gb_month is not None},
            cache=cache,
            staging_max_age=config.staging_max_age,
            sweep_on_open=sweep_on_open,
        )
    except BaseException:
        catalog.close()
        raise
