"""Adversarial inputs found by the hardening run: each gives a clear 4xx, never a 500."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from .conftest import Server

BIG = str(1 << 63)


@pytest.mark.parametrize(
    ("url", "params", "name"),
    [
        ("/dicomweb/studies", {"offset": "1e30"}, "offset"),
        ("/dicomweb/studies", {"offset": BIG}, "offset"),
        ("/dicomweb/studies", {"limit": "1e30"}, "limit"),
        ("/dicomweb/studies", {"limit": BIG}, "limit"),
        ("/dicomweb/instances", {"InstanceNumber": "1e30"}, "InstanceNumber"),
        ("/dicomweb/instances", {"InstanceNumber": BIG}, "InstanceNumber"),
        ("/dicomweb/instances", {"InstanceNumber": "-" + str((1 << 63) + 1)}, "InstanceNumber"),
        ("/dicomweb/instances", {"NumberOfFrames": "1e30"}, "NumberOfFrames"),
        ("/dicomweb/instances", {"NumberOfFrames": "1,1e30"}, "NumberOfFrames"),
        ("/dicomweb/instances", {"NumberOfFrames": f"1,{BIG}"}, "NumberOfFrames"),
        ("/dicomweb/series", {"SeriesNumber": "1.5"}, "SeriesNumber"),
    ],
)
def test_out_of_range_numbers_are_400(http, url: str, params: dict[str, str], name: str) -> None:
    r = http.get(url, params=params)
    assert r.status_code == 400, (params, r.status_code, r.text)
    assert name in r.json()["error"]


def test_largest_integers_still_match(http) -> None:
    top = str((1 << 63) - 1)
    assert http.get("/dicomweb/instances", params={"InstanceNumber": top}).json() == []
    assert http.get("/dicomweb/studies", params={"offset": top}).json() == []


def _palette_variants() -> dict[str, dict[str, object]]:
    short = bytes(10)
    return {
        "short-red-data": {"RedPaletteColorLookupTableData": short},
        "missing-green-data": {"GreenPaletteColorLookupTableData": None},
        "descriptor-more-entries": {"RedPaletteColorLookupTableDescriptor": [512, 0, 16]},
        "descriptor-bad-bits": {"BluePaletteColorLookupTableDescriptor": [256, 0, 3]},
        "missing-descriptor": {"RedPaletteColorLookupTableDescriptor": None},
        "data-of-wrong-length": {"BluePaletteColorLookupTableData": bytes(300)},
    }


@pytest.mark.parametrize("variant", sorted(_palette_variants()))
def test_malformed_palette_is_4xx(server: Server, http, tmp_path: Path, variant: str) -> None:
    src = get_testdata_file("examples_palette.dcm")
    assert src is not None
    ds = pydicom.dcmread(src)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, val in _palette_variants()[variant].items():
        if val is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, val)
    path = tmp_path / "palette.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = server.archive.ingest_file(path)
    assert result.status == "stored", result
    url = f"{server.root}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_uid}"
    for suffix in ("/rendered", "/thumbnail", "/frames/1/rendered"):
        r = http.get(url + suffix, headers={"Accept": "image/png"})
        assert r.status_code in (400, 422), (variant, suffix, r.status_code, r.text)
        assert "palette" in r.json()["error"].lower(), r.text


def _stow(http, *instances: bytes):
    boundary = "b0undary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + d + b"\r\n" for d in instances)
    body += b"--" + boundary.encode() + b"--\r\n"
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})


def _instance(server: Server, sop: str, patient_id: str) -> bytes:
    import io

    ds = pydicom.dcmread(server.files["CT_small.dcm"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    ds.PatientID = patient_id
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_stow_same_sop_other_bytes_is_reported(server: Server, http) -> None:
    sop = generate_uid()
    first = _instance(server, sop, "P-1")
    assert _stow(http, first).status_code == 200
    assert _stow(http, first).status_code == 200  # the same bytes again: a plain duplicate
    changed = _instance(server, sop, "P-2")  # same size, other bytes
    assert len(changed) == len(first)
    r = _stow(http, changed)
    assert r.status_code == 409, r.text
    item = r.json()["00081198"]["Value"][0]
    assert item["00081155"]["Value"] == [sop] and item["00081197"]["Value"] == [0x0111]
    assert sop in r.headers["warning"]
    r = _stow(http, _instance(server, sop, "P-1234"), _instance(server, generate_uid(), "P-3"))
    assert r.status_code == 202, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]
    with server.archive.open_blob(server.archive.record(sop)) as src:
        assert src.read_at(0, src.size) == first  # the archived copy stays
