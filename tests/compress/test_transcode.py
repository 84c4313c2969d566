"""Transcoding: bit-exact lossless round trips, correct DICOM out, the keep/refuse rules,
offset tables, atomic writes and bounded memory."""

from __future__ import annotations

import struct
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import parse_basic_offsets, parse_fragments

import dcmstream
from dcmstream.compress import encoders, transcode, verify, worker, writer
from dcmstream.compress.encoders import TARGETS
from dcmstream.compress.executor import ordered
from dcmstream.compress.frames import digest
from dcmstream.compress.options import OutputOptions, QualityOptions, TranscodeOptions
from dcmstream.compress.planning import in_flight, prepare
from dcmstream.samples import write_multiframe

from .conftest import FRAMES, frames_of

IN_PLACE = TranscodeOptions(output=OutputOptions(in_place=True))
NO_SSIM = TranscodeOptions(quality=QualityOptions(ssim=False))


def _quality(**thresholds: float) -> TranscodeOptions:
    return TranscodeOptions(quality=QualityOptions(**thresholds))


LOSSLESS = [name for name, t in TARGETS.items() if not t.lossy]
ENCAPSULATED_IN_PLACE = TranscodeOptions(output=OutputOptions(in_place=True))
NO_SSIM = TranscodeOptions(quality=QualityOptions(ssim=False))


def _quality(**thresholds: float) -> TranscodeOptions:
    return TranscodeOptions(quality=QualityOptions(**thresholds))


LOSSLESS = [name for name in LOSSLESS if not TARGETS[name].native]


def _items(pixel_data: bytes) -> list[tuple[int, int]]:
    """(offset from the first fragment's item tag, length) of every fragment."""
    _, offsets = parse_fragments(pixel_data)
    first = offsets[1]
    return [(at - first, struct.unpack_from("<I", pixel_data, at + 4)[0]) for at in offsets[1:]]


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("kind", ["ct", "ct-signed", "mr", "us"])
def test_lossless_round_trip(synthetic, tmp_path: Path, target: str, kind: str) -> None:
    source = synthetic[kind]
    result = transcode(source, tmp_path / "out.dcm", target)
    if target == "explicit":  # the source already is Explicit VR Little Endian
        assert result.status == "kept-input"
        return
    assert result.status == "written", result.message
    assert result.verified
    out = pydicom.dcmread(result.output)
    expected = frames_of(source)
    np.testing.assert_array_equal(frames_of(result.output), expected)
    np.testing.assert_array_equal(out.pixel_array, expected)  # pydicom's own decoders
    assert out.file_meta.TransferSyntaxUID == TARGETS[target].transfer_syntax
    assert out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID == \
        pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
    assert out.get("LossyImageCompression", "00") == "00"  # the source's "00" stays
    if not TARGETS[target].native:
        items = _items(out.PixelData)
        assert len(items) == FRAMES  # one fragment per frame
        assert all(length % 2 == 0 for _, length in items)
        assert parse_basic_offsets(out.PixelData) == [at for at, _ in items]
        assert result.offset_table == "bot"


@pytest.mark.parametrize(("target", "expected"), [
    ("jpeg-ls", "RGB"), ("rle", "RGB"), ("deflate", "RGB"), ("j2k", "YBR_RCT"),
    ("htj2k", "YBR_RCT"), ("htj2k-rpcl", "YBR_RCT"), ("j2k-lossy", "YBR_ICT"),
    ("htj2k-lossy", "YBR_ICT"), ("jpeg", "YBR_FULL_422"), ("jpeg-ls-near:2", "RGB")])
def test_colour_photometric(synthetic, tmp_path: Path, target: str, expected: str) -> None:
    result = transcode(synthetic["us"], tmp_path / "out.dcm", target)
    assert result.status == "written", result.message
    out = pydicom.dcmread(result.output)
    assert out.PhotometricInterpretation == expected
    assert out.PlanarConfiguration == 0
    if expected in ("YBR_RCT", "YBR_ICT"):  # the J2K colour transform is on (COD SGcod MCT)
        frame = out.PixelData[out.PixelData.index(b"\xff\x4f"):]
        cod = frame.index(b"\xff\x52")
        assert frame[cod + 8] == 1


def test_j2k_codestreams_declare_bits_stored(synthetic, tmp_path: Path) -> None:
    for target, marker in (("j2k", b"\xff\x51"), ("jpeg-ls", b"\xff\xf7")):
        out = pydicom.dcmread(transcode(synthetic["ct"], tmp_path / f"{target}.dcm",
                                        target).output)
        data = out.PixelData
        at = data.index(marker)
        # SIZ: Ssiz of component 0 is precision-1 (sign bit on top); SOF55: P.
        precision = (data[at + 40] & 0x7F) + 1 if target == "j2k" else data[at + 4]
        assert precision == out.BitsStored == 12


