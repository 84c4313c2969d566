"""FrameReader: the one frame reader behind Instance, the archive's StoredInstance and the
transcoder. A reader built from a catalog record (no header parse) must read and decode
exactly what the reader of the opened file does, for every transfer syntax of the corpus."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRBigEndian, SecondaryCaptureImageStorage, generate_uid

import dcmstream
import dcmstream.image.instance as instance_module
from dcmstream.archive import InstanceRecord, StoredInstance
from dcmstream.archive.blobstore import FilesystemBlobStore
from dcmstream.archive.stored import pixel_record, spec_from_record
from dcmstream.cache import FrameCache
from dcmstream.image.frame_reader import FrameReader, codestream_reader
from dcmstream.index import FrameIndex, extended_offset_table
from dcmstream.samples import write_multiframe

from ..conftest import corpus_files

#: At least one file per transfer syntax of the corpus, plus the layouts the reader has
#: special paths for (see the comments).
CASES = [
    "rtdose_1frame.dcm",  # implicit VR little endian
    "SC_rgb_small_odd.dcm",  # explicit VR little endian, odd length
    "emri_small.dcm",  # 10 native frames, 12 of 16 bits
    "liver_1frame.dcm",  # native 1-bit
    "image_dfl.dcm",  # deflated: frames are in the inflated copy
    "MR_small_bigendian.dcm",  # explicit VR big endian, 16-bit
    "SC_rgb_small_odd_big_endian.dcm",  # big endian 8-bit RGB stored as OW (swapped pairs)
    "OBXXXX1A_expb_2frame.dcm",  # big endian 8-bit palette OW, 2 frames
    "SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline, BOT (a wrapped range of one fragment)
    "JPEG-lossy.dcm",  # JPEG extended 12-bit
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1, one fragment per frame
    "JPEG-LL.dcm",  # JPEG lossless SV1, one frame in several fragments
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS near-lossless, BOT
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "US1_J2KR.dcm",  # JPEG 2000 lossless, one frame in several fragments
    "SC_rgb_gdcm_KY.dcm",  # JPEG 2000
    "SC_rgb_rle.dcm",  # RLE, one fragment
    "emri_small_RLE.dcm",  # RLE, 10 frames, BOT
]


def _record_of(inst: dcmstream.Instance, blob_key: str) -> InstanceRecord:
    """What ingest stores for ``inst``, through JSON as the catalog keeps it."""
    pixel = json.loads(json.dumps(pixel_record(inst)))
    frame_index = json.loads(json.dumps(inst.frame_index.to_dict()))
    uid = str(inst.header_dataset.get("SOPInstanceUID", "1.2.3"))
    return InstanceRecord(
        study_uid="1.2", series_uid="1.2.3", sop_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax=str(inst.transfer_syntax), blob_key=blob_key, size=0,
        frame_index=frame_index, pixel=pixel,
    )


def _stored(inst: dcmstream.Instance, path: str, tmp_path: Path, cache: FrameCache | None = None) -> StoredInstance:
    blobs = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    key = "1.2/1.2.3/blob.dcm"
    blobs.put_file(key, path)
    return StoredInstance(_record_of(inst, key), blobs, cache)


def _frames_to_check(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


@pytest.mark.parametrize("name", CASES)
def test_a_reader_from_the_catalog_record_reads_what_the_instance_reads(name: str, testfile, tmp_path: Path) -> None:
    path = testfile(name)
    try:
        reference: np.ndarray | None = pixel_array(pydicom.dcmread(path))
    except Exception:  # noqa: BLE001 - pydicom cannot decode 12-bit JPEG: the instance is the reference
        reference = None
    with dcmstream.open(path, cache=False) as inst:
        if reference is not None and len(inst) == 1 and reference.ndim == len(inst.pixel_spec.shape):
            reference = reference[np.newaxis]
        deflated = inst.pixel_value_source is not inst.source
        if deflated:
            # The stored index refers to the inflated bytes: a reader from the record then
            # needs them as its source (the archive serves these through the full parser).
            record = _record_of(inst, "unused")
            reader = FrameReader(
                spec_from_record(record.pixel), record.transfer_syntax, index=FrameIndex.from_dict(record.frame_index),
                source=inst.pixel_value_source, name=record.sop_uid, little_endian=record.pixel["little_endian"],
                be_swap_ow=record.pixel["swap_ow"], value_offset=record.pixel["value_offset"],
            )
            encoded, decoded = reader.encoded_frame, reader.frame
        else:
            stored = _stored(inst, path, tmp_path)
            assert stored.pixel_spec == inst.pixel_spec and len(stored) == len(inst)
            encoded, decoded = stored.encoded_frame, stored.frame
        for i in _frames_to_check(len(inst)):
            assert encoded(i) == inst.encoded_frame(i)
            mine, theirs = decoded(i), inst.frame(i)
            assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
            np.testing.assert_array_equal(mine, theirs)
            tolerance = 1 if inst.transfer_syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51") else 0
            if reference is not None:  # and both agree with pydicom (lossy JPEG: +-1 rounding)
                assert np.abs(theirs.astype(np.int64) - reference[i].astype(np.int64)).max() <= tolerance


def test_the_cases_cover_every_transfer_syntax_of_the_corpus(testfile) -> None:
    covered = set()
    for name in CASES:
        with dcmstream.open(testfile(name), cache=False) as inst:
            covered.add(str(inst.transfer_syntax))
    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in corpus_files():
            try:
                with dcmstream.open(path, cache=False) as inst:
                    if inst.has_pixels:
                        found.add(str(inst.transfer_syntax))
            except dcmstream.DcmstreamError:
                continue
    assert found - covered == set()


@pytest.mark.parametrize("name", ["SC_rgb_small_odd_jpeg.dcm", "emri_small_RLE.dcm", "JPEGLSNearLossless_08.dcm"])
def test_a_one_fragment_frame_is_read_as_item_header_then_codestream(name: str, testfile) -> None:
    path = testfile(name)
    ds = pydicom.dcmread(path)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    expected = list(generate_frames(ds.PixelData, number_of_frames=n))
    with dcmstream.open(path, cache=False) as inst:
        assert inst.frame_index.wrapped  # a BOT gives ranges of items, headers included
        for i in range(n):
            inst.source.reset_counters()
            data = inst.encoded_frame(i)
            assert data == expected[i]
            # 8 bytes of item header, then exactly the value: no larger read to copy out of.
            assert inst.source.read_calls == 2 and inst.source.bytes_read == 8 + len(data)


@pytest.mark.parametrize("offset_table", ["bot", "none"])
def test_frames_in_several_fragments_are_joined(offset_table: str, tmp_path: Path) -> None:
    one = write_multiframe(tmp_path / "one.dcm", frames=4, syntax="jpeg-ls", rows=48, columns=40, seed=3)
    three = write_multiframe(tmp_path / "three.dcm", frames=4, syntax="jpeg-ls", rows=48, columns=40, seed=3,
                             fragments_per_frame=3, offset_table=offset_table)
    ds = pydicom.dcmread(three)
    with dcmstream.open(one, cache=False) as ref, dcmstream.open(three, cache=False) as inst:
        assert inst.frame_index.wrapped and inst.frame_index.kind == ("bot" if offset_table == "bot" else "markers")
        stored = _stored(inst, str(three), tmp_path)
        joined = list(generate_frames(ds.PixelData, number_of_frames=4))
        for i in range(4):
            assert inst.encoded_frame(i) == ref.encoded_frame(i) == stored.encoded_frame(i) == joined[i]
            np.testing.assert_array_equal(stored.frame(i), ref.frame(i))


def _be_ow_file(path: Path) -> tuple[Path, np.ndarray]:
    """8-bit, 3 frames of 3x5 (15 bytes: frames 1 and 2 start inside a swapped pair), OW."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 5, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    values = (np.arange(45) * 5).astype(np.uint8)
    stored = np.concatenate([values, np.zeros(1, np.uint8)]).reshape(-1, 2)[:, ::-1]  # OW, big endian
    ds.add_new(0x7FE00010, "OW", stored.tobytes())
    ds.save_as(path, enforce_file_format=True, little_endian=False, implicit_vr=False)
    return path, values.reshape(3, 3, 5)


