"""/viewer and /ohif routes without a browser: page, assets, package data, OHIF's SPA fallback."""

from __future__ import annotations

import json

import httpx
import pytest

from dcmstream.web import create_app
from dcmstream.web.viewer_routes import VIEWER_DIR

from ..server_util import running_server


def test_viewer_assets_ship_in_the_package():
    # Built by scripts/build-viewer.sh and committed: pip install alone must serve them.
    for name in ("index.html", "viewer.js", "decode-worker.js", "viewer.css", "naive.html", "naive.js"):
        assert (VIEWER_DIR / name).is_file(), name
    wasm = sorted(p.name for p in (VIEWER_DIR / "codecs").glob("*.wasm"))
    assert wasm == ["charlswasm_decode.wasm", "libjpegturbowasm_decode.wasm", "openjpegwasm_decode.wasm", "openjphjs.wasm"]


def test_viewer_page_and_assets(viewer_server):
    with httpx.Client(base_url=viewer_server.url) as client:
        study = viewer_server.uids["ct"][0]
        for path in (f"/viewer?StudyInstanceUIDs={study}", "/viewer/", "/viewer/index.html"):
            r = client.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
            assert '<base href="/viewer/">' in r.text
            assert '<meta name="dicomweb-root" content="/dicomweb">' in r.text
            for placeholder in ("__VIEWER_BASE__", "__DICOMWEB_ROOT__", "__INSTANCE_FIELDS__"):
                assert placeholder not in r.text
        # A deep link carries the study's instance search (one round trip less).
        page = client.get(f"/viewer?StudyInstanceUIDs={study}").text
        inlined = page.split('<script type="application/json" id="dcm-instances">', 1)[1].split("</script>", 1)[0]
        hits = json.loads(inlined)
        assert {h["00080018"]["Value"][0] for h in hits} >= {viewer_server.uids["ct"][2], viewer_server.uids["rgb"][2]}
        assert "<" not in inlined
        for bad in ("not-a-uid", "1.2.3</script><script>alert(1)</script>", "9.9.9"):
            r = client.get("/viewer", params={"StudyInstanceUIDs": bad})
            assert r.status_code == 200 and 'id="dcm-instances"' not in r.text or "[]" in r.text
            assert "alert(1)</script>" not in r.text
        js = client.get("/viewer/viewer.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert js.headers["cache-control"] == "no-cache"
        wasm = client.get("/viewer/codecs/charlswasm_decode.wasm")
        assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
        assert client.get("/viewer/missing.js").status_code == 404


def test_ohif_is_mounted_when_installed(tmp_path, monkeypatch, viewer_server):
    dist = tmp_path / "ohif"
    dist.mkdir()
    (dist / "index.html").write_text("<html>ohif</html>")
    (dist / "app.bundle.js").write_text("// bundle")
    monkeypatch.setenv("DCMSTREAM_OHIF_DIR", str(dist))
    with running_server(create_app(viewer_server.archive)) as url, httpx.Client(base_url=url) as client:
        # client-side routes of the single-page app get index.html
        for path in ("/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/viewer/dicomweb"):
            r = client.get(path)
            assert r.status_code == 200 and r.text == "<html>ohif</html>", path
        assert client.get("/ohif/app.bundle.js").text == "// bundle"
        assert client.get("/ohif/missing.bundle.js").status_code == 404
        r = client.get("/ohif?x=1")
        assert r.status_code in (302, 307) and r.headers["location"] == "/ohif/?x=1"


def test_ohif_absent_means_no_route(tmp_path, monkeypatch, viewer_server):
    monkeypatch.setenv("DCMSTREAM_OHIF_DIR", str(tmp_path / "nothing"))
    from starlette.testclient import TestClient

    with TestClient(create_app(viewer_server.archive)) as client:
        assert client.get("/ohif/").status_code == 404


@pytest.mark.parametrize("path", ["/viewer/../app.py", "/viewer/%2e%2e/app.py"])
def test_viewer_static_stays_in_its_folder(viewer_server, path):
    with httpx.Client(base_url=viewer_server.url) as client:
        assert client.get(path).status_code == 404
