"""Generated multiframe fixtures: every syntax and offset-table layout, lazily read.

Complements the corpus conformance test with what the corpora lack: HTJ2K,
Extended Offset Tables, several fragments per frame, 12-bit JPEG, large frame
counts. The reference is the synthetic frame itself (lossless) or pydicom.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

import dcmstream
from dcmstream.io import FileSource
from dcmstream.samples import synthetic_frames, write_multiframe

LOSSLESS = ["explicit", "implicit", "big-endian", "deflated", "rle", "jpeg-lossless", "jpeg-lossless-sv1",
            "jpeg-ls", "j2k-lossless", "htj2k-lossless", "htj2k-rpcl"]
LOSSY = ["jpeg-ext12", "jpeg-ls-near", "j2k", "htj2k"]
FRAMES = 6


@pytest.fixture(scope="module")
def make(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    made: dict[tuple, str] = {}

    def get(syntax: str, kind: str = "ct", **kw) -> str:
        key = (syntax, kind, tuple(sorted(kw.items())))
        if key not in made:
            name = "_".join(str(p) for p in (syntax, kind, *kw.values()))
            kw.setdefault("rows", 64)
            kw.setdefault("columns", 48)
            made[key] = str(write_multiframe(folder / f"{name}.dcm", frames=kw.pop("frames", FRAMES), syntax=syntax, kind=kind, **kw))
        return made[key]

    return get


def expected_frames(kind: str, rows: int = 64, columns: int = 48) -> list[np.ndarray]:
    source = synthetic_frames(kind, rows=rows, columns=columns, seed=0)
    return [source(i) for i in range(FRAMES)]


@pytest.mark.parametrize("syntax", LOSSLESS)
@pytest.mark.parametrize("kind", ["ct", "us"])
def test_lossless_syntaxes_round_trip(make, syntax: str, kind: str) -> None:
    path = make(syntax, kind)
    with dcmstream.open(path, cache=False) as inst:
        assert len(inst) == FRAMES
        ref = pixel_array(pydicom.dcmread(path))
        for i in range(FRAMES):
            np.testing.assert_array_equal(inst.frame(i), ref[i])


@pytest.mark.parametrize("syntax", LOSSY)
@pytest.mark.parametrize("kind", ["ct", "us"])
def test_lossy_syntaxes_match_pydicom(make, syntax: str, kind: str) -> None:
    if kind == "us" and syntax == "jpeg-ext12":
        pytest.skip("12-bit JPEG holds no 8-bit RGB")
    # Lossy HTJ2K of bright 8-bit ultrasound overshoots 255: OpenJPH wraps it to 0,
    # OpenJPEG (pydicom's decoder) clips; dcmstream must clip too.
    path = make(syntax, kind)
    with dcmstream.open(path, cache=False) as inst:
        ref = pixel_array(pydicom.dcmread(path))
        for i in range(FRAMES):
            diff = np.abs(inst.frame(i).astype(np.int64) - ref[i].astype(np.int64)).max()
            assert diff <= 1, f"frame {i}: {diff}"


def test_12bit_jpeg_extended_decodes(make) -> None:
    # pydicom's Pillow/GDCM plugins cannot do 12-bit JPEG; libjpeg-turbo can.
    path = make("jpeg-ext12", "ct")
    with dcmstream.open(path, cache=False) as inst:
        assert inst.pixel_spec.bits_stored == 12
        truth = expected_frames("ct")
        for i in range(FRAMES):
            frame = inst.frame(i)
            assert frame.dtype == np.uint16
            # Lossy, but close to the original 12-bit values.
            assert np.abs(frame.astype(np.int64) - truth[i]).mean() < 20


@pytest.mark.parametrize(
    ("offset_table", "fragments", "kind"),
    [("bot", 1, "bot"), ("none", 1, "fragments"), ("eot", 1, "eot"), ("bot", 3, "bot"), ("none", 3, "markers")],
)
@pytest.mark.parametrize("syntax", ["jpeg-ls", "j2k-lossless", "htj2k-rpcl"])
def test_every_index_kind_reads_only_its_frame(make, syntax, offset_table, fragments, kind) -> None:
    path = make(syntax, "ct", offset_table=offset_table, fragments_per_frame=fragments)
    truth = expected_frames("ct")
    source = FileSource(path)
    with dcmstream.open(source, cache=False) as inst:
        assert inst.frame_index.kind == kind
        assert inst.frame_index.wrapped == (kind in ("bot", "markers"))
        # Opening reads the header and, without a table, 8 bytes per item header.
        assert source.bytes_read < inst.pixel_element.value_offset + 65536 + 16 * FRAMES * fragments
        for i in reversed(range(FRAMES)):
            offset, length = inst.frame_index.span(i)
            before = source.bytes_read
            np.testing.assert_array_equal(inst.frame(i), truth[i])
            # One fragment: its item header, then exactly its value. Several: the header,
            # then the whole range.
            assert source.bytes_read - before == (length if fragments == 1 else length + 8)
            # The range holds the codestream plus at most the item headers.
            assert length - len(inst.encoded_frame(i)) <= 8 * fragments


def test_native_1000_frames_index_is_arithmetic(tmp_path) -> None:
    path = write_multiframe(tmp_path / "big.dcm", frames=1000, syntax="explicit", kind="ct", rows=32, columns=32)
    source = FileSource(path)
    with dcmstream.open(source, cache=False) as inst:
        assert len(inst) == 1000 and inst.frame_index.kind == "native"
        opened = source.bytes_read
        assert opened < inst.pixel_element.value_offset + 65536  # read-ahead grows to 64 KiB
        truth = synthetic_frames("ct", rows=32, columns=32, seed=0)
        np.testing.assert_array_equal(inst.frame(777), truth(777))
        assert source.bytes_read - opened == 32 * 32 * 2


def test_signed_ct_sign_correction(make) -> None:
    for syntax in ("jpeg-ls", "j2k-lossless", "htj2k-lossless", "explicit"):
        path = make(syntax, "ct", signed=True)
        with dcmstream.open(path, cache=False) as inst:
            assert inst.pixel_spec.pixel_representation == 1
            frame = inst.frame(2)
            assert frame.dtype == np.int16 and frame.min() < -500  # air is -1000 HU
            np.testing.assert_array_equal(frame, pixel_array(pydicom.dcmread(path))[2])


def test_per_frame_groups_are_stepped_over_then_parsed_on_demand(tmp_path) -> None:
    path = write_multiframe(tmp_path / "enh.dcm", frames=40, syntax="jpeg-ls", kind="ct", rows=32, columns=32)
    with dcmstream.open(path, cache=False) as inst:
        header = inst._header
        assert header.deferred_offset is not None  # not parsed at open
        assert "PerFrameFunctionalGroupsSequence" not in header.dataset
        np.testing.assert_array_equal(inst.frame(39), pixel_array(pydicom.dcmread(path))[39])
        full = inst.dataset  # first access parses the sequence
        reference = pydicom.dcmread(path, stop_before_pixels=True)
        assert len(full.PerFrameFunctionalGroupsSequence) == 40
        assert full.PerFrameFunctionalGroupsSequence == reference.PerFrameFunctionalGroupsSequence
        # Elements after the sequence (and before the pixel data) were not lost.
        assert set(reference.keys()) == set(full.keys())
