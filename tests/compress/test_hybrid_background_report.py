"""Hybrid archive + preview, the background analysis and the HTML report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dcmstream.compress import analyse_background, background_mask, hybrid, render_report
from dcmstream.compress.batch import compress
from dcmstream.compress.options import CompressOptions
from dcmstream.samples import synthetic_frames, write_multiframe

from .conftest import frames_of


def test_hybrid_links_archive_and_preview(tmp_path: Path) -> None:
    src = write_multiframe(tmp_path / "ct.dcm", frames=3, rows=256, columns=192,
                           syntax="explicit")
    result = hybrid(src, tmp_path / "out" / "ct.dcm", tmp_path / "out" / "ct.preview.dcm",
                    max_size=64)
    assert result.status == "written" and result.verified
    np.testing.assert_array_equal(frames_of(result.output), frames_of(src))
    (preview,) = result.companions
    assert preview.status == "written", preview.message
    archive = pydicom.dcmread(result.output, stop_before_pixels=True)
    small = pydicom.dcmread(preview.output)
    assert (small.Rows, small.Columns) == (64, 48)  # factor 4
    assert small.pixel_array.shape == (3, 64, 48)
    assert small.SOPInstanceUID != archive.SOPInstanceUID
    assert small.SeriesInstanceUID != archive.SeriesInstanceUID
    assert small.StudyInstanceUID == archive.StudyInstanceUID
    assert small.SeriesDescription.endswith("(preview)")
    link = small.SourceImageSequence[-1]
    assert link.ReferencedSOPInstanceUID == archive.SOPInstanceUID
    assert link.ReferencedSOPClassUID == archive.SOPClassUID
    assert link.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert small.LossyImageCompression == "01"
    assert small.DerivationCodeSequence[-1].CodeValue == "113040"
    spacing = archive.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    small_spacing = small.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in small_spacing] == pytest.approx([4 * float(v) for v in spacing])
    # The preview looks like the block-averaged source.
    reference = frames_of(src)[:, :256, :192].reshape(3, 64, 4, 48, 4).mean(axis=(2, 4))
    error = small.pixel_array.astype(float) - reference
    assert np.sqrt(np.mean(error**2)) < 4095 / 10 ** (44 / 20)  # the 45 dB goal
    # Ultrasound (8-bit RGB) previews are baseline JPEG.
    us = write_multiframe(tmp_path / "us.dcm", frames=2, kind="us", rows=128, columns=160)
    result = hybrid(us, tmp_path / "out" / "us.dcm", tmp_path / "out" / "us.preview.dcm",
                    max_size=80)
    small = pydicom.dcmread(result.companions[0].output, stop_before_pixels=True)
    assert small.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert (small.Rows, small.Columns, small.PhotometricInterpretation) == (64, 80, "YBR_FULL_422")


def test_background_mask_finds_the_ultrasound_sector() -> None:
    frame = synthetic_frames("us", rows=128, columns=160)(3)
    mask = background_mask(frame, ultrasound=True)
    assert mask[0, 0] and mask[-1, 0] and mask[-1, -1]  # corners outside the fan
    assert not mask[64, 80]  # the middle of the sector
    assert 0.3 < mask.mean() < 0.8
    ct = synthetic_frames("ct", rows=128, columns=128)(0)
    ct_mask = background_mask(ct)
    assert ct_mask[0, 0] and not ct_mask[64, 64]
    assert not ct_mask[64, 30]  # inside the body, lung air is not background


def test_background_analysis_reports_savings(tmp_path: Path, testfile) -> None:
    estimate = analyse_background(testfile("MR2_UNCR.dcm"))  # noisy air around a head
    assert 0.2 < estimate.background_fraction < 0.8
    assert estimate.max_body_error == 0
    assert estimate.background_near_bytes < estimate.lossless_bytes
    assert 0 < estimate.saving < 0.6
    assert analyse_background(testfile("OBXXXX1A.dcm")) is None  # palette: not analysed


def test_report(tmp_path: Path, synthetic) -> None:
    run = compress([synthetic["ct"], synthetic["us"]], tmp_path / "out",
                   "htj2k-lossy:ratio=10", report=tmp_path / "report.html",
                   options=CompressOptions(background=True))
    text = (tmp_path / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    assert text.count("<svg") >= 3  # ratio, speed, PSNR/SSIM histograms
    assert "PSNR per lossy frame" in text and "SSIM per lossy frame" in text
    assert "saved" in text and "%" in text
    assert "Background" in text
    for r in run.results:
        assert Path(r.source).name in text
    html = render_report(run.results)
    assert "ct.dcm" in html
