"""DELETE of studies, series and instances on a real server (httpx and dicomweb-client),
and what QIDO/WADO answer afterwards, also from a second server on the same archive."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from dcmstream.archive import Archive
from dcmstream.samples import write_multiframe, write_series
from dcmstream.web import create_app
from dcmstream.web.common import ServerConfig

from ..server_util import running_server

ORIGIN = "http://viewer.example"


@pytest.fixture
def archive(tmp_path: Path):
    files = sorted(write_series(tmp_path / "series", files=3, rows=32, columns=32, seed=21).iterdir())
    files.append(write_multiframe(tmp_path / "mf.dcm", frames=4, syntax="jpeg-ls", kind="ct", rows=32, columns=32, seed=22))
    files.append(Path(get_testdata_file("CT_small.dcm")))
    arc = Archive(tmp_path / "archive", cache=False)
    arc.uids = {}  # type: ignore[attr-defined]
    for path in files:
        result = arc.ingest_file(path)
        assert result.status == "stored", result.message
        arc.uids[result.sop_uid] = (result.study_uid, result.series_uid)  # type: ignore[attr-defined]
    yield arc
    arc.close()


def _inst(root: str, study: str, series: str, sop: str) -> str:
    return f"{root}/studies/{study}/series/{series}/instances/{sop}"


def test_delete_instance_series_study(archive: Archive) -> None:
    uids = archive.uids  # type: ignore[attr-defined]
    by_series: dict[tuple[str, str], list[str]] = {}
    for sop, key in uids.items():
        by_series.setdefault(key, []).append(sop)
    (study, series), sops = next((k, v) for k, v in by_series.items() if len(v) == 3)
    app = create_app(archive, ServerConfig(cors_origins=(ORIGIN,)))
    with running_server(app) as url, httpx.Client(timeout=30) as http:
        root = f"{url}/dicomweb"
        assert http.get(f"{_inst(root, study, series, sops[0])}/frames/1").status_code == 200
        # malformed and unknown UIDs
        r = http.delete(f"{root}/studies/1.2.x")
        assert r.status_code == 400 and "StudyInstanceUID" in r.json()["error"]  # (a malformed path value is not echoed)
        r = http.delete(f"{root}/studies/1.2.3.999")
        assert r.status_code == 404 and "1.2.3.999" in r.json()["error"]
        r = http.delete(_inst(root, study, "1.2.3.4", sops[0]))
        assert r.status_code == 404 and sops[0] in r.json()["error"] and "1.2.3.4" in r.json()["error"]
        # one instance
        r = http.delete(_inst(root, study, series, sops[0]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["deleted"]["instances"] == 1 and body["deleted"]["SOPInstanceUID"] == [sops[0]]
        assert body["deleted"]["SeriesInstanceUID"] == [series] and body["blobs_pending"] == 0
        for tail in ("", "/metadata", "/frames/1", "/rendered"):
            assert http.get(_inst(root, study, series, sops[0]) + tail).status_code == 404, tail
        assert http.delete(_inst(root, study, series, sops[0])).status_code == 404
        qido = http.get(f"{root}/studies/{study}/series/{series}/instances").json()
        assert sorted(i["00080018"]["Value"][0] for i in qido) == sorted(sops[1:])
        assert len(http.get(f"{root}/studies/{study}/series/{series}/metadata").json()) == 2
        # the series: the study goes with it (it had one series)
        r = http.delete(f"{root}/studies/{study}/series/{series}")
        assert r.status_code == 200 and sorted(r.json()["deleted"]["SOPInstanceUID"]) == sorted(sops[1:])
        assert http.get(f"{root}/studies", params={"StudyInstanceUID": study}).json() == []
        for tail in ("", "/metadata", "/series"):
            r = http.get(f"{root}/studies/{study}{tail}")
            assert r.status_code == 404 or (r.status_code == 200 and r.json() == []), (tail, r.status_code)
        # CORS: a viewer on the allowed origin may send DELETE (the roles decide who may)
        r = http.options(f"{root}/studies/{study}", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"})
        assert r.status_code == 200 and "DELETE" in r.headers["access-control-allow-methods"]
    assert archive.catalog.counts()["instances"] == len(uids) - 3
    assert archive.catalog.pending_deletions() == []


def test_dicomweb_client_deletes(archive: Archive) -> None:
    dicomweb_client = pytest.importorskip("dicomweb_client")
    from requests.exceptions import HTTPError

    uids = archive.uids  # type: ignore[attr-defined]
    with running_server(create_app(archive)) as url:
        client = dicomweb_client.api.DICOMwebClient(url=f"{url}/dicomweb")
        studies = sorted({st for st, _ in uids.values()})
        sop, (study, series) = next(iter(uids.items()))
        client.delete_instance(study, series, sop)
        assert client.search_for_instances(search_filters={"SOPInstanceUID": sop}) == []
        with pytest.raises(HTTPError) as info:
            client.retrieve_instance(study, series, sop)
        assert info.value.response.status_code == 404
        for st in studies:
            client.delete_study(st)
        assert client.search_for_studies() == []
        with pytest.raises(HTTPError) as info:
            client.delete_study(studies[0])
        assert info.value.response.status_code == 404
    assert archive.catalog.counts() == {"studies": 0, "series": 0, "instances": 0}
    assert list(archive.blobs.keys()) == []


def test_second_server_with_memoised_records_answers_404(archive: Archive) -> None:
    """Two servers on one archive (as two processes): the second has memoised the records,
    its metadata and decoded frames; after the first deletes, the second answers 404, never
    410 or 500, and serves no frame from its cache (it looks at the catalog's delete counter
    every time here; by default at most once a second)."""
    from dcmstream.cache import FrameCache

    other = Archive(archive.root, cache=FrameCache(16 << 20), deletion_check_interval=0)
    uids = archive.uids  # type: ignore[attr-defined]
    sop, (study, series) = next((s, k) for s, k in uids.items() if archive.catalog.get(s).number_of_frames == 4)
    try:
        with running_server(create_app(archive)) as first, running_server(create_app(other)) as second, \
                httpx.Client(timeout=30) as http:
            target = _inst(f"{second}/dicomweb", study, series, sop)
            for tail in ("", "/metadata", "/frames/2", "/bulkdata/7FE00010"):
                assert http.get(target + tail).status_code == 200, tail
            assert http.get(f"{second}/dicomweb/studies/{study}/series/{series}/metadata").status_code == 200
            assert http.delete(f"{first}/dicomweb/studies/{study}").status_code == 200
            for tail in ("/frames/2", "/metadata", "", "/frames/3", "/bulkdata/7FE00010", "/rendered"):
                r = http.get(target + tail)
                assert r.status_code == 404, (tail, r.status_code, r.text)
            assert http.get(f"{second}/dicomweb/studies/{study}/series/{series}/metadata").status_code == 404
    finally:
        other.close()
