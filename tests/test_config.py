"""The --config file: parsing, checking (every mistake names the key and the file), and the
archive it opens; ``dcmstream import --config`` and ``serve --config`` read it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dcmstream import DcmstreamError
from dcmstream.archive import FilesystemBlobStore, S3BlobStore, SQLiteCatalog
from dcmstream.cli.main import app
from dcmstream.config import ConfigError, LifecycleRule, load_config, open_archive

ISSUE_EXAMPLE = """
[catalog]
url = "postgresql://user:pass@127.0.0.1:5432/dcmstream"
[storage.hot]
url = "file:///srv/dcmstream/objects"
[storage.cold]
url = "s3://bucket/prefix"
endpoint_url = "http://127.0.0.1:9000"
price_per_gb_month = 0.004
[[lifecycle]]
from = "hot"
to = "cold"
after_days_without_access = 30
[server]
host = "127.0.0.1"
port = 8042
workers = 4
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "archive.toml"
    path.write_text(text)
    return path


def test_the_issue_example_parses(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ISSUE_EXAMPLE))
    assert config.catalog_url == "postgresql://user:pass@127.0.0.1:5432/dcmstream"
    assert [s.name for s in config.storages] == ["hot", "cold"]  # file order: the tiers
    assert config.hot.name == "hot" and config.hot.scheme == "file"
    cold = config.storage("cold")
    assert cold.options == {"endpoint_url": "http://127.0.0.1:9000"} and cold.price_per_gb_month == 0.004
    assert config.lifecycle == (LifecycleRule("hot", "cold", after_days_without_access=30.0),)
    assert (config.server.host, config.server.port, config.server.workers) == ("127.0.0.1", 8042, 4)
    assert config.local_root() == Path("/srv/dcmstream/objects")


def test_relative_paths_start_at_the_file(tmp_path: Path) -> None:
    text = '[catalog]\nurl = "sqlite:///db/catalog.sqlite"\n[storage.s3]\nurl = "s3://b"\n' \
           '[archive]\nroot = "local"\n[server]\ncompress_policy = "policy.toml"\ncors_origins = ["*"]\n'
    config = load_config(_write(tmp_path, text))
    assert config.catalog_url == f"sqlite:///{tmp_path}/db/catalog.sqlite"
    assert config.root == tmp_path / "local" and config.local_root() == tmp_path / "local"
    assert config.server.compress_policy == tmp_path / "policy.toml" and config.server.cors_origins == ("*",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ISSUE_EXAMPLE + "colour = 1\n", "unknown key 'server.colour'"),
        (ISSUE_EXAMPLE.replace("[server]", "[serveur]"), "unknown key 'serveur'"),
        (ISSUE_EXAMPLE.replace("price_per_gb_month", "price"), "unknown key 'storage.cold.price'"),
        (ISSUE_EXAMPLE.replace("after_days_without_access", "after_days"), "unknown key 'lifecycle[0].after_days'"),
        (ISSUE_EXAMPLE + "[archive]\nrooot = 'x'\n", "unknown key 'archive.rooot'"),
        (ISSUE_EXAMPLE.replace('endpoint_url = "http://127.0.0.1:9000"', 'aws_secret_access_key = "x"'),
         "storage.cold.aws_secret_access_key: credentials do not belong in the configuration file; set AWS_"),
        (ISSUE_EXAMPLE.replace("postgresql://", "mysql://"), "catalog.url 'mysql://"),
        (ISSUE_EXAMPLE.replace("s3://bucket/prefix", "gs://bucket"), "storage.cold.url 'gs://bucket': expected"),
        (ISSUE_EXAMPLE.replace("file:///srv", "file://srv"), "storage.hot.url 'file://srv/dcmstream/objects'"),
        (ISSUE_EXAMPLE.replace("workers = 4", "workers = 0"), "server.workers must be positive, not 0"),
        (ISSUE_EXAMPLE.replace("port = 8042", 'port = "8042"'), "server.port must be an integer, not '8042'"),
        (ISSUE_EXAMPLE.replace("port = 8042", "port = 70000"), "server.port must be a TCP port"),
        (ISSUE_EXAMPLE.replace("= 30", "= -1"), "lifecycle[0].after_days_without_access must be positive"),
        (ISSUE_EXAMPLE.replace('to = "cold"', 'to = "glacier"'), "lifecycle[0].to names no [storage.glacier]"),
        (ISSUE_EXAMPLE.replace('to = "cold"', 'to = "hot"'), "lifecycle[0].to must name another storage"),
        (ISSUE_EXAMPLE.replace("after_days_without_access = 30", ""), "needs after_days_without_access and/or"),
        (ISSUE_EXAMPLE.replace("[catalog]", "[katalog]"), "needs a 'catalog' key"),
        ("[catalog]\nurl = 'sqlite:///c.sqlite'\n", "needs a 'storage' key"),
        ("[catalog\n", "not valid TOML"),
    ],
    ids=lambda v: v if len(v) < 60 and "\n" not in v else "",
)
def test_mistakes_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, DcmstreamError) and isinstance(info.value, ValueError)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "nope.toml")


