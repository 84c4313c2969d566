"""The output header: elements copied as stored (raw) must say exactly what pydicom's full
parse-and-re-encode says, for every corpus file, and the source dataset stays untouched."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

import dcmstream
from dcmstream.compress import writer
from dcmstream.compress.encoders import parse_target
from dcmstream.compress.filewriter import header_bytes
from dcmstream.compress.options import QualityOptions
from dcmstream.compress.planning import prepare

from ..conftest import corpus_files

TARGET = parse_target("htj2k")


def _header(path: str, as_stored: bool) -> tuple[bytes, bool]:
    """The encoded output header of ``path`` (HTJ2K), with raw elements written as stored,
    or with the copy's original encoding cleared so that pydicom parses and re-encodes
    every element; and whether the fast path applied."""
    with dcmstream.open(path, cache=False) as inst:
        plan, _ = prepare(inst, path, TARGET, QualityOptions(ssim=False))
        fast = plan.dataset.original_encoding == (False, True)
        if not as_stored:
            plan.dataset.set_original_encoding(None, None, plan.dataset.original_character_set)
        data, _ = header_bytes(plan.dataset, writer.encoding_for(TARGET.transfer_syntax), False, plan.raw_groups)
    return data, fast


def _parsed(data: bytes) -> list[tuple[int, str, object]]:
    ds = read_dataset(DicomBytesIO(data), is_implicit_VR=False, is_little_endian=True)
    return [(int(elem.tag), str(elem.VR), elem.value if elem.VR != "SQ" else
             [_parsed_item(item) for item in elem.value]) for elem in ds]


def _parsed_item(item) -> list[tuple[int, str, object]]:
    return [(int(e.tag), str(e.VR), e.value if e.VR != "SQ" else [_parsed_item(i) for i in e.value])
            for e in item]


def _with_pixels() -> list[str]:
    out = []
    for path in corpus_files():
        try:
            with dcmstream.open(path, cache=False) as inst:
                if inst.has_pixels:
                    out.append(path)
        except Exception:  # noqa: BLE001 - unreadable inputs are other tests' business
            continue
    return out


@pytest.mark.slow
def test_headers_copied_as_stored_equal_re_encoded_ones() -> None:
    fast_count = 0
    for path in _with_pixels():
        try:
            stored, fast = _header(path, as_stored=True)
        except Exception as exc:  # noqa: BLE001 - the same file must fail the slow way too
            with pytest.raises(type(exc)):
                _header(path, as_stored=False)
            continue
        fast_count += fast
        re_encoded, _ = _header(path, as_stored=False)
        assert _parsed(stored) == _parsed(re_encoded), path
    assert fast_count > 50  # most corpus files are explicit VR little endian


def test_the_source_dataset_is_not_changed(testfile) -> None:
    path = testfile("693_UNCR.dcm")
    stored = pydicom.dcmread(path, stop_before_pixels=True)
    with dcmstream.open(path, cache=False) as inst:
        plan, _ = prepare(inst, path, parse_target("htj2k-lossy:ratio=10"), QualityOptions(ssim=False))
        assert plan.dataset.SOPInstanceUID != stored.SOPInstanceUID  # lossy: a new one
        assert plan.dataset.ImageType[0] == "DERIVED"
        source = inst.dataset
        assert [(e.tag, e.VR, e.value) for e in source if e.tag != 0x7FE00010] == \
            [(e.tag, e.VR, e.value) for e in stored]


@pytest.mark.slow
def test_raw_elements_are_written_byte_for_byte_as_pydicom_would() -> None:
    # writer.Encoding.dataset copies raw elements itself: the bytes must be pydicom's.
    from pydicom.filewriter import write_dataset

    compared = 0
    enc = writer.encoding_for(TARGET.transfer_syntax)
    for path in _with_pixels():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - unreadable by pydicom: nothing to compare
            continue
        if ds.original_encoding != (False, True):
            continue
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = False, True
        try:
            write_dataset(buffer, ds)
        except Exception:  # noqa: BLE001 - then ours must refuse too
            with pytest.raises(Exception):  # noqa: B017
                enc.dataset(ds)
            continue
        assert enc.dataset(ds) == buffer.getvalue(), path
        compared += enc._as_stored(ds)  # our copying path, not pydicom's writer
    assert compared > 50