def test_big_endian_ow_frames_at_odd_offsets(tmp_path: Path) -> None:
    path, expected = _be_ow_file(tmp_path / "be_ow.dcm")
    np.testing.assert_array_equal(pixel_array(pydicom.dcmread(path)), expected)
    with dcmstream.open(path, cache=False) as inst:
        assert inst.reader.be_swap_ow and not inst.is_little_endian
        assert (inst.frame_index.offsets - inst.pixel_element.value_offset).tolist() == [0, 15, 30]
        stored = _stored(inst, str(path), tmp_path)
        assert stored.record.pixel["swap_ow"]
        for i in range(3):
            assert inst.encoded_frame(i) == stored.encoded_frame(i) == expected[i].tobytes()
            np.testing.assert_array_equal(inst.frame(i), expected[i])
            np.testing.assert_array_equal(stored.frame(i), expected[i])
            # Served as Explicit VR Little Endian: the values in order.
            assert stored.uncompressed_frame(i) == expected[i].tobytes()


def test_serving_from_the_record_parses_no_header(testfile, tmp_path: Path, monkeypatch) -> None:
    path = testfile("emri_small_RLE.dcm")
    with dcmstream.open(path, cache=False) as inst:
        stored = _stored(inst, path, tmp_path)
        expected = [inst.frame(i) for i in range(len(inst))]

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the header was parsed")

    monkeypatch.setattr(instance_module, "parse_header", no_parse)
    monkeypatch.setattr("dcmstream.index.header.parse_header", no_parse)
    for i, frame in enumerate(expected):
        np.testing.assert_array_equal(stored.frame(i), frame)