def test_open_archive_on_sqlite_and_a_folder(tmp_path: Path, testfile) -> None:
    path = _write(tmp_path, '[catalog]\nurl = "sqlite:///cat/catalog.sqlite"\n'
                            f'[storage.hot]\nurl = "file://{tmp_path}/store"\nfsync = false\n')
    with open_archive(load_config(path), cache=False) as archive:
        assert isinstance(archive.catalog, SQLiteCatalog) and isinstance(archive.blobs, FilesystemBlobStore)
        assert archive.blobs.root == tmp_path / "store" and archive.root == tmp_path / "store"
        result = archive.ingest_file(testfile("CT_small.dcm"))
        assert result.status == "stored"
    assert (tmp_path / "cat" / "catalog.sqlite").is_file()
    assert len(list((tmp_path / "store" / "objects").rglob("*.dcm"))) == 1
    # a second opening (another process, say) sees the same archive
    with open_archive(load_config(path), cache=False) as again:
        assert again.catalog.counts()["instances"] == 1


def test_open_archive_builds_s3_stores(tmp_path: Path, monkeypatch) -> None:
    from dcmstream.config import open_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    text = ('[catalog]\nurl = "sqlite:///c.sqlite"\n[storage.cold]\nurl = "s3://bucket/some/prefix"\n'
            'endpoint_url = "http://127.0.0.1:9"\nregion = "eu-west-1"\nmultipart_threshold_mb = 32\n'
            'multipart_chunksize_mb = 8\nstaging_dir = "staging"\n')
    store = open_store(load_config(_write(tmp_path, text)).hot)  # no request is made
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint_url) == ("bucket", "some/prefix/", "http://127.0.0.1:9")
    assert store.multipart_threshold == 32 << 20 and store.staging_dir == tmp_path / "staging"