@pytest.mark.parametrize("target", ["jpeg-ls-near:3", "htj2k-lossy:ratio=8",
                                    "j2k-lossy:psnr=55", "htj2k-lossy:psnr=50"])
def test_lossy_header(synthetic, tmp_path: Path, target: str) -> None:
    source = pydicom.dcmread(synthetic["ct"], stop_before_pixels=True)
    result = transcode(synthetic["ct"], tmp_path / "out.dcm", target)
    assert result.status == "written", result.message
    out = pydicom.dcmread(result.output)
    t = encoders.parse_target(target)
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == t.method
    ratio = float(out.LossyImageCompressionRatio)
    assert ratio == pytest.approx(result.ratio, rel=0.01)
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.ImageType[0] == "DERIVED"
    assert out.DerivationCodeSequence[-1].CodeValue == "113040"
    assert out.DerivationCodeSequence[-1].CodingSchemeDesignator == "DCM"
    reference = out.SourceImageSequence[-1]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    assert t.label in out.DerivationDescription
    # Quality numbers are per frame and plausible.
    assert len(result.psnr) == FRAMES and len(result.ssim) == FRAMES
    assert all(v > 35 for v in result.psnr) and all(0.5 < v <= 1 for v in result.ssim)
    if t.name == "jpeg-ls-near":
        assert result.max_error <= t.near
        err = np.abs(frames_of(result.output).astype(int) - frames_of(synthetic["ct"]))
        assert err.max() <= t.near
    if t.ratio is not None:
        assert result.ratio == pytest.approx(t.ratio, rel=0.15)
    if t.psnr is not None:
        assert min(result.psnr) >= t.psnr - 1.5


def test_lossy_on_lossy_appends(synthetic, tmp_path: Path) -> None:
    first = transcode(synthetic["ct"], tmp_path / "a.dcm", "jpeg-ls-near:2")
    second = transcode(first.output, tmp_path / "b.dcm", "htj2k-lossy:ratio=20")
    out = pydicom.dcmread(second.output, stop_before_pixels=True)
    assert list(out.LossyImageCompressionMethod) == ["ISO_14495_1", "ISO_15444_15"]
    assert len(out.LossyImageCompressionRatio) == 2
    assert len(out.SourceImageSequence) == 2 and len(out.DerivationCodeSequence) == 2
    assert out.SourceImageSequence[-1].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"


def test_lossy_input_to_lossless_keeps_flags(tmp_path: Path) -> None:
    src = write_multiframe(tmp_path / "lossy.dcm", frames=3, syntax="jpeg-ls-near", rows=64,
                           columns=48)
    # Decompressing: a bigger result is what was asked for.
    result = transcode(src, tmp_path / "out.dcm", "explicit")
    assert result.status == "written", result.message
    out = pydicom.dcmread(result.output, stop_before_pixels=True)
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_14495_1"  # added from the source syntax
    assert out.SOPInstanceUID == pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID
    np.testing.assert_array_equal(frames_of(result.output), frames_of(src))


def test_jpeg_baseline_input_is_kept_when_lossless_is_bigger(tmp_path: Path) -> None:
    src = write_multiframe(tmp_path / "us.dcm", frames=3, syntax="jpeg-baseline", kind="us",
                           rows=64, columns=48)
    out_dir = tmp_path / "out"
    result = transcode(src, out_dir / "us.dcm", "jpeg-ls")
    assert result.status == "kept-input"
    assert "not smaller" in result.message
    assert (out_dir / "us.dcm").read_bytes() == src.read_bytes()  # the input, copied
    assert [p.name for p in out_dir.iterdir()] == ["us.dcm"]  # no temporary left


