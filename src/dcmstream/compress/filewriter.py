"""Writing one planned file: its header, then its frames in order as the workers finish them.

The header is encoded once (with the source's per-frame functional groups spliced in as
stored, and the lossy ratio's placeholder at a known position); Pixel Data is written frame
by frame, native or encapsulated with its offset table; the ratio is patched in at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

from pydicom.charset import default_encoding
from pydicom.dataset import Dataset

from ..errors import DcmstreamError
from . import header as hdr
from . import writer
from .executor import ordered
from .planning import FilePlan
from .results import Progress, QaFailure, TranscodeResult
from .worker import run_frame

__all__ = ["header_bytes", "write_file"]


def header_bytes(ds: Dataset, enc: writer.Encoding, lossy: bool,
                 raw_groups: bytes | None = None) -> tuple[bytes, int | None]:
    """The encoded header and, for lossy results, where the ratio placeholder is in it.

    For lossy results the Lossy Image Compression Ratio element is encoded on its own, so
    the position of the ratio's reserved text is known exactly, whatever pydicom does with
    the other elements. ``raw_groups`` (the source's Per-Frame Functional Groups element as
    stored, Explicit VR Little Endian like every output here) is spliced in at its place in
    tag order instead of re-encoding one item per frame.
    """
    ratio_tag = 0x00282112 if lossy and 0x00282112 in ds else None
    if ratio_tag is None and raw_groups is None:
        return enc.dataset(ds), None
    if raw_groups is not None and writer.PER_FRAME_GROUPS in ds:
        del ds[writer.PER_FRAME_GROUPS]  # never twice, whoever parsed it meanwhile
    # Pieces after the first have no (0008,0005) of their own: hand them the enclosing one
    # (a piece that has its own uses that).
    charset = ds.get("SpecificCharacterSet") or None
    out = bytearray()
    ratio_at: int | None = None
    piece = Dataset()

    def emit() -> None:
        nonlocal piece
        if len(piece):
            # The piece's raw elements are written as stored when its original encoding is
            # the output's (see hdr.output_dataset): the one of ``ds``, and the character set
            # the piece itself declares (pydicom's default when (0008,0005) is elsewhere;
            # its parsed text elements are encoded with ``charset`` all the same).
            implicit, little = ds.original_encoding
            piece.set_original_encoding(implicit, little, ds.original_character_set
                                        if 0x00080005 in piece else default_encoding)
            out.extend(enc.dataset(piece, charset))
        piece = Dataset()

    for elem in ds.elements():
        if raw_groups is not None and elem.tag > writer.PER_FRAME_GROUPS:
            emit()
            out.extend(raw_groups)
            raw_groups = None
        if elem.tag == ratio_tag:
            emit()
            piece[elem.tag] = elem
            middle = enc.dataset(piece, charset)
            at = middle.rfind(hdr.ratio_placeholder().encode("ascii"))
            if at < 0:  # pragma: no cover - defensive
                raise writer.WriterError("could not locate the Lossy Image Compression Ratio placeholder")
            ratio_at = len(out) + at
            out.extend(middle)
            piece = Dataset()
            continue
        piece[elem.tag] = elem
    emit()
    if raw_groups is not None:
        out.extend(raw_groups)
    return bytes(out), ratio_at


#: Raw (decoded) bytes between two :meth:`AtomicFile.write_behind` calls.
_WRITE_BEHIND = 32 << 20


def write_file(plan: FilePlan, atomic: writer.AtomicFile, offset_table: str,
               executor: Executor | None, window: int, chunk: int, progress: Progress | None,
               result: TranscodeResult) -> list[tuple[bytes, bytes]]:
    """Write the whole file into ``atomic``; returns (source, payload) digests per frame."""
    job, ds = plan.job, plan.dataset
    fh = atomic.fh
    fh.write(writer.file_meta_bytes(ds.file_meta))
    enc = writer.encoding_for(plan.target.transfer_syntax)
    header, ratio_at = header_bytes(ds, enc, plan.target.lossy or job.lossy, plan.raw_groups)
    body: Any = writer.DeflateWriter(fh) if writer.is_deflated(plan.target.transfer_syntax) else fh
    header_start = fh.tell()
    body.write(header)
    digests: list[tuple[bytes, bytes]] = []
    behind = [0]  # raw bytes done at the last write-behind
    psnrs, ssims, wpsnrs, errors = [], [], [], []

    def frames() -> Iterator[Any]:
        for out in ordered(run_frame, job, plan.count, executor, window, chunk):
            if out.failure is not None:
                raise QaFailure(f"frame {out.index}: {out.failure}")
            if out.mismatch:
                raise DcmstreamError(f"verification failed at frame {out.index}: the "
                                     "codestream does not decode to the source pixels")
            digests.append((out.source_digest, out.payload_digest))
            result.retried_frames += out.retried
            result.encodes += out.encodes
            result.source_seconds += out.source_seconds
            result.encode_seconds += out.encode_seconds
            result.decode_seconds += out.decode_seconds
            result.raw_bytes += out.raw_bytes
            if out.metrics is not None:
                psnrs.append(out.metrics.psnr)
                errors.append(out.metrics.max_error)
                if out.metrics.ssim is not None:
                    ssims.append(out.metrics.ssim)
                if out.metrics.window_psnr is not None:
                    wpsnrs.append(out.metrics.window_psnr)
            if not job.native:
                result.pixel_bytes += len(out.payload)
            written = result.raw_bytes
            if written - behind[0] >= _WRITE_BEHIND:
                behind[0] = written
                atomic.write_behind()
            if progress is not None:
                progress(1, out.raw_bytes)
            yield out.payload

    if job.native:
        spec = job.spec
        frame_bytes = spec.rows * spec.columns * spec.samples_per_pixel * (
            spec.bits_allocated // 8) if spec.bits_allocated > 1 else \
            spec.rows * spec.columns * spec.samples_per_pixel // 8
        writer.write_native(body, enc, frames(), plan.count, frame_bytes=frame_bytes,
                            bits_allocated=spec.bits_allocated, dtype=spec.dtype)
        result.pixel_bytes = frame_bytes * plan.count
    else:
        layout = writer.write_encapsulated(fh, frames(), plan.count, offset_table=offset_table)
        result.offset_table = layout.offset_table
    if isinstance(body, writer.DeflateWriter):
        body.finish()
    if ratio_at is not None:
        hdr.patch_ratio(fh, header_start + ratio_at, result.raw_bytes / max(result.pixel_bytes, 1))
    result.psnr, result.ssim, result.window_psnr = psnrs, ssims, wpsnrs
    result.max_error = max(errors) if errors else None
    return digests