def test_import_with_config(tmp_path: Path, testfile) -> None:
    path = _write(tmp_path, f'[catalog]\nurl = "sqlite:///catalog.sqlite"\n[storage.hot]\nurl = "file://{tmp_path}/objs"\n')
    runner = CliRunner()
    result = runner.invoke(app, ["import", testfile("CT_small.dcm"), testfile("MR_small.dcm"), "--config", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert "2 instances" in result.output
    both = runner.invoke(app, ["import", testfile("CT_small.dcm"), "--config", str(path), "--archive", str(tmp_path)])
    assert both.exit_code != 0 and "not both" in both.output
    bad = _write(tmp_path, "[catalog]\nurl = 'sqlite:///c.sqlite'\n[storage.x]\nurl = 'file:///tmp/x'\nsize = 1\n")
    result = runner.invoke(app, ["import", testfile("CT_small.dcm"), "--config", str(bad)])
    assert result.exit_code == 1 and "unknown key 'storage.x.size'" in result.output


def test_serve_help_names_config_and_overrides() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--config" in text and "--workers" in text and "overrides the config's [server] value" in text


# -- [auth] and [audit] ---------------------------------------------------------------------
AUTH_EXAMPLE = ISSUE_EXAMPLE + """
[auth]
mode = "oidc"
issuer = "https://idp.example/realms/radiology"
jwks_url = "https://idp.example/realms/radiology/protocol/openid-connect/certs"
audience = "dcmstream"
roles_claim = "realm_access.roles"
client_id = "dcmstream-viewer"
[auth.api_keys]
"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08" = "uploader"
"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752" = { role = "admin", name = "ops-script" }
[audit]
path = "logs/audit.jsonl"
"""


def test_auth_and_audit_parse(tmp_path: Path) -> None:
    from dcmstream.config import ApiKey

    config = load_config(_write(tmp_path, AUTH_EXAMPLE))
    auth = config.auth
    assert (auth.mode, auth.issuer, auth.audience, auth.roles_claim) == (
        "oidc", "https://idp.example/realms/radiology", "dcmstream", "realm_access.roles")
    assert auth.algorithms == ("RS256", "ES256", "PS256") and auth.client_id == "dcmstream-viewer"
    assert auth.api_keys == (
        ApiKey("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "uploader", "api-key-9f86d081"),
        ApiKey("60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", "admin", "ops-script"),
    )
    assert config.audit.path == tmp_path / "logs" / "audit.jsonl"


def test_without_auth_and_audit_nothing_changes(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ISSUE_EXAMPLE))
    assert config.auth.mode == "none" and not config.auth.enabled and config.audit.path is None


_OIDC = '[auth]\nmode = "oidc"\nissuer = "https://idp.example/r"\naudience = "d"\n'
_KEY = "a" * 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[auth]\nmode = "ldap"\n', "auth.mode must be one of 'none', 'oidc', 'api-keys', not 'ldap'"),
        ('[auth]\nmode = "oidc"\naudience = "d"\n', "[auth] mode = \"oidc\" needs 'issuer'"),
        ('[auth]\nmode = "oidc"\nissuer = "https://i.example"\n', "needs 'audience'"),
        (_OIDC.replace("https://idp", "http://idp"), "auth.issuer 'http://idp.example/r': expected https://"),
        (_OIDC + 'jwks_url = "ftp://x/jwks"\n', "auth.jwks_url 'ftp://x/jwks': expected https://"),
        (_OIDC + 'roles_claim = "realm_access..roles"\n', "auth.roles_claim must be a claim name or a dotted path"),
        (_OIDC + 'algorithms = ["HS256"]\n', "auth.algorithms must be a non-empty list"),
        (_OIDC + 'algorithms = ["none"]\n', "asymmetric signatures only"),
        (_OIDC + 'client_secret = "s3cr3t"\n', "auth.client_secret is a secret and does not belong"),
        (_OIDC + 'leeway_seconds = 9999\n', "auth.leeway_seconds must be between 0 and 600"),
        (_OIDC + '[auth.api_keys]\n"my-clear-text-key" = "reader"\n', "must be the SHA-256 (64 hex digits) of the key"),
        (_OIDC + f'[auth.api_keys]\n"{_KEY}" = "root"\n', f"auth.api_keys.{_KEY} role must be one of reader"),
        (_OIDC + f'[auth.api_keys]\n"{_KEY}" = {{ role = "reader", secret = "x" }}\n', "credentials do not belong"),
        ('[auth]\nmode = "api-keys"\n', "needs at least one [auth.api_keys] entry"),
        (f'[auth]\n[auth.api_keys]\n"{_KEY}" = "reader"\n', "auth.mode is \"none\" but the table configures identities"),
        ('[auth]\nmode = "oidc"\nissuer = "https://i.example"\naudience = "d"\nsurprise = 1\n', "unknown key 'auth.surprise'"),
        ('[audit]\npath = ""\n', "audit.path must name a file"),
        ('[audit]\nfile = "a"\n', "unknown key 'audit.file'"),
    ],
    ids=lambda v: v if len(v) < 50 and "\n" not in v else "",
)
def test_auth_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, ISSUE_EXAMPLE + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value), str(info.value)


def test_loopback_issuers_may_use_http(tmp_path: Path) -> None:
    text = '[auth]\nmode = "oidc"\nissuer = "http://127.0.0.1:8080/r"\naudience = "d"\njwks_url = "file:///etc/jwks.json"\n'
    config = load_config(_write(tmp_path, ISSUE_EXAMPLE + text))
    assert config.auth.issuer == "http://127.0.0.1:8080/r" and config.auth.jwks_url == "file:///etc/jwks.json"


def test_serve_help_names_insecure_bind() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert "--insecure-bind" in result.output


def test_sweep_interval(tmp_path: Path) -> None:
    base = '[catalog]\nurl = "sqlite:///catalog.sqlite"\n[storage.hot]\nurl = "file:///srv/x"\n'
    assert load_config(_write(tmp_path, base)).sweep_interval == 3600.0  # an hour by default
    assert load_config(_write(tmp_path, base + "[archive]\nsweep_interval_seconds = 600\n")).sweep_interval == 600.0
    assert load_config(_write(tmp_path, base + "[archive]\nsweep_interval_seconds = 0\n")).sweep_interval == 0.0
    with pytest.raises(ConfigError, match="sweep_interval_seconds"):
        load_config(_write(tmp_path, base + "[archive]\nsweep_interval_seconds = -1\n"))