def test_qa_threshold_refuses_and_writes_nothing(synthetic, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = transcode(synthetic["ct"], out / "ct.dcm", "htj2k-lossy:ratio=40", options=_quality(min_psnr=60))
    assert result.status == "refused"
    assert "PSNR" in result.message and "frame 0" in result.message
    assert not out.exists() or list(out.iterdir()) == []
    result = transcode(synthetic["ct"], out / "ct.dcm", "jpeg-ls-near:4", options=_quality(max_error=2))
    assert result.status == "refused" and "max error 4 > 2" in result.message
    assert not out.exists() or list(out.iterdir()) == []
    ok = transcode(synthetic["ct"], out / "ct.dcm", "jpeg-ls-near:2", options=_quality(max_error=2, min_ssim=0.9))
    assert ok.status == "written"


def test_unsupported_targets_keep_input(tmp_path: Path, testfile) -> None:
    seg = testfile("liver.dcm")  # 1-bit segmentation
    result = transcode(seg, tmp_path / "seg.dcm", "jpeg-ls")
    assert result.status == "kept-input" and "1-bit" in result.message
    palette = testfile("OBXXXX1A.dcm")
    result = transcode(palette, tmp_path / "pal.dcm", "jpeg")
    assert result.status == "kept-input" and "palette" in result.message
    result = transcode(testfile("MR_small.dcm"), tmp_path / "mr.dcm", "jpeg")
    assert result.status == "kept-input" and "8-bit" in result.message


def test_never_overwrites_the_input(synthetic, tmp_path: Path) -> None:
    src = tmp_path / "ct.dcm"
    src.write_bytes(synthetic["ct"].read_bytes())
    before = src.read_bytes()
    result = transcode(src, src, "jpeg-ls")
    assert result.status == "refused" and src.read_bytes() == before
    assert transcode(src, None, "htj2k-lossy", options=IN_PLACE).status == "refused"
    assert src.read_bytes() == before


def test_in_place_replaces_only_after_verification(synthetic, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "ct.dcm"
    src.write_bytes(synthetic["ct"].read_bytes())
    before = src.read_bytes()
    original = verify.verify_frame

    def corrupt(args, i):  # the written frames never match
        index, _, seconds = original(args, i)
        return index, b"wrong", seconds

    monkeypatch.setattr(verify, "verify_frame", corrupt)
    result = transcode(src, None, "jpeg-ls", options=IN_PLACE)
    assert result.status == "failed" and "verification failed at frame 0" in result.message
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.dcm"]
    monkeypatch.undo()
    result = transcode(src, None, "jpeg-ls", options=IN_PLACE)
    assert result.status == "written" and result.verified
    assert pydicom.dcmread(src).file_meta.TransferSyntaxUID == TARGETS["jpeg-ls"].transfer_syntax
    np.testing.assert_array_equal(frames_of(src), frames_of(synthetic["ct"]))


@pytest.mark.parametrize("target", ["jpeg-ls", "htj2k", "rle"])
def test_extended_offset_table_when_forced(synthetic, tmp_path: Path, target: str) -> None:
    result = transcode(synthetic["ct"], tmp_path / "out.dcm", target,
                        options=TranscodeOptions(output=OutputOptions(eot_threshold=0)))
    assert result.status == "written" and result.offset_table == "eot"
    out = pydicom.dcmread(result.output)
    items = _items(out.PixelData)
    assert parse_basic_offsets(out.PixelData) == []  # empty BOT with EOT (PS3.5 A.4)
    assert np.frombuffer(out.ExtendedOffsetTable, "<u8").tolist() == [at for at, _ in items]
    assert np.frombuffer(out.ExtendedOffsetTableLengths, "<u8").tolist() == [n for _, n in items]
    with dcmstream.open(result.output, cache=False) as inst:
        assert inst.frame_index.kind.value == "eot"
    np.testing.assert_array_equal(out.pixel_array, frames_of(synthetic["ct"]))


def test_bot_overflow_falls_back_to_eot(synthetic, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = writer.write_encapsulated

    def small_bot(fh, encoded, count, *, offset_table="bot", fragments_per_frame=1):
        calls.append(offset_table)
        if offset_table == "bot":
            for _ in encoded:  # as if the second frame started beyond 4 GiB
                raise writer.PixelDataTooLarge("too big")
        return real(fh, encoded, count, offset_table=offset_table)

    monkeypatch.setattr(writer, "write_encapsulated", small_bot)
    result = transcode(synthetic["ct"], tmp_path / "out.dcm", "jpeg-ls")
    assert calls == ["bot", "eot"] and result.offset_table == "eot"
    assert result.status == "written" and result.verified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm"]


def test_failure_mid_write_leaves_nothing(synthetic, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = encoders.JpegLsEncoder.__call__
    seen = []

    def failing(self, frame):
        seen.append(1)
        if len(seen) == 3:
            raise OSError("disk full (simulated)")
        return real(self, frame)

    monkeypatch.setattr(encoders.JpegLsEncoder, "__call__", failing)
    out = tmp_path / "out"
    result = transcode(synthetic["ct"], out / "ct.dcm", "jpeg-ls")
    assert result.status == "failed" and "disk full" in result.message
    assert list(out.iterdir()) == []  # the temporary file is gone too


@pytest.mark.parametrize(("target", "jobs"), [("htj2k", 2), ("jpeg-ls", 2), ("rle", 2)])
def test_jobs_give_identical_files(synthetic, tmp_path: Path, target: str, jobs: int) -> None:
    # 12-bit JPEG-LS (pyjpegls) and RLE hold the GIL: they run in worker processes.
    one = transcode(synthetic["ct"], tmp_path / "one.dcm", target, jobs=1)
    many = transcode(synthetic["ct"], tmp_path / "many.dcm", target, jobs=jobs)
    assert one.status == many.status == "written", many.message
    assert Path(one.output).read_bytes() == Path(many.output).read_bytes()


@pytest.mark.parametrize("target", ["htj2k", "rle"])
def test_frames_in_tasks_of_several_keep_their_order(tmp_path: Path, target: str) -> None:
    # 37 small frames go in tasks of 16 (threads for HTJ2K, processes for RLE): the last
    # task is short, and every frame must land in its place.
    source = write_multiframe(tmp_path / "src.dcm", frames=37, rows=40, columns=24,
                              kind="ct", syntax="explicit")
    one = transcode(source, tmp_path / "one.dcm", target, jobs=1)
    two = transcode(source, tmp_path / "two.dcm", target, jobs=2)
    assert one.status == two.status == "written", two.message
    assert Path(one.output).read_bytes() == Path(two.output).read_bytes()
    np.testing.assert_array_equal(frames_of(two.output), frames_of(source))


def test_ordered_runs_chunks_within_the_window() -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    lock, state = threading.Lock(), {"running": 0, "most": 0}

    def run(job: str, i: int) -> tuple[str, int]:
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(0.002)
        with lock:
            state["running"] -= 1
        return job, i

    with ThreadPoolExecutor(4) as pool:
        got = list(ordered(run, "j", 23, pool, window=9, chunk=4))
    assert got == [("j", i) for i in range(23)]
    assert state["most"] <= 2 * 4  # two tasks of 4 fit the window of 9, a third does not
    assert list(ordered(run, "k", 5, None, window=9, chunk=4)) == \
        [("k", i) for i in range(5)]


def test_in_flight_sizes_tasks_by_frame_bytes(synthetic) -> None:
    with dcmstream.open(synthetic["ct"], cache=False) as inst:
        plan, _ = prepare(inst, str(synthetic["ct"]), TARGETS["htj2k"], QualityOptions(ssim=False))
    big = replace(plan, native_estimate=512 * 512 * 2 * plan.count)
    assert in_flight(big, 2) == (8, 2)  # CT frames go in pairs
    huge = replace(plan, native_estimate=(4 << 20) * plan.count)
    assert in_flight(huge, 2) == (8, 1)
    assert in_flight(plan, 2) == (64, 16)  # 6 KB frames: 16 a task


@pytest.mark.parametrize("target", ["htj2k", "jpeg-ls", "explicit"])
def test_post_write_check_catches_a_changed_byte(synthetic, tmp_path: Path, target: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A byte changed on its way to the file (storage, a torn write) after the codestream
    # was checked in memory: the check of the reopened file must refuse it.
    source = synthetic["ct"]
    if target == "explicit":  # a native target needs a compressed source
        source = Path(transcode(source, tmp_path / "src.dcm", "jpeg-ls").output)
    real_close = writer.AtomicFile.close

    def close_and_flip(self) -> None:
        fh = self._fh
        real_close(self)
        if fh is not None:
            data = bytearray(self.path.read_bytes())
            data[-20] ^= 0x01  # inside the last frame (before the 8-byte delimiter if any)
            self.path.write_bytes(bytes(data))

    monkeypatch.setattr(writer.AtomicFile, "close", close_and_flip)
    result = transcode(source, tmp_path / "out.dcm", target)
    assert result.status == "failed" and f"verification failed at frame {FRAMES - 1}" in \
        result.message, result.message
    assert not (tmp_path / "out.dcm").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_digest_covers_padding_length_and_content() -> None:
    assert digest(b"abc", pad=True) == digest(b"abc\0") != digest(b"abc")
    assert digest(b"abd") != digest(b"abc") != digest(b"ab")
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert digest(frame) == digest(frame.copy()) != digest(frame.reshape(4, 3))
    assert digest(frame) != digest(frame.astype(np.int16))
    changed = frame.copy()
    changed[2, 3] ^= 1
    assert digest(changed) != digest(frame)


def test_memory_is_bounded(tmp_path: Path) -> None:
    rows = columns = 256
    frames = 200
    src = write_multiframe(tmp_path / "big.dcm", frames=frames, rows=rows, columns=columns,
                           syntax="explicit")
    transcode(src, tmp_path / "warm.dcm", "htj2k",
              options=TranscodeOptions(output=OutputOptions(eot_threshold=1 << 40)))  # imports, caches
    tracemalloc.start()
    try:
        result = transcode(src, tmp_path / "out.dcm", "jpeg-ls")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "written" and result.verified
    frame_bytes = rows * columns * 2
    size = src.stat().st_size
    assert peak < 24 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"
    assert peak < size / 8


def test_codec_mismatch_is_caught_before_anything_is_written(synthetic, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = worker.decode_codestream

    def off_by_one(data, syntax, spec):
        decoded = real(data, syntax, spec).copy()
        decoded[-1, -1] += 1  # one sample of one frame: a lossless codec that is not
        return decoded

    monkeypatch.setattr(worker, "decode_codestream", off_by_one)
    out = tmp_path / "out"
    result = transcode(synthetic["ct"], out / "ct.dcm", "htj2k")
    assert result.status == "failed"
    assert "frame 0" in result.message and "does not decode to the source" in result.message
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("target", ["htj2k", "jpeg-ls-near:2", "deflate"])
def test_per_frame_groups_are_copied_as_stored(synthetic, tmp_path: Path, target: str) -> None:
    # The source's Per-Frame Functional Groups are spliced into the output as stored (not
    # parsed and re-encoded): the output must hold them unchanged, in tag order, once, and
    # a lossy ratio patched after them must land in the right element.
    source = synthetic["ct"]
    out = tmp_path / "out.dcm"
    result = transcode(source, out, target, options=NO_SSIM)
    assert result.status == "written", result.message
    before = pydicom.dcmread(source, stop_before_pixels=True)
    after = pydicom.dcmread(out, stop_before_pixels=True)
    assert len(after.PerFrameFunctionalGroupsSequence) == FRAMES
    assert after.PerFrameFunctionalGroupsSequence == before.PerFrameFunctionalGroupsSequence
    assert list(after.keys()) == sorted(after.keys())
    if TARGETS[target.split(":")[0]].lossy:
        assert float(after.LossyImageCompressionRatio) == pytest.approx(result.ratio, abs=0.01)
    else:
        np.testing.assert_array_equal(frames_of(out), frames_of(source))


def test_raw_frame_groups_only_while_nothing_parsed_them(synthetic) -> None:
    with dcmstream.open(synthetic["ct"], cache=False) as inst:
        ds, raw = inst.dataset_and_raw_frame_groups()
        assert raw is not None and raw[:4] == b"\x00\x52\x30\x92"  # (5200,9230), little endian
        assert "PerFrameFunctionalGroupsSequence" not in ds
        assert len(inst.dataset.PerFrameFunctionalGroupsSequence) == FRAMES  # parses them now
        ds, raw = inst.dataset_and_raw_frame_groups()
        assert raw is None and "PerFrameFunctionalGroupsSequence" in ds


def test_a_frame_that_fails_its_check_is_encoded_again_alone(synthetic, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A codec that misbehaves once (as OpenJPH did under concurrency here) costs a second,
    # serialized encode of that frame, still verified - not the file; one that keeps
    # misbehaving fails the file, and nothing is written.
    source = synthetic["ct"]
    real = encoders.JpegLsEncoder.__call__
    calls = {"n": 0}

    def flaky(self, frame):
        calls["n"] += 1
        data = real(self, frame)
        return data[: len(data) // 2] if calls["n"] == 2 else data  # frame 1, first try

    monkeypatch.setattr(encoders.JpegLsEncoder, "__call__", flaky)
    result = transcode(source, tmp_path / "ok.dcm", "jpeg-ls", options=NO_SSIM)
    assert result.status == "written" and result.verified and result.retried_frames == 1
    assert "encoded again alone" in result.message
    np.testing.assert_array_equal(frames_of(tmp_path / "ok.dcm"), frames_of(source))

    monkeypatch.setattr(encoders.JpegLsEncoder, "__call__", lambda self, frame: real(self, frame)[:-40])
    result = transcode(source, tmp_path / "bad.dcm", "jpeg-ls", options=NO_SSIM)
    assert result.status == "failed" and "verification failed at frame 0" in result.message
    assert not (tmp_path / "bad.dcm").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ok.dcm"]
