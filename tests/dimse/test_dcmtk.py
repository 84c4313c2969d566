"""The archive's DIMSE listener against real DCMTK peers: echoscu, storescu (every transfer
syntax the archive stores), findscu at every level of both models, movescu to a storescp
and getscu (retrieved pixel data identical to what was sent), DICOMweb and DIMSE seeing
each other's instances, the ``send`` CLI to a storescp."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pydicom
import pytest

from dcmstream.archive import Archive
from dcmstream.config import DimsePeer
from dcmstream.dimse import DimseServer
from dcmstream.dimse.scu import file_item, send_items
from dcmstream.web import create_app
from tests.server_util import running_server

from .conftest import TEST_FILES, Storescp, corpus_file, dcmtk, pixel_bytes, run, sample_files, storescu_config

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"


def _addr(server: DimseServer) -> list[str]:
    return ["-aec", "DCMSTREAM", "127.0.0.1", str(server.port)]


def _store(server: DimseServer, files: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config, profile = storescu_config(tmp_path, files)
    return run(dcmtk("storescu"), "-xf", str(config), profile, *_addr(server), *map(str, files))


@pytest.fixture
def corpus(tmp_path: Path) -> list[Path]:
    """The test files (copies with SOP Instance UIDs of their own: pydicom's MR_small
    variants share one) and the generated ones."""
    from pydicom.uid import generate_uid

    folder = tmp_path / "corpus"
    folder.mkdir()
    out = []
    for name in TEST_FILES:
        ds = pydicom.dcmread(corpus_file(name))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / name, enforce_file_format=True)
        out.append(folder / name)
    return out + sample_files(tmp_path / "samples")


def test_echoscu(server: DimseServer) -> None:
    result = run(dcmtk("echoscu"), "-v", *_addr(server))
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


def test_storescu_every_syntax_seen_by_dicomweb(server: DimseServer, archive: Archive, corpus: list[Path],
                                                 tmp_path: Path) -> None:
    from dcmstream.codecs.syntaxes import by_name
    from dcmstream.samples import SYNTAXES

    syntaxes = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in corpus}
    assert syntaxes == {by_name(name).uid for name in SYNTAXES}  # every syntax the project can write
    # DCMTK 3.6.7 does not know HTJ2K (it reads such a file as explicit VR little endian):
    # those go through dcmstream's own sender (pynetdicom)
    htj2k = [f for f in corpus if str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
             .startswith("1.2.840.10008.1.2.4.20")]
    _store(server, [f for f in corpus if f not in htj2k], tmp_path)
    results = send_items([file_item(f) for f in htj2k], DimsePeer("DCMSTREAM", "127.0.0.1", server.port))
    assert [r.status for r in results] == [0] * len(htj2k)
    assert server.metrics()["stored"] == len(corpus)
    with running_server(create_app(archive)) as url, httpx.Client(timeout=30) as http:
        for f in corpus:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            record = archive.catalog.get(ds.SOPInstanceUID)
            assert record is not None, f
            assert record.transfer_syntax == ds.file_meta.TransferSyntaxUID
            # the archived bytes carry the very pixel data that was sent
            blob = archive.store_of(record).local_path(record.blob_key)
            assert blob is not None
            assert pixel_bytes(blob) == pixel_bytes(f), f
            found = http.get(f"{url}/dicomweb/instances", params={"SOPInstanceUID": ds.SOPInstanceUID},
                             headers={"Accept": "application/dicom+json"})
            assert found.status_code == 200 and len(found.json()) == 1, f
            got = http.get(f"{url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                           f"/instances/{ds.SOPInstanceUID}/metadata")
            assert got.status_code == 200, f


def test_storescu_again_is_a_duplicate(server: DimseServer, tmp_path: Path) -> None:
    f = corpus_file("CT_small.dcm")
    _store(server, [f], tmp_path)
    _store(server, [f], tmp_path)
    assert (server.metrics()["stored"], server.metrics()["duplicate"]) == (1, 1)


def test_storescu_of_an_unarchivable_instance_fails(server: DimseServer, archive: Archive, tmp_path: Path) -> None:
    f = corpus_file("JPEGLSNearLossless_08.dcm")  # no Study/Series Instance UIDs
    config, profile = storescu_config(tmp_path, [f])
    result = run(dcmtk("storescu"), "-v", "-xf", str(config), profile, *_addr(server), str(f), check=False)
    assert result.returncode != 0
    assert "Received Store Response (Error: CannotUnderstand)" in result.stdout + result.stderr
    assert archive.catalog.counts()["instances"] == 0
    assert server.metrics()["failed"] == 1


def _stow(url: str, path: Path) -> None:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    response = httpx.post(f"{url}/dicomweb/studies", content=body, timeout=30, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert response.status_code == 200, response.text


def _find(server: DimseServer, tmp_path: Path, model: str, *keys: str) -> list[pydicom.Dataset]:
    out = tmp_path / f"find-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    args = [dcmtk("findscu"), model, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    run(*args, *_addr(server))
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def test_stow_then_findscu_at_every_level(server: DimseServer, archive: Archive, tmp_path: Path) -> None:
    ct, mr = corpus_file("CT_small.dcm"), corpus_file("MR_small.dcm")
    with running_server(create_app(archive)) as url:
        _stow(url, ct)
        _stow(url, mr)
    ct_ds = pydicom.dcmread(ct, stop_before_pixels=True)
    # patient root, PATIENT level: wildcard matching on the name
    patients = _find(server, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=CompressedSamples^CT*", "PatientID",
                     "NumberOfPatientRelatedStudies")
    assert [str(p.PatientID) for p in patients] == [ct_ds.PatientID]
    assert int(patients[0].NumberOfPatientRelatedStudies) == 1
    # patient root, STUDY level under the patient
    studies = _find(server, tmp_path, "-P", "QueryRetrieveLevel=STUDY", f"PatientID={ct_ds.PatientID}",
                    "StudyInstanceUID", "StudyDate")
    assert [s.StudyInstanceUID for s in studies] == [ct_ds.StudyInstanceUID]
    # study root, STUDY level: a date range and universal matching
    studies = _find(server, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20040101-20041231",
                    "StudyInstanceUID", "PatientName", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
    assert {s.StudyInstanceUID for s in studies} == {ct_ds.StudyInstanceUID,
                                                     pydicom.dcmread(mr, stop_before_pixels=True).StudyInstanceUID}
    assert all(s.QueryRetrieveLevel == "STUDY" for s in studies)
    # SERIES and IMAGE levels
    series = _find(server, tmp_path, "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={ct_ds.StudyInstanceUID}",
                   "SeriesInstanceUID", "Modality")
    assert [(s.SeriesInstanceUID, s.Modality) for s in series] == [(ct_ds.SeriesInstanceUID, "CT")]
    images = _find(server, tmp_path, "-S", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={ct_ds.StudyInstanceUID}",
                   f"SeriesInstanceUID={ct_ds.SeriesInstanceUID}", "SOPInstanceUID", "SOPClassUID", "Rows")
    assert [(i.SOPInstanceUID, int(i.Rows)) for i in images] == [(ct_ds.SOPInstanceUID, 128)]
    # the same image through the patient root
    images = _find(server, tmp_path, "-P", "QueryRetrieveLevel=IMAGE", f"PatientID={ct_ds.PatientID}",
                   "SOPInstanceUID")
    assert [i.SOPInstanceUID for i in images] == [ct_ds.SOPInstanceUID]
    # no match
    assert _find(server, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=Nobody*") == []


def _archived(archive: Archive, files: list[Path]) -> dict[str, Path]:
    out = {}
    for f in files:
        result = archive.ingest_file(f)
        assert result.ok, result.message
        out[str(result.sop_uid)] = f
    return out


def test_movescu_to_storescp(server: DimseServer, archive: Archive, storescp: Storescp, tmp_path: Path) -> None:
    sent = _archived(archive, [corpus_file(n) for n in ("CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm",
                                                      "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle.dcm")])
    for sop, original in sent.items():
        ds = pydicom.dcmread(original, stop_before_pixels=True)
        run(dcmtk("movescu"), "-S", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=IMAGE",
            "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
            "-k", f"SOPInstanceUID={sop}", *_addr(server))
    received = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in storescp.files()}
    assert set(received) == set(sent)
    for sop, original in sent.items():
        assert pixel_bytes(received[sop]) == pixel_bytes(original), original
        assert (pydicom.dcmread(received[sop], stop_before_pixels=True).file_meta.TransferSyntaxUID
                == pydicom.dcmread(original, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def test_movescu_study_and_unknown_destination(server: DimseServer, archive: Archive, storescp: Storescp) -> None:
    ct = corpus_file("CT_small.dcm")
    _archived(archive, [ct])
    ds = pydicom.dcmread(ct, stop_before_pixels=True)
    run(dcmtk("movescu"), "-P", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=PATIENT", "-k", f"PatientID={ds.PatientID}",
        *_addr(server))
    assert len(storescp.files()) == 1
    unknown = run(dcmtk("movescu"), "-v", "-S", "-aem", "NOBODY", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", *_addr(server), check=False)
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in unknown.stdout + unknown.stderr


@pytest.mark.parametrize(("files", "prefer"), [
    (("CT_small.dcm", "MR_small_implicit.dcm"), None),
    (("emri_small_jpeg_2k_lossless.dcm", "MR_small_jp2klossless.dcm"), "+xv"),
    (("MR_small_jpeg_ls_lossless.dcm",), "+xt"),
])
def test_getscu_pixel_identical(server: DimseServer, archive: Archive, tmp_path: Path, files: tuple[str, ...],
                                prefer: str | None) -> None:
    sent = _archived(archive, [corpus_file(n) for n in files])
    out = tmp_path / "got"
    out.mkdir()
    for original in sent.values():
        ds = pydicom.dcmread(original, stop_before_pixels=True)
        run(dcmtk("getscu"), "-S", *([prefer] if prefer else []), "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
            "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
            *_addr(server))
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.iterdir()}
    assert set(got) == set(sent)
    for sop, original in sent.items():
        # native files may arrive in another native syntax: compare the decoded pixels then
        a, b = pydicom.dcmread(got[sop]), pydicom.dcmread(original)
        if a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID:
            assert pixel_bytes(got[sop]) == pixel_bytes(original)
        else:
            assert (a.pixel_array == b.pixel_array).all()


def test_send_cli_to_storescp(storescp: Storescp, tmp_path: Path) -> None:
    files = [corpus_file(n) for n in ("CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm")]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-m", "dcmstream", "send", "-q", *map(str, files), "--to", str(storescp.peer)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4" in result.stdout
    received = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in storescp.files()}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert pixel_bytes(received[ds.SOPInstanceUID]) == pixel_bytes(f)
    bad = subprocess.run(
        [sys.executable, "-m", "dcmstream", "send", "-q", str(files[0]), "--to", "NOPE@127.0.0.1:1"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert bad.returncode == 1
