"""Regression tests for what the HTTP fuzz run (test_fuzz_http.py) found, one each."""

from __future__ import annotations

import httpx
import pytest

from dcmstream.archive import Archive
from dcmstream.web import create_app

from ..server_util import running_server


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    archive = Archive(tmp_path_factory.mktemp("regress-archive"), cache=False)
    with running_server(create_app(archive)) as base:
        yield base
    archive.close()


def test_qido_unknown_non_latin1_key_is_named_in_an_ascii_warning(url: str) -> None:
    """Found: an unknown query key outside latin-1 (``includefield=Që\\x06o\\U00086b56``)
    made the Warning header unencodable: 500. Now 200 with the key masked."""
    r = httpx.get(f"{url}/dicomweb/instances", params=[("includefield", "Që\x06o\U00086b56"), ('Pa"tient\r\nX', "1")],
                  headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text
    warning = r.headers["warning"]
    assert warning.startswith('299 dcmstream "') and warning.endswith('"') and warning.count('"') == 2
    # Names that are not attribute keywords or tags are masked (they may be patient data).
    assert warning.isascii() and "tient" not in warning and "a parameter that is not an attribute keyword" in warning


def test_stow_part_type_outside_latin1_is_named_in_an_ascii_warning(url: str) -> None:
    """The same for STOW-RS: a part's media type is echoed in the Warning header of the 409."""
    body = ("--b\r\nContent-Type: image/ëx\U0001f600\r\n\r\nhello\r\n--b--\r\n").encode()
    r = httpx.post(f"{url}/dicomweb/studies", content=body,
                   headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert r.status_code == 409, r.text
    assert r.headers["warning"].isascii() and "not application/dicom" in r.headers["warning"]


@pytest.mark.parametrize("key", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
@pytest.mark.parametrize("value", ["\n", " ", ",", " , \\"])
def test_qido_uid_key_without_any_uid_is_400(url: str, key: str, value: str) -> None:
    """Found: ``SOPInstanceUID=%0A`` (white space or separators only) reached the catalog
    as an empty UID list: IndexError, 500. Now a 400 naming the key."""
    r = httpx.get(f"{url}/dicomweb/studies/1.2/series", params={key: value}, headers={"Accept": "application/dicom+json"})
    assert r.status_code == 400, r.text
    assert key in r.json()["error"]


def test_qido_sop_class_uid_is_validated(url: str) -> None:
    r = httpx.get(f"{url}/dicomweb/instances", params={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2,x"},
                  headers={"Accept": "application/dicom+json"})
    assert r.status_code == 400 and "SOPClassUID" in r.json()["error"]
    ok = httpx.get(f"{url}/dicomweb/instances", params={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
                   headers={"Accept": "application/dicom+json"})
    assert ok.status_code == 200
