"""Compression for storage: verified lossless, QA-checked lossy, hybrid; with reports.

::

    from dcmstream.compress import CompressOptions, QualityOptions, TranscodeOptions, compress, transcode

    result = transcode("ct.dcm", "out/ct.dcm", "jpeg-ls")          # one file
    run = compress(["study/"], "out/", "htj2k-rpcl", jobs=2,        # files and folders
                   report="report.html")
    lossy = TranscodeOptions(quality=QualityOptions(min_psnr=45))   # settings: .options
    result = transcode("ct.dcm", "out/ct.dcm", "htj2k-lossy:psnr=48", options=lossy)
    run = compress(["study/"], "out/", "htj2k", options=CompressOptions(hybrid=True))

Modules: :mod:`.encoders` (targets and frame encoders), :mod:`.transcode` (one file,
frame by frame, verified, atomic) and its steps - :mod:`.planning` (header, encoder, frame
job), :mod:`.worker` (one frame: read, encode, check), :mod:`.executor` (frames in order in
thread or process pools), :mod:`.filewriter` (the file), :mod:`.verify` (the post-write
check), :mod:`.instances` (open instances shared with the workers), :mod:`.frames` (frame
reads, digests, transforms), :mod:`.results`; :mod:`.options` (the settings, grouped);
:mod:`.metrics` (PSNR, SSIM, max error, windowed PSNR), :mod:`.hybrid` (archive +
preview), :mod:`.background` (content-aware analysis), :mod:`.report` (HTML),
:mod:`.batch` (many files), :mod:`.writer` (the streaming DICOM writer, exported here for
:mod:`dcmstream.samples`, which writes through it).
"""

from .background import BackgroundEstimate, analyse_background, background_mask
from .batch import CompressRun, compress, plan_work
from .encoders import TARGETS, EncodePlan, Target, UnsupportedTarget, jpegls_encode, parse_target, unsigned_pattern
from .executor import Pools
from .frames import FrameTransform
from .header import patch_ratio, ratio_placeholder
from .hybrid import hybrid
from .metrics import FrameMetrics, frame_metrics, max_abs_error, psnr, ssim, window_psnr
from .options import (
    EOT_THRESHOLD,
    CompressOptions,
    OutputOptions,
    QaThresholds,
    QualityOptions,
    Rendition,
    TranscodeOptions,
)
from .report import render_report, write_report
from .results import QaFailure, TranscodeResult
from .transcode import transcode
from .writer import (
    AtomicFile,
    DeflateWriter,
    Encoding,
    PixelDataTooLarge,
    encoding_for,
    file_meta_bytes,
    write_encapsulated,
    write_native,
    write_sequence,
)

__all__ = [
    "EOT_THRESHOLD",
    "TARGETS",
    "BackgroundEstimate",
    "CompressOptions",
    "CompressRun",
    "EncodePlan",
    "FrameMetrics",
    "FrameTransform",
    "OutputOptions",
    "Pools",
    "QaFailure",
    "QaThresholds",
    "QualityOptions",
    "Rendition",
    "Target",
    "TranscodeOptions",
    "TranscodeResult",
    "UnsupportedTarget",
    "analyse_background",
    "background_mask",
    "compress",
    "frame_metrics",
    "hybrid",
    "max_abs_error",
    "parse_target",
    "plan_work",
    "psnr",
    "render_report",
    "ssim",
    "transcode",
    "window_psnr",
    "write_report",
    # The streaming DICOM writer and the precision-exact JPEG-LS encoder, shared with
    # dcmstream.samples (which writes its synthetic files through them).
    "AtomicFile",
    "DeflateWriter",
    "Encoding",
    "PixelDataTooLarge",
    "encoding_for",
    "file_meta_bytes",
    "jpegls_encode",
    "patch_ratio",
    "ratio_placeholder",
    "unsigned_pattern",
    "write_encapsulated",
    "write_native",
    "write_sequence",
]
