"""The viewers log in with OpenID Connect (authorization code + PKCE) at a local issuer.

The issuer (tests/oidc_util.py HTTPIssuer) runs on loopback and approves every login at
once; its /token checks the PKCE verifier against the challenge. The server runs with
``[auth] mode = "oidc"`` (endpoints discovered from the issuer), so every DICOMweb request
the viewer makes must carry a valid token: a request without one would be a 401 in the
recorder's failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from dcmstream.archive import Archive
from dcmstream.cache import FrameCache
from dcmstream.config import AuthConfig
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app
from dcmstream.web.viewer_routes import ohif_dir

from ..oidc_util import AUDIENCE, HTTPIssuer
from ..server_util import start_server, stop_server
from .conftest import RecordingApp
from .test_viewer import canvas_pixels, stats, wait_shown


@dataclass
class OIDCServer:
    url: str
    issuer: HTTPIssuer
    recorder: RecordingApp
    uids: dict[str, tuple[str, str, str]]


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory) -> Iterator[OIDCServer]:
    data = tmp_path_factory.mktemp("oidc-data")
    issuer = HTTPIssuer(data, roles=["reader"])
    archive = Archive(tmp_path_factory.mktemp("oidc-archive"), cache=FrameCache(16 << 20))
    uids = {}
    for name, kwargs in {"ct": dict(frames=12, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=31),
                         "us": dict(frames=6, syntax="jpeg-baseline", kind="us", rows=96, columns=128, seed=31)}.items():
        result = archive.ingest_file(write_multiframe(data / f"{name}.dcm", **kwargs))
        uids[name] = (result.study_uid, result.series_uid, result.sop_uid)
    auth = AuthConfig(mode="oidc", issuer=issuer.issuer, audience=AUDIENCE, client_id=issuer.client_id)
    recorder = RecordingApp(create_app(archive, auth=auth))
    url, uv, thread = start_server(recorder)
    try:
        yield OIDCServer(url, issuer, recorder, uids)
    finally:
        stop_server(uv, thread)
        issuer.close()
        archive.close()


@pytest.mark.browser
def test_viewer_logs_in_with_pkce_and_shows_a_frame(page, oidc_server: OIDCServer) -> None:
    server = oidc_server
    study = server.uids["ct"][0]
    page.goto(f"{server.url}/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={server.uids['ct'][1]}")
    wait_shown(page, 0, timeout=60_000)
    assert stats(page)["frames"] == 12
    # Back on the deep link, without code and state.
    assert "StudyInstanceUIDs=" in page.url and "code=" not in page.url and "state=" not in page.url
    asked = server.issuer.authorize_requests[-1]
    assert asked["code_challenge_method"] == "S256" and asked["redirect_uri"] == f"{server.url}/viewer/"
    exchanged = server.issuer.token_requests[-1]
    assert exchanged["grant_type"] == "authorization_code" and len(exchanged["code_verifier"]) >= 43
    # The token: this tab's sessionStorage, never localStorage.
    storage = page.evaluate("[JSON.stringify(localStorage), sessionStorage.getItem('dcmstream.auth.token')]")
    assert storage[0] == "{}" and json.loads(storage[1])["token"].count(".") == 2
    # Frames came from the decode workers with the token: no request was refused.
    requests = server.recorder.requests
    assert any("/frames/" in p for _, p, _ in requests)
    assert server.recorder.failures() == []
    px = canvas_pixels(page)
    assert px.std() > 5  # an image, not an empty canvas
    page.evaluate("window.dcmviewer.go(7)")
    wait_shown(page, 7)
    assert server.recorder.failures() == []
    assert not page.errors, page.errors


@pytest.mark.browser
def test_study_list_and_thumbnails_with_a_token(page, oidc_server: OIDCServer) -> None:
    server = oidc_server
    mark = server.recorder.mark()
    page.goto(f"{server.url}/viewer/")
    rows = page.locator("#study-table tbody tr[data-study]")  # (not the "loading..." row)
    expect(rows).to_have_count(1, timeout=60_000)
    rows.first.click()
    wait_shown(page, 0, timeout=60_000)
    expect(page.locator(".series-card")).to_have_count(2, timeout=20_000)
    page.wait_for_function("Array.from(document.querySelectorAll('.series-card img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
    assert any("/thumbnail" in p for _, p, _ in server.recorder.since(mark))
    assert server.recorder.failures(mark) == []
    assert not page.errors, page.errors


def test_without_a_token_the_api_refuses_and_the_page_holds_no_data(oidc_server: OIDCServer) -> None:
    server = oidc_server
    study = server.uids["ct"][0]
    page = httpx.get(f"{server.url}/viewer?StudyInstanceUIDs={study}", timeout=30).text
    settings = json.loads(page.split('id="dcm-auth">', 1)[1].split("</script>", 1)[0])
    assert settings == {"mode": "oidc", "issuer": server.issuer.issuer, "client_id": server.issuer.client_id,
                        "authorization_endpoint": f"{server.issuer.issuer}/authorize",
                        "token_endpoint": f"{server.issuer.issuer}/token", "scope": "openid profile"}
    assert 'id="dcm-instances"' not in page
    assert httpx.get(f"{server.url}/dicomweb/studies/{study}/instances", timeout=30).status_code == 401


@pytest.fixture
def ohif_env() -> Path:
    folder = ohif_dir()
    if folder is None:
        pytest.skip("OHIF is not installed: bash scripts/install-ohif.sh (or DCMSTREAM_OHIF_DIR)")
    return folder


def test_ohif_config_carries_the_oidc_block(ohif_env: Path, tmp_path: Path) -> None:
    from ..server_util import running_server

    issuer = HTTPIssuer(tmp_path)
    archive = Archive(tmp_path / "archive")
    try:
        auth = AuthConfig(mode="oidc", issuer=issuer.issuer, audience=AUDIENCE, client_id="ohif-client")
        with running_server(create_app(archive, auth=auth)) as url:
            text = httpx.get(f"{url}/ohif/app-config.js", timeout=30).text
            assert "routerBasename: '/ohif'" in text  # the installed config, extended
            block = json.loads(text.split("window.config.oidc = ", 1)[1].rsplit(";", 1)[0])
            assert block == [{"authority": issuer.issuer, "client_id": "ohif-client", "redirect_uri": "/callback",
                              "post_logout_redirect_uri": "/", "response_type": "code", "scope": "openid profile",
                              "automaticSilentRenew": False, "revokeAccessTokenOnSignout": False}]
        with running_server(create_app(archive)) as url:  # without auth: as installed
            assert "oidc" not in httpx.get(f"{url}/ohif/app-config.js", timeout=30).text
    finally:
        issuer.close()
        archive.close()



@pytest.mark.browser
def test_ohif_logs_in_and_lists_studies(ohif_env: Path, page, tmp_path: Path) -> None:
    """A full OHIF login at the local issuer (code + PKCE by OHIF's oidc-client)."""
    from .conftest import RecordingApp as Recorder

    issuer = HTTPIssuer(tmp_path, roles=["reader"], client_id="ohif-client")
    archive = Archive(tmp_path / "archive")
    assert archive.ingest_file(write_multiframe(tmp_path / "ct.dcm", frames=4, syntax="jpeg-ls", kind="ct",
                                                rows=64, columns=64, seed=41)).ok  # PatientID DCMSTREAM-41
    auth = AuthConfig(mode="oidc", issuer=issuer.issuer, audience=AUDIENCE, client_id="ohif-client")
    recorder = Recorder(create_app(archive, auth=auth))
    url, uv, thread = start_server(recorder)
    try:
        # OHIF goes to the issuer, comes back to /ohif/callback, trades the code (with its
        # PKCE verifier) for tokens and lists the study with the bearer token. (About 1 load
        # in 10 of the callback page used to die on a ReferenceError (__filename) in OHIF's
        # own bundle: viewer_routes' app-config.js shim; no retry here, so it would show.)
        page.goto(f"{url}/ohif/")
        page.wait_for_function("document.body.innerText.includes('DCMSTREAM-41')", timeout=60_000)
        asked = issuer.authorize_requests[-1]
        assert asked["code_challenge_method"] == "S256" and asked["redirect_uri"] == f"{url}/ohif/callback"
        assert issuer.token_requests[-1]["code_verifier"]
        dicomweb = [(p, s) for i, (_, p, _) in enumerate(recorder.requests) if p.startswith("/dicomweb")
                    for s in [recorder.statuses.get(i)]]
        assert dicomweb and all(s == 200 for _, s in dicomweb), dicomweb
    finally:
        stop_server(uv, thread)
        issuer.close()
        archive.close()
