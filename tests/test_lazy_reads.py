"""Opening reads the header only; a frame reads that frame's bytes only."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

import dcmstream
from dcmstream.io import FileSource, SourceReader

READ_AHEAD = 65536  # SourceReader's largest read-ahead block: the most opening may read past the header

ENCAPSULATED = [
    "emri_small_jpeg_2k_lossless.dcm",  # no BOT, one fragment per frame
    "emri_small_RLE.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "JPEGLSNearLossless_08.dcm",  # BOT
]
NATIVE = ["emri_small.dcm", "CT_small.dcm", "SC_rgb_2frame.dcm", "liver_1frame.dcm"]


@pytest.mark.parametrize("name", ENCAPSULATED + NATIVE)
def test_open_reads_only_the_header(testfile, name: str) -> None:
    source = FileSource(testfile(name))
    with dcmstream.open(source, cache=False) as inst:
        header_end = inst.pixel_element.value_offset
        assert source.bytes_read <= header_end + READ_AHEAD
        if source.size > header_end + READ_AHEAD + 8 * len(inst):
            assert source.bytes_read < source.size


@pytest.mark.parametrize("name", ENCAPSULATED + NATIVE)
def test_frame_reads_only_its_bytes(testfile, name: str) -> None:
    source = FileSource(testfile(name))
    with dcmstream.open(source, cache=False) as inst:
        for i in range(len(inst)):
            offset, length = inst.frame_index.span(i)
            before = source.bytes_read
            inst.frame(i)
            assert source.bytes_read - before == length, f"frame {i}"
            assert source.read_calls >= 1


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_encoded_frame_is_the_stored_codestream(testfile, name: str) -> None:
    path = testfile(name)
    ds = pydicom.dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))
    with dcmstream.open(path) as inst:
        assert [inst.encoded_frame(i) for i in range(len(inst))] == expected[: len(inst)]


def test_native_encoded_frame_is_raw_bytes(testfile) -> None:
    path = testfile("emri_small.dcm")
    ds = pydicom.dcmread(path)
    with dcmstream.open(path) as inst:
        size = len(ds.PixelData) // len(inst)
        for i in range(len(inst)):
            assert inst.encoded_frame(i) == ds.PixelData[i * size : (i + 1) * size]


def test_sources_agree(testfile) -> None:
    path = testfile("emri_small_RLE.dcm")
    data = Path(path).read_bytes()
    with dcmstream.open(path) as a, dcmstream.open(data) as b, dcmstream.open(io.BytesIO(data)) as c:
        for i in range(len(a)):
            np.testing.assert_array_equal(a.frame(i), b.frame(i))
            np.testing.assert_array_equal(a.frame(i), c.frame(i))


def test_frames_iterates_lazily_and_accepts_indices(testfile) -> None:
    source = FileSource(testfile("emri_small.dcm"))
    with dcmstream.open(source, cache=False) as inst:
        before = source.bytes_read
        it = inst.frames([3, 1])
        assert source.bytes_read == before  # nothing read until iterated
        third = next(it)
        assert source.bytes_read - before == inst.frame_index.span(3)[1]
        np.testing.assert_array_equal(third, inst.frame(3))
        np.testing.assert_array_equal(inst.frame(-1), inst.frame(len(inst) - 1))
        with pytest.raises(IndexError):
            inst.frame(len(inst))


def test_reader_clamps_reads_to_the_source(testfile) -> None:
    source = FileSource(testfile("CT_small.dcm"))
    reader = SourceReader(source)
    reader.seek(source.size - 10)
    # A corrupt length asking for 4 GiB gets the 10 bytes that exist, no allocation.
    assert len(reader.read(0xFFFFFFF0)) == 10


def test_closed_instance_refuses_reads(testfile) -> None:
    inst = dcmstream.open(testfile("CT_small.dcm"))
    inst.close()
    with pytest.raises(dcmstream.SourceError):
        inst.frame(0)


def test_frame_index_round_trips_through_dict(testfile) -> None:
    with dcmstream.open(testfile("emri_small_jpeg_2k_lossless.dcm")) as inst:
        index = inst.frame_index
        again = dcmstream.FrameIndex.from_dict(index.to_dict())
        assert again.kind == index.kind and again.wrapped == index.wrapped
        np.testing.assert_array_equal(again.offsets, index.offsets)
        np.testing.assert_array_equal(again.lengths, index.lengths)


def test_read_writable_is_the_same_bytes_in_a_buffer_of_its_own(tmp_path) -> None:
    from dcmstream.errors import DicomFormatError, SourceError
    from dcmstream.io import BytesSource

    data = bytes(range(256)) * 40
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    for source in (FileSource(path), BytesSource(data)):
        buf = source.read_writable(100, 5000)
        assert isinstance(buf, bytearray) and buf == data[100:5100]
        np.frombuffer(buf, np.uint8)[:] = 0  # writable, and not the source's memory
        assert source.read_at(100, 10) == data[100:110]
        assert source.read_calls == 2 and source.bytes_read == 5010
        with pytest.raises(DicomFormatError, match="truncated"):
            source.read_writable(len(data) - 10, 20, "frame 3")
        source.close()
        with pytest.raises(SourceError):
            source.read_writable(0, 10)



def test_read_into_fills_a_callers_buffer(tmp_path) -> None:
    from dcmstream.errors import DicomFormatError, SourceError
    from dcmstream.io import BytesSource

    data = bytes(range(256)) * 40
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    for source in (FileSource(path), BytesSource(data)):
        out = np.zeros((50, 50), np.uint16)  # a frame buffer: 5000 bytes, more than is read
        source.read_into(100, 4000, out)
        assert out.tobytes()[:4000] == data[100:4100] and not out.reshape(-1)[2000:].any()
        assert source.read_calls == 1 and source.bytes_read == 4000
        with pytest.raises(DicomFormatError, match="truncated"):
            source.read_into(len(data) - 10, 20, bytearray(20), "frame 3")
        with pytest.raises(ValueError, match="do not fit"):
            source.read_into(0, 20, bytearray(10))
        source.close()
        with pytest.raises(SourceError):
            source.read_into(0, 10, bytearray(10))

def test_native_frames_are_writable_views_not_copies(testfile) -> None:
    # A native frame is decoded straight from the buffer it was read into.
    with dcmstream.open(testfile("CT_small.dcm"), cache=False) as inst:
        inst.source.reset_counters()
        frame = inst.frame(0)
        assert frame.flags.writeable and frame.base is not None
        assert inst.source.read_calls == 1
        np.testing.assert_array_equal(frame, pydicom.dcmread(testfile("CT_small.dcm")).pixel_array)
