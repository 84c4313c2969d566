"""DICOMweb over real HTTP (httpx against uvicorn): QIDO, WADO, STOW, rendered, metrics, CORS."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pydicom
import pytest

import dcmstream
from dcmstream.web.media import EXPLICIT_LE

from .conftest import ALLOWED_ORIGIN, MAX_UPLOAD, Server, multipart_parts

OCTET = 'multipart/related; type="application/octet-stream"'
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DICOM_JSON = "application/dicom+json"


def value(item: dict, tag: str):
    return item[tag]["Value"][0]


def decode_octets(data: bytes, path) -> np.ndarray:
    with dcmstream.open(path, cache=False) as inst:
        spec = inst.pixel_spec
    return np.frombuffer(data, dtype=spec.dtype.newbyteorder("<")).reshape(spec.shape)


# -- QIDO-RS -------------------------------------------------------------------------------------
def test_search_all_studies(server: Server, http) -> None:
    r = http.get("/dicomweb/studies")
    assert r.status_code == 200 and r.headers["content-type"].startswith(DICOM_JSON)
    studies = r.json()
    st_jls = server.sops["jls"][0]
    assert {value(s, "0020000D") for s in studies} >= {server.sops[n][0] for n in server.sops}
    ours = next(s for s in studies if value(s, "0020000D") == st_jls)
    # jls, native (same seed) and rgb (another seed) -> the CT study has 2 series
    assert value(ours, "00201206") == 2 and value(ours, "00201208") == 2
    assert ours["00080061"]["Value"] == ["CT"]
    assert value(ours, "00081190") == f"{server.root}/studies/{st_jls}"
    for tag in ("00100010", "00100020", "00080020", "00080050", "00200010"):
        assert tag in ours


def test_ohif_study_list_query(server: Server, http) -> None:
    st = server.sops["CT_small.dcm"][0]
    r = http.get(f"/dicomweb/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060&StudyInstanceUID={st}")
    assert r.status_code == 200
    (study,) = r.json()
    assert value(study, "0020000D") == st and "00081030" in study


def test_matching(server: Server, http) -> None:
    def studies(**params) -> set[str]:
        r = http.get("/dicomweb/studies", params=params)
        assert r.status_code == 200, r.text
        return {value(s, "0020000D") for s in r.json()}

    ct = server.sops["CT_small.dcm"][0]
    mr = server.sops["MR_small.dcm"][0]
    assert studies(PatientName="compressedsamples^ct1") == {ct}
    assert studies(PatientName="CompressedSamples^*") >= {ct, mr}
    assert studies(**{"00100010": "*MR?"}) == {mr}
    assert studies(StudyInstanceUID=f"{ct},{mr}") == {ct, mr}
    assert studies(StudyDate="20040101-20041231") >= {ct, mr}
    assert ct not in studies(StudyDate="20050101-")
    assert studies(ModalitiesInStudy="MR") >= {mr}
    assert studies(PatientName="ct1", fuzzymatching="true") == {ct}
    assert studies(PatientID="no-such-patient") == set()


def test_limit_offset_and_includefield(server: Server, http) -> None:
    everything = [value(s, "0020000D") for s in http.get("/dicomweb/studies").json()]
    page = http.get("/dicomweb/studies", params={"limit": 2, "offset": 1}).json()
    assert [value(s, "0020000D") for s in page] == everything[1:3]
    st = server.sops["CT_small.dcm"][0]
    (one,) = http.get("/dicomweb/studies", params={"StudyInstanceUID": st, "includefield": "PatientAge,00081030"}).json()
    assert "00101010" in one and "00081030" in one
    (full,) = http.get("/dicomweb/studies", params={"StudyInstanceUID": st, "includefield": "all"}).json()
    assert len(full) >= len(one)


def test_unsupported_keys_give_a_warning(http) -> None:
    r = http.get("/dicomweb/studies", params={"PatientWeight": "70", "NoSuchKeyword": "1"})
    assert r.status_code == 200
    assert "PatientWeight" in r.headers["warning"] and "NoSuchKeyword" in r.headers["warning"]


def test_series_and_instance_searches(server: Server, http) -> None:
    st, se, sop = server.sops["jls"]
    series = http.get(f"/dicomweb/studies/{st}/series").json()
    assert len(series) == 2
    ours = next(s for s in series if value(s, "0020000E") == se)
    assert value(ours, "00080060") == "CT" and value(ours, "00201209") == 1 and "00200011" in ours
    (inst,) = http.get(f"/dicomweb/studies/{st}/series/{se}/instances").json()
    assert value(inst, "00080018") == sop and value(inst, "00280008") == 50
    assert value(inst, "00280010") == 128 and value(inst, "00280011") == 128 and "00080016" in inst
    assert len(http.get(f"/dicomweb/studies/{st}/instances").json()) == 2
    assert {value(s, "0020000E") for s in http.get("/dicomweb/series", params={"Modality": "MR"}).json()} >= {server.sops["MR_small.dcm"][1]}
    found = http.get("/dicomweb/instances", params={"SOPInstanceUID": sop}).json()
    assert [value(i, "00080018") for i in found] == [sop] and "0020000D" in found[0]
    assert http.get("/dicomweb/studies/1.2.3.4.5/series").json() == []


# -- WADO-RS metadata ---------------------------------------------------------------------------
def test_series_metadata_bulk_uri_and_cache(server: Server, http) -> None:
    st, se, sop = server.sops["jls"]
    ctx = server.app.state.dicomweb
    r = http.get(f"/dicomweb/studies/{st}/series/{se}/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith(DICOM_JSON)
    (meta,) = r.json()
    assert value(meta, "00080018") == sop and value(meta, "00280008") == 50
    assert len(meta["52009230"]["Value"]) == 50  # per-frame functional groups kept
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri == f"{server.instance_url('jls')}/bulkdata/7FE00010"
    hits = ctx.metadata_cache.hits
    assert http.get(f"/dicomweb/studies/{st}/series/{se}/metadata").content == r.content
    assert ctx.metadata_cache.hits == hits + 1
    study_meta = http.get(f"/dicomweb/studies/{st}/metadata").json()
    assert len(study_meta) == 2
    inst_meta = http.get(f"{server.instance_url('jls')}/metadata".replace(server.url, "")).json()
    assert len(inst_meta) == 1 and value(inst_meta[0], "00080018") == sop


def test_metadata_gzip(server: Server, http) -> None:
    st, se, _ = server.sops["jls"]
    r = http.get(f"/dicomweb/studies/{st}/series/{se}/metadata", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip" and r.json()[0]["00280008"]["Value"] == [50]


def test_metadata_not_found_and_not_acceptable(http) -> None:
    assert http.get("/dicomweb/studies/1.2.3.4/series/5.6/metadata").status_code == 404
    r = http.get("/dicomweb/studies/1.2.3.4/metadata", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 406 and "application/dicom+json" in r.json()["error"]


# -- WADO-RS frames -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["jls", "native", "rgb"])
def test_frames_default_octet_stream_equal_decoded_frames(server: Server, http, name: str) -> None:
    r = http.get(f"{server.instance_url(name)}/frames/1,3,5", headers={"Accept": OCTET})
    assert r.status_code == 200
    parts = multipart_parts(r)
    assert len(parts) == 3
    with dcmstream.open(server.files[name], cache=False) as inst:
        for (headers, body), number in zip(parts, (1, 3, 5), strict=True):
            assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
            np.testing.assert_array_equal(decode_octets(body, server.files[name]), inst.frame(number - 1))


def test_frame_as_stored_is_the_codestream(server: Server, http) -> None:
    r = http.get(f"{server.instance_url('jls')}/frames/7", headers={"Accept": AS_STORED})
    assert r.status_code == 200
    assert 'type="image/jls"' in r.headers["content-type"]
    ((headers, body),) = multipart_parts(r)
    assert headers["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    with dcmstream.open(server.files["jls"], cache=False) as inst:
        assert body == inst.encoded_frame(6)
    r = http.get(f"{server.instance_url('jls')}/frames/8", headers={"Accept": 'multipart/related; type="image/jls"'})
    assert r.status_code == 200 and 'type="image/jls"' in r.headers["content-type"]


def test_htj2k_only_when_asked(server: Server, http) -> None:
    url = f"{server.instance_url('htj2k')}/frames/2"
    ((headers, _),) = multipart_parts(http.get(url))
    assert headers["content-type"].startswith("application/octet-stream")
    r = http.get(url, headers={"Accept": 'multipart/related; type="image/jphc"'})
    ((headers, body),) = multipart_parts(r)
    assert headers["content-type"] == "image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201"
    with dcmstream.open(server.files["htj2k"], cache=False) as inst:
        assert body == inst.encoded_frame(1)


def test_frame_request_reads_only_that_frame(server: Server, http) -> None:
    blobs = server.archive.blobs
    record = server.archive.record(server.sops["jls"][2])
    stored = server.archive.stored(record)
    server.archive.cache.purge(stored.cache_key)  # other tests may have decoded every frame
    for number in (41, 42):
        before = blobs.bytes_read
        r = http.get(f"{server.instance_url('jls')}/frames/{number}", headers={"Accept": AS_STORED})
        assert r.status_code == 200
        assert blobs.bytes_read - before == stored.index.span(number - 1)[1]
    total = server.files["jls"].stat().st_size
    assert stored.index.span(40)[1] < total / 40


def test_single_part_octet_stream(server: Server, http) -> None:
    r = http.get(f"{server.instance_url('native')}/frames/2", headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/octet-stream")
    with dcmstream.open(server.files["native"], cache=False) as inst:
        np.testing.assert_array_equal(decode_octets(r.content, server.files["native"]), inst.frame(1))


def test_frame_errors(server: Server, http) -> None:
    url = server.instance_url("jls")
    assert http.get(f"{url}/frames/0").status_code == 400
    assert http.get(f"{url}/frames/1,,2").status_code == 400
    assert http.get(f"{url}/frames/abc").status_code == 400
    r = http.get(f"{url}/frames/51")
    assert r.status_code == 404 and "50 frames" in r.json()["error"]
    r = http.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert r.status_code == 406
    r = http.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jphc"; transfer-syntax=1.2.840.10008.1.2.4.201'})
    assert r.status_code == 406


# -- WADO-RS instances, bulk data ------------------------------------------------------------------
def test_retrieve_instance_default_is_explicit_le(server: Server, http) -> None:
    r = http.get(server.instance_url("jls"), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    ((headers, body),) = multipart_parts(r)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    with dcmstream.open(server.files["jls"], cache=False) as inst:
        np.testing.assert_array_equal(ds.pixel_array[13], inst.frame(13))
        assert ds.SOPInstanceUID == inst.dataset.SOPInstanceUID


def test_retrieve_rgb_jpeg_transcoded(server: Server, http) -> None:
    r = http.get(server.instance_url("rgb"))
    ((_, body),) = multipart_parts(r)
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0
    with dcmstream.open(server.files["rgb"], cache=False) as inst:
        np.testing.assert_array_equal(ds.pixel_array[3], inst.frame(3))


def test_retrieve_as_stored_is_byte_identical(server: Server, http) -> None:
    r = http.get(server.instance_url("jls"), headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    ((headers, body),) = multipart_parts(r)
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert body == server.files["jls"].read_bytes()


def test_retrieve_study_and_series(server: Server, http) -> None:
    st, se, _ = server.sops["jls"]
    parts = multipart_parts(http.get(f"/dicomweb/studies/{st}", headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}))
    assert len(parts) == 2
    assert {pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID for _, b in parts} == {
        server.sops["jls"][2],
        server.sops["native"][2],
    }
    assert len(multipart_parts(http.get(f"/dicomweb/studies/{st}/series/{se}"))) == 1
    assert http.get("/dicomweb/studies/1.2.3.4.5").status_code == 404
    r = http.get(f"/dicomweb/studies/{st}", headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'})
    assert r.status_code == 406


def test_bulkdata_range(server: Server, http) -> None:
    (meta,) = http.get(f"{server.instance_url('native')}/metadata").json()
    uri = meta["7FE00010"]["BulkDataURI"]
    with dcmstream.open(server.files["native"], cache=False) as inst:
        element = inst.pixel_element
    raw = server.files["native"].read_bytes()[element.value_offset : element.value_offset + element.length]
    r = http.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 100-1099/{len(raw)}"
    assert r.content == raw[100:1100]
    r = http.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=-10"})
    assert r.content == raw[-10:]
    r = http.get(uri, headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.content == raw
    ((headers, body),) = multipart_parts(http.get(uri, headers={"Accept": OCTET, "Range": "bytes=0-9"}))
    assert body == raw[:10] and headers["content-range"] == f"bytes 0-9/{len(raw)}"
    r = http.get(uri, headers={"Accept": "application/octet-stream", "Range": f"bytes={len(raw)}-"})
    assert r.status_code == 416


def test_bulkdata_of_compressed_pixels_and_other_elements(server: Server, http) -> None:
    parts = multipart_parts(http.get(f"{server.instance_url('rgb')}/bulkdata/7FE00010", headers={"Accept": AS_STORED}))
    assert len(parts) == 8 and parts[0][0]["content-type"].startswith("image/jpeg")
    (meta,) = http.get(f"{server.instance_url('CT_small.dcm')}/metadata").json()
    bulk = [k for k, v in meta.items() if "BulkDataURI" in v and k != "7FE00010"]
    assert bulk, "CT_small.dcm has a large private OB element"
    r = http.get(meta[bulk[0]]["BulkDataURI"], headers={"Accept": "application/octet-stream"})
    ds = pydicom.dcmread(server.files["CT_small.dcm"])
    assert r.status_code == 200 and r.content == ds[int(bulk[0], 16)].value
    assert http.get(f"{server.instance_url('CT_small.dcm')}/bulkdata/00100010x").status_code == 400
    assert http.get(f"{server.instance_url('CT_small.dcm')}/bulkdata/00191099").status_code == 404


# -- rendered ----------------------------------------------------------------------------------
def test_rendered_jpeg_png_window_viewport(server: Server, http) -> None:
    url = server.instance_url("jls")
    r = http.get(f"{url}/rendered")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert imagecodecs.jpeg8_decode(r.content).shape == (128, 128)
    r = http.get(f"{url}/frames/10/rendered", params={"window": "40,400,linear", "viewport": "64,32"}, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert imagecodecs.png_decode(r.content).shape == (32, 32)
    a = imagecodecs.png_decode(http.get(f"{url}/frames/10/rendered", params={"window": "40,400"}, headers={"Accept": "image/png"}).content)
    b = imagecodecs.png_decode(http.get(f"{url}/frames/10/rendered", params={"window": "1000,100"}, headers={"Accept": "image/png"}).content)
    assert not np.array_equal(a, b)
    low = http.get(f"{url}/rendered", params={"quality": 5}).content
    high = http.get(f"{url}/rendered", params={"quality": 95}).content
    assert len(low) < len(high)
    rgb = imagecodecs.png_decode(http.get(f"{server.instance_url('rgb')}/frames/2/rendered", headers={"Accept": "image/png"}).content)
    assert rgb.shape == (64, 80, 3)


def test_thumbnails(server: Server, http) -> None:
    st, se, _ = server.sops["jls"]
    for url in (f"{server.instance_url('jls')}/thumbnail", f"/dicomweb/studies/{st}/thumbnail", f"/dicomweb/studies/{st}/series/{se}/thumbnail"):
        r = http.get(url, params={"viewport": "64,64"})
        assert r.status_code == 200 and imagecodecs.jpeg8_decode(r.content).shape == (64, 64)


def test_rendered_errors(server: Server, http) -> None:
    url = server.instance_url("jls")
    assert http.get(f"{url}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    for params in ({"window": "40"}, {"window": "40,-5"}, {"window": "a,b"}, {"window": "40,400,cubic"},
                   {"viewport": "0,10"}, {"viewport": "99999,10"}, {"quality": "500"}, {"quality": "x"}):
        r = http.get(f"{url}/rendered", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"]
    assert http.get(f"{url}/frames/1,2/rendered").status_code == 400


# -- STOW-RS -----------------------------------------------------------------------------------
def _new_instance(testfile_path, **changes) -> bytes:
    ds = pydicom.dcmread(testfile_path)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for k, v in changes.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: " + ct.encode() + b"\r\n\r\n" + data + b"\r\n" for ct, data in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_store_then_find(server: Server, http) -> None:
    data = _new_instance(server.files["MR_small.dcm"], SeriesInstanceUID=pydicom.uid.generate_uid())
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    body, ctype = _multipart([("application/dicom", data)])
    r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    ref = r.json()["00081199"]["Value"][0]
    assert value(ref, "00081155") == ds.SOPInstanceUID
    assert value(ref, "00081190").endswith(f"/instances/{ds.SOPInstanceUID}")
    found = http.get("/dicomweb/instances", params={"SOPInstanceUID": ds.SOPInstanceUID}).json()
    assert len(found) == 1
    again = http.post(f"/dicomweb/studies/{ds.StudyInstanceUID}", content=body, headers={"Content-Type": ctype})
    assert again.status_code == 200  # a duplicate is stored already: success


def test_stow_invalidates_cached_series_metadata(server: Server, http) -> None:
    st, se, _ = server.sops["MR_small.dcm"]
    before = http.get(f"/dicomweb/studies/{st}/series/{se}/metadata").json()
    data = _new_instance(server.files["MR_small.dcm"])
    body, ctype = _multipart([("application/dicom", data)])
    assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 200
    after = http.get(f"/dicomweb/studies/{st}/series/{se}/metadata").json()
    assert len(after) == len(before) + 1


def test_stow_partial_failure(server: Server, http) -> None:
    good = _new_instance(server.files["CT_small.dcm"])
    body, ctype = _multipart([("application/dicom", good), ("application/dicom", b"this is not DICOM" * 30), ("text/plain", b"hello")])
    r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    payload = r.json()
    assert len(payload["00081199"]["Value"]) == 1
    failed = payload["00081198"]["Value"]
    assert [value(f, "00081197") for f in failed] == [0xC000, 0xC000]
    assert "not application/dicom" in r.headers["warning"] and "DICOM" in r.headers["warning"]


def test_stow_all_failed_is_409(server: Server, http) -> None:
    body, ctype = _multipart([("application/dicom", b"\x00" * 2000)])
    r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 409 and value(r.json()["00081198"]["Value"][0], "00081197") == 0xC000
    data = _new_instance(server.files["CT_small.dcm"])
    body, ctype = _multipart([("application/dicom", data)])
    r = http.post("/dicomweb/studies/1.2.3.4.5.6", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 409 and value(r.json()["00081198"]["Value"][0], "00081197") == 0xA900
    assert "does not match" in r.headers["warning"]


def _nothing_new(server: Server, before: dict) -> None:
    assert server.archive.catalog.counts() == before
    assert [p for p in server.archive.blobs.tmp.iterdir()] == []


def test_stow_truncated_body_stores_nothing(server: Server, http) -> None:
    before = server.archive.catalog.counts()
    data = _new_instance(server.files["CT_small.dcm"])
    body, ctype = _multipart([("application/dicom", data), ("application/dicom", _new_instance(server.files["CT_small.dcm"]))])
    r = http.post("/dicomweb/studies", content=body[: len(body) - 3000], headers={"Content-Type": ctype})
    assert r.status_code == 400 and "truncated" in r.json()["error"]
    _nothing_new(server, before)


def test_stow_request_errors(server: Server, http) -> None:
    before = server.archive.catalog.counts()
    data = _new_instance(server.files["CT_small.dcm"])
    body, ctype = _multipart([("application/dicom", data)])
    assert http.post("/dicomweb/studies", content=data, headers={"Content-Type": "application/dicom"}).status_code == 415
    assert http.post("/dicomweb/studies", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
    r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 400 and "boundary" in r.json()["error"]
    r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype.replace("b0undary", "other")})
    assert r.status_code == 400
    r = http.post("/dicomweb/studies", content=b"", headers={"Content-Type": ctype})
    assert r.status_code == 400
    huge_header = b"--b0undary\r\nContent-Type: application/dicom\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n" + data + b"\r\n--b0undary--\r\n"
    r = http.post("/dicomweb/studies", content=huge_header, headers={"Content-Type": ctype})
    assert r.status_code == 400 and "headers exceed" in r.json()["error"]
    big, _ = _multipart([("application/dicom", b"\x00" * (MAX_UPLOAD + 10))])
    r = http.post("/dicomweb/studies", content=big, headers={"Content-Type": ctype})
    assert r.status_code == 413
    assert http.post("/dicomweb/studies/not-a-uid", content=body, headers={"Content-Type": ctype}).status_code == 400
    _nothing_new(server, before)


# -- malformed requests ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/dicomweb/studies/1.2.abc",
        "/dicomweb/studies/1.2.3/series/x/metadata",
        "/dicomweb/studies/1.2.3/series/4.5/instances/6..7/frames/1",
        "/dicomweb/studies/" + "1." * 40 + "1/series",
        "/dicomweb/studies/%2e%2e/series",
        "/dicomweb/studies/..%2F..%2Fetc%2Fpasswd/metadata",
    ],
)
def test_bad_uids_are_400(http, path: str) -> None:
    r = http.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    if r.status_code == 400:
        assert "not a valid UID" in r.json()["error"]


def test_path_traversal_never_escapes(server: Server) -> None:
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    for raw in ("/dicomweb/studies/../../../../etc/passwd", "/dicomweb/studies/1.2/series/..%2f..%2f..%2fetc/metadata", "/../catalog.sqlite"):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert 400 <= status < 500, (raw, reply[:200])
        assert b"root:" not in reply and b"SQLite format" not in reply


def test_oversized_request_heads(http) -> None:
    r = http.get("/dicomweb/studies", headers={"X-Huge": "a" * 100_000})
    assert r.status_code == 431 and "exceed" in r.json()["error"]
    r = http.get("/dicomweb/studies", params={"PatientID": "x" * 20_000})
    assert r.status_code == 414


def test_bad_query_values(http) -> None:
    for params in ({"limit": "-1"}, {"limit": "ten"}, {"offset": "x"}, {"StudyDate": "2020-abc"}, {"StudyInstanceUID": "1.2,abc"},
                   {"fuzzymatching": "maybe"}, {"SeriesNumber": "x"}):
        url = "/dicomweb/series" if "SeriesNumber" in params else "/dicomweb/studies"
        r = http.get(url, params=params)
        assert r.status_code == 400, params
        assert r.json()["error"]


# -- metrics, CORS ----------------------------------------------------------------------------
def test_metrics(server: Server, http) -> None:
    http.get(f"{server.instance_url('jls')}/frames/1")
    text = http.get("/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    requests = next(f for f in text_string_to_metric_families(text) if f.name == "dcmstream_http_requests")
    frames = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
    assert any(s.labels == {"route": frames, "method": "GET", "status": "200"} and s.value >= 1 for s in requests.samples)
    assert "dcmstream_http_request_duration_seconds_bucket{" in text and 'le="+Inf"' in text
    assert "dcmstream_http_response_bytes_total{" in text
    for name in ("dcmstream_cache_hits_total", "dcmstream_cache_misses_total", "dcmstream_cache_hit_rate", "dcmstream_cache_bytes", "process_resident_memory_bytes"):
        assert f"\n{name} " in text
    assert 'dcmstream_archive_objects{level="instances"}' in text


def test_cors(server: Server, http) -> None:
    r = http.get("/dicomweb/studies", headers={"Origin": ALLOWED_ORIGIN})
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    r = http.options("/dicomweb/studies", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "accept"})
    assert r.status_code == 200 and "GET" in r.headers["access-control-allow-methods"]
    r = http.get("/dicomweb/studies", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_off_by_default(tmp_path) -> None:
    from starlette.testclient import TestClient

    from dcmstream.archive import Archive
    from dcmstream.web import create_app

    with Archive(tmp_path / "a", cache=False) as archive:
        client = TestClient(create_app(archive))
        r = client.get("/dicomweb/studies", headers={"Origin": "http://any.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_public_url(tmp_path, testfile) -> None:
    from starlette.testclient import TestClient

    from dcmstream.archive import Archive
    from dcmstream.web import create_app
    from dcmstream.web.common import ServerConfig

    with Archive(tmp_path / "a", cache=False) as archive:
        archive.ingest_file(testfile("CT_small.dcm"))
        client = TestClient(create_app(archive, ServerConfig(public_url="https://pacs.example/")))
        (study,) = client.get("/dicomweb/studies").json()
        assert value(study, "00081190").startswith("https://pacs.example/dicomweb/studies/")
        st = value(study, "0020000D")
        (meta,) = client.get(f"/dicomweb/studies/{st}/metadata").json()
        assert meta["7FE00010"]["BulkDataURI"].startswith("https://pacs.example/dicomweb/studies/")
