"""Authentication and authorization against a real server and a local OIDC issuer.

The issuer is made here (tests/oidc_util.py): an RSA key pair, its JWKS in a file or
served over HTTP, tokens signed with joserfc. Every check goes through uvicorn on
loopback: status, ``WWW-Authenticate`` and the body a client sees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from dcmstream.archive import Archive
from dcmstream.cli.serve import ServeSecurityError, check_bind
from dcmstream.config import ApiKey, AuthConfig
from dcmstream.web import create_app
from dcmstream.web.auth import hash_api_key, required_role
from dcmstream.web.common import ServerConfig

from ..oidc_util import AUDIENCE, LocalIssuer, http_issuer
from ..server_util import running_server, start_config_server

READER_KEY = "reader-key-" + "r" * 24
UPLOADER_KEY = "uploader-key-" + "u" * 24


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Iterator[Archive]:
    archive = Archive(tmp_path_factory.mktemp("auth-archive"))
    for name in ("CT_small.dcm", "MR_small.dcm"):
        assert archive.ingest_file(get_testdata_file(name)).ok
    yield archive
    archive.close()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("issuer"))


def _oidc(issuer: LocalIssuer, **kw) -> AuthConfig:
    keys = (ApiKey(hash_api_key(READER_KEY), "reader", "pacs-reader"),
            ApiKey(hash_api_key(UPLOADER_KEY), "uploader", "modality"))
    return AuthConfig(mode="oidc", issuer=issuer.issuer, jwks_url=issuer.jwks_url, audience=AUDIENCE,
                      api_keys=keys, **kw)


@pytest.fixture(scope="module")
def server(archive: Archive, issuer: LocalIssuer) -> Iterator[tuple[str, object]]:
    app = create_app(archive, ServerConfig(cors_origins=("http://viewer.example",)), auth=_oidc(issuer))
    with running_server(app) as url:
        yield url, app


def _uids(archive: Archive) -> tuple[str, str, str]:
    from pydicom import dcmread

    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _get(url: str, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(url, headers=headers, timeout=30)


def _stow_body(path: str) -> tuple[bytes, str]:
    boundary = "dcmstream-test-boundary"
    data = Path(path).read_bytes()
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _stow(url: str, token: str | None, path: str, **headers: str) -> httpx.Response:
    body, content_type = _stow_body(path)
    headers["Content-Type"] = content_type
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/dicomweb/studies", content=body, headers=headers, timeout=30)


# -- 401: no or bad credentials -------------------------------------------------------------
def test_no_credentials_is_401_with_a_bearer_challenge(server) -> None:
    url, _ = server
    for path in ("/dicomweb/studies", "/dicomweb", "/metrics", "/", "/dicomweb/studies/1.2.3/series/1.2/instances/1.2/frames/1"):
        r = _get(url + path)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == 'Bearer realm="dcmstream"'
        assert "Bearer" in r.json()["error"]


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "wrong-aud", "wrong-iss", "no-exp", "bad-signature",
                                  "alg-none", "hs256-with-public-key", "garbage", "other-key-same-kid"])
def test_bad_tokens_are_401_invalid_token(server, issuer: LocalIssuer, case: str) -> None:
    url, _ = server
    now = int(time.time())
    if case == "expired":
        token = issuer.token(exp=now - 3600)
    elif case == "not-yet-valid":
        token = issuer.token(nbf=now + 3600)
    elif case == "wrong-aud":
        token = issuer.token(aud="another-app")
    elif case == "wrong-iss":
        token = issuer.token(iss="https://evil.example/realms/radiology")
    elif case == "no-exp":
        token = issuer.token(exp=None)
    elif case == "bad-signature":
        head, body, sig = issuer.token().split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        claims["roles"] = ["admin"]
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{forged}.{sig}"
    elif case == "alg-none":
        token = issuer.unsigned_token()
    elif case == "hs256-with-public-key":
        # The classic confusion attack: HMAC "signed" with the issuer's public key.
        head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": issuer.key.kid}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps({"iss": issuer.issuer, "aud": AUDIENCE, "sub": "m",
                                                    "exp": now + 60, "roles": ["admin"]}).encode()).rstrip(b"=")
        secret = json.dumps(issuer.public_jwks()["keys"][-1]).encode()
        sig = base64.urlsafe_b64encode(hmac.new(secret, head + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
        token = (head + b"." + body + b"." + sig).decode()
    elif case == "garbage":
        token = "not.a.jwt"
    else:
        from joserfc.jwk import RSAKey

        impostor = RSAKey.generate_key(2048, parameters={"kid": issuer.key.kid})
        token = issuer.token(key=impostor)
    r = _get(f"{url}/dicomweb/studies", token)
    assert r.status_code == 401, (case, r.text)
    assert r.headers["www-authenticate"].startswith('Bearer realm="dcmstream", error="invalid_token"')
    assert token not in r.text and token not in r.headers["www-authenticate"]


def test_unknown_kid_is_refetched_so_rotation_works(archive: Archive, tmp_path: Path) -> None:
    with http_issuer(tmp_path) as idp:
        config = AuthConfig(mode="oidc", issuer=idp.issuer, audience=AUDIENCE)  # endpoints discovered
        app = create_app(archive, auth=config)
        with running_server(app) as url:
            assert _get(f"{url}/dicomweb/studies", idp.token()).status_code == 200
            assert idp.jwks_fetches == 1
            for _ in range(3):  # cached
                assert _get(f"{url}/dicomweb/studies", idp.token()).status_code == 200
            assert idp.jwks_fetches == 1
            # The issuer rotates its key; the server refetched less than refetch_interval ago,
            # so made-up kids cannot make it fetch again and again: refused for now.
            old = idp.key
            new = idp.rotate(kind="EC", keep_old=False)
            assert _get(f"{url}/dicomweb/studies", idp.token(key=new)).status_code == 401
            assert _get(f"{url}/dicomweb/studies", idp.token(key=new)).status_code == 401
            assert idp.jwks_fetches == 1
            app.state.oidc_issuer.refetch_interval = 0.0  # the interval has passed
            assert _get(f"{url}/dicomweb/studies", idp.token(key=new)).status_code == 200
            assert idp.jwks_fetches == 2
            # The old key is gone from the JWKS: its tokens are refused.
            assert _get(f"{url}/dicomweb/studies", idp.token(key=old)).status_code == 401


# -- roles ----------------------------------------------------------------------------------
def test_reader_reads_but_cannot_store_or_scrape(server, issuer: LocalIssuer, archive: Archive) -> None:
    url, _ = server
    st, se, sop = _uids(archive)
    token = issuer.token("rita", ["reader"])
    r = _get(f"{url}/dicomweb/studies", token, Accept="application/dicom+json")
    assert r.status_code == 200 and len(r.json()) == 2
    inst = f"{url}/dicomweb/studies/{st}/series/{se}/instances/{sop}"
    assert _get(f"{inst}/metadata", token).status_code == 200
    assert _get(f"{inst}/frames/1", token, Accept="multipart/related; type=application/octet-stream").status_code == 200
    assert _get(f"{inst}/rendered", token, Accept="image/png").status_code == 200
    assert _get(f"{inst}/thumbnail", token, Accept="image/jpeg").status_code == 200
    r = _stow(url, token, get_testdata_file("CT_small.dcm"))
    assert r.status_code == 403
    assert "'uploader'" in r.json()["error"] and "rita" in r.json()["error"]
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    r = _get(f"{url}/metrics", token)
    assert r.status_code == 403 and "'admin'" in r.json()["error"]
    r = httpx.delete(inst, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 403 and "'admin'" in r.json()["error"]


def test_uploader_stores_admin_scrapes(server, issuer: LocalIssuer) -> None:
    url, _ = server
    r = _stow(url, issuer.token("ulla", ["uploader"]), get_testdata_file("CT_small.dcm"))
    assert r.status_code == 200, r.text  # the same bytes again: stored (a duplicate)
    uploader = issuer.token("ulla", ["uploader"])
    assert _get(f"{url}/metrics", uploader).status_code == 403
    assert _get(f"{url}/dicomweb/studies", uploader).status_code == 200  # uploader includes reader
    admin = issuer.token("ada", ["admin"])
    r = _get(f"{url}/metrics", admin)
    assert r.status_code == 200 and "dcmstream_" in r.text
    assert _stow(url, admin, get_testdata_file("MR_small.dcm")).status_code == 200


def test_a_token_without_our_roles_is_403(server, issuer: LocalIssuer) -> None:
    url, _ = server
    for roles in ([], ["viewer", "offline_access"]):
        r = _get(f"{url}/dicomweb/studies", issuer.token("nora", roles))
        assert r.status_code == 403 and "'reader'" in r.json()["error"], r.text


def test_roles_from_a_dotted_claim(archive: Archive, issuer: LocalIssuer) -> None:
    """Keycloak puts realm roles in realm_access.roles."""
    app = create_app(archive, auth=_oidc(issuer, roles_claim="realm_access.roles"))
    with running_server(app) as url:
        keycloak_like = issuer.token("kc", roles=None, realm_access={"roles": ["offline_access", "admin"]})
        # roles=None still puts the default "roles": ["reader"]; the configured claim wins.
        assert _get(f"{url}/metrics", keycloak_like).status_code == 200
        assert _get(f"{url}/metrics", issuer.token("kc", ["admin"])).status_code == 403


# -- API keys -------------------------------------------------------------------------------
def test_api_keys(server, archive: Archive) -> None:
    url, _ = server
    assert _get(f"{url}/dicomweb/studies", READER_KEY).status_code == 200
    assert _get(f"{url}/dicomweb/studies", **{"X-API-Key": READER_KEY}).status_code == 200
    r = _get(f"{url}/dicomweb/studies", "wrong-key-" + "x" * 20)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "wrong-key" not in r.text
    r = _get(f"{url}/dicomweb/studies", **{"X-API-Key": "wrong"})
    assert r.status_code == 401
    assert _stow(url, READER_KEY, get_testdata_file("CT_small.dcm")).status_code == 403
    assert _stow(url, None, get_testdata_file("CT_small.dcm"), **{"X-API-Key": UPLOADER_KEY}).status_code == 200


def test_api_keys_mode_accepts_no_tokens(archive: Archive, issuer: LocalIssuer) -> None:
    config = AuthConfig(mode="api-keys", api_keys=(ApiKey(hash_api_key(READER_KEY), "reader", "r"),))
    with running_server(create_app(archive, auth=config)) as url:
        assert _get(f"{url}/dicomweb/studies", READER_KEY).status_code == 200
        assert _get(f"{url}/dicomweb/studies", issuer.token(roles=["admin"])).status_code == 401
        assert _get(f"{url}/dicomweb/studies").status_code == 401


# -- what stays open ------------------------------------------------------------------------
def test_health_viewer_assets_and_preflight_need_no_credentials(server) -> None:
    url, _ = server
    assert _get(f"{url}/healthz").status_code == 200
    assert _get(f"{url}/viewer/").status_code == 200
    assert _get(f"{url}/viewer/viewer.js").status_code == 200
    r = httpx.options(f"{url}/dicomweb/studies", headers={
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://viewer.example"
    # A 401 to a cross-origin viewer carries CORS headers, so the viewer can read it.
    r = _get(f"{url}/dicomweb/studies", Origin="http://viewer.example")
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://viewer.example"


def test_viewer_page_does_not_inline_patient_data_without_a_token(server, archive: Archive) -> None:
    url, _ = server
    st, _, _ = _uids(archive)
    page = _get(f"{url}/viewer?StudyInstanceUIDs={st}").text
    assert 'id="dcm-instances"' not in page  # the in-process search would bypass the token check


def test_required_role_table() -> None:
    root = "/dicomweb"
    assert required_role("GET", "/healthz", root) is None
    assert required_role("OPTIONS", "/dicomweb/studies", root) is None
    assert required_role("GET", "/viewer/x.js", root) is None
    assert required_role("GET", "/viewerx", root) == "reader"  # not the viewer's folder
    assert required_role("HEAD", "/dicomweb/studies/1", root) == "reader"
    assert required_role("POST", "/dicomweb/studies", root) == "uploader"
    assert required_role("DELETE", "/dicomweb/studies/1", root) == "admin"
    assert required_role("PATCH", "/dicomweb/studies/1", root) == "admin"
    assert required_role("GET", "/metrics", root) == "admin"
    assert required_role("GET", "/anything-else", root) == "reader"


# -- no auth: loopback only -----------------------------------------------------------------
def test_mode_none_refuses_other_addresses_unless_insecure_bind() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, "none", False)
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        with pytest.raises(ServeSecurityError, match=r"--insecure-bind") as info:
            check_bind(host, "none", False)
        assert "[auth]" in str(info.value)
        check_bind(host, "none", True)
        check_bind(host, "oidc", False)


def test_serve_cli_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-m", "dcmstream", "serve", str(tmp_path / "archive"), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "--insecure-bind" in out and "[auth]" in out, out


# -- a real DICOMweb client against `dcmstream serve --config` --------------------------------
def test_dicomweb_client_with_a_bearer_token(tmp_path: Path, issuer: LocalIssuer) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    folder = tmp_path / "archive"
    config = tmp_path / "archive.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///{folder}/catalog.sqlite"
[storage.hot]
url = "file://{folder}"
[auth]
mode = "oidc"
issuer = "{issuer.issuer}"
jwks_url = "{issuer.jwks_url}"
audience = "{AUDIENCE}"
[auth.api_keys]
"{hash_api_key(UPLOADER_KEY)}" = {{ role = "uploader", name = "modality-1" }}
[audit]
path = "audit.jsonl"
""")
    server = start_config_server(config, log=tmp_path / "serve.log")
    try:
        def client(headers: dict[str, str]) -> DICOMwebClient:
            session = requests.Session()
            session.headers.update(headers)
            return DICOMwebClient(f"{server.url}/dicomweb", session=session)

        ds = dcmread(get_testdata_file("CT_small.dcm"))
        client({"X-API-Key": UPLOADER_KEY}).store_instances([ds])
        reader = client({"Authorization": f"Bearer {issuer.token('rita', ['reader'])}"})
        studies = reader.search_for_studies()
        assert [s["0020000D"]["Value"][0] for s in studies] == [ds.StudyInstanceUID]
        frames = reader.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])
        assert frames[0] == ds.PixelData
        with pytest.raises(requests.HTTPError) as info:
            reader.store_instances([ds])
        assert info.value.response.status_code == 403
        with pytest.raises(requests.HTTPError) as info:
            client({}).search_for_studies()
        assert info.value.response.status_code == 401
    finally:
        server.stop()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(line["user"], line["action"], line["outcome"]) for line in lines] == [
        ("modality-1", "store", "success"), ("rita", "search", "success"), ("rita", "retrieve", "success"),
        ("rita", "store", "denied"), ("unauthenticated", "search", "denied"),
    ]
    assert lines[0]["instances"] == [ds.SOPInstanceUID]