@pytest.mark.parametrize("name, native", [("emri_small.dcm", True), ("emri_small_RLE.dcm", False)])
def test_cache_keys_are_the_readers(name: str, native: bool, testfile, tmp_path: Path) -> None:
    path = testfile(name)
    cache = FrameCache(max_bytes=10 << 20, encoded_share=0.2)
    with dcmstream.open(path, cache=cache) as inst:
        reader = inst.reader
        assert reader.cache_key == inst.cache_key and reader.cache is cache
        arr = inst.frame(3)
        assert cache.peek((inst.cache_key, 3, "full")) and reader.frame_key(3) == (inst.cache_key, 3, "full")
        # Only compressed frames keep their stored bytes in the encoded tier.
        assert cache.peek((inst.cache_key, 3, "encoded"), "encoded") is not native
        # A decimated level reuses the cached full frame.
        np.testing.assert_array_equal(inst.frame(3, level=1), arr[::2, ::2])
        stored = _stored(inst, path, tmp_path, cache)
        np.testing.assert_array_equal(stored.frame(3), arr)
        assert cache.peek((stored.cache_key, 3, "full")) and stored.reader.frame_key(3) == (stored.cache_key, 3, "full")
        assert stored.frame(3) is stored.frame(3)  # the second read is the cached array


@pytest.mark.parametrize("name", ["SC_rgb_small_odd_jpeg.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_rle.dcm"])
def test_the_transcoders_codestream_reader_decodes_as_the_instance(name: str, testfile) -> None:
    with dcmstream.open(testfile(name), cache=False) as inst:
        reader = codestream_reader(str(inst.transfer_syntax), inst.pixel_spec)
        assert codestream_reader(str(inst.transfer_syntax), inst.pixel_spec) is reader  # looked up once
        data = inst.encoded_frame(0)
        np.testing.assert_array_equal(reader.decode(data), inst.frame(0))
        np.testing.assert_array_equal(reader.decode_stored(data), inst.reader.decode_stored(data))


def test_a_wrong_codestream_is_a_typed_decode_error(testfile) -> None:
    with dcmstream.open(testfile("MR_small_jpeg_ls_lossless.dcm"), cache=False) as inst:
        reader = codestream_reader(str(inst.transfer_syntax), inst.pixel_spec)
        with pytest.raises(dcmstream.DecodeError, match="could not be decoded"):
            reader.decode(b"\xff\xd8 not a codestream")
    with dcmstream.open(testfile("SC_rgb_small_odd_jpeg.dcm"), cache=False) as small, \
            dcmstream.open(testfile("JPEG-lossy.dcm"), cache=False) as other:
        # A valid codestream of the wrong size for the header: a DecodeError, not a reshape.
        reader = codestream_reader(str(small.transfer_syntax), small.pixel_spec)
        with pytest.raises(dcmstream.DecodeError):
            reader.decode(other.encoded_frame(0))


def test_extended_offset_table_is_read_from_the_dataset(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path / "eot.dcm", frames=5, syntax="rle", rows=32, columns=32, offset_table="eot")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    offsets, lengths = extended_offset_table(ds, "eot.dcm")
    with dcmstream.open(path, cache=False) as inst:
        assert inst.frame_index.kind == "eot"
        assert np.frombuffer(lengths, "<u8").tolist() == inst.frame_index.lengths.tolist()
        assert len(offsets) == 8 * len(inst)
    del ds.ExtendedOffsetTable
    assert extended_offset_table(ds, "eot.dcm") is None
    ds2 = pydicom.dcmread(path, stop_before_pixels=True)
    with pytest.warns(UserWarning, match="cannot be assigned to a tag with VR OV"):
        ds2["ExtendedOffsetTable"].value = 5  # not OV bytes
    with pytest.warns(UserWarning, match="not OV data"):
        assert extended_offset_table(ds2, "eot.dcm") is None


def test_protocol_types_are_met(testfile, tmp_path: Path) -> None:
    from dcmstream.image import FrameSource

    path = testfile("emri_small_RLE.dcm")
    with dcmstream.open(path, cache=False) as inst:
        sources: list[FrameSource] = [inst, _stored(inst, path, tmp_path)]
        for source in sources:
            assert len(source) == 10 and source.pixel_spec.rows == 64
            assert source.transfer_syntax == "1.2.840.10008.1.2.5"
            assert source.encoded_frame(9) == inst.encoded_frame(9)
