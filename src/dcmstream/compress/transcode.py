"""Frame-by-frame transcoding with bounded memory, verification and atomic output.

:func:`transcode` turns one DICOM file into another transfer syntax:

1. open the source lazily (:func:`dcmstream.open`, no cache) and plan the target for its
   pixel layout (:mod:`.encoders`); a ratio goal is calibrated on the first, middle and
   last frames, a PSNR goal is searched frame by frame (:class:`.encoders.QualitySearch`);
2. write a temporary file next to the destination: header (pydicom), then Pixel Data frame
   by frame - each frame is decoded from the source, encoded, and (lossy) decoded back for
   the QA metrics, in a pool of ``jobs`` threads or processes with a bounded window of
   frames in flight, so memory is a few frames whatever the file size;
3. verify: every codestream is decoded back in the worker that made it, by the decoder
   dcmstream reads it with, and compared bit for bit with its source frame (lossless) or
   measured (lossy); once the file is complete it is reopened with dcmstream and every
   frame's codestream, found through the written offset table, must be the one checked
   (by length, CRC-32 and Adler-32, so frames need not be kept). Native targets (explicit,
   deflate) are decoded from the reopened file, and the same digests of their pixels must be
   those of the source frames;
4. commit (fsync, rename) - or keep the input when a compressing target did not make the
   file smaller, or refuse when a lossy frame missed its QA thresholds.

Lossy input policy (decided here, documented in the report): input whose pixels already went
through lossy compression (Lossy Image Compression "01" or a lossy transfer syntax) may be
transcoded to a lossless target - the result holds exactly the decoded lossy pixels and keeps
Lossy Image Compression "01" with its method (added from the source syntax when the source
did not record it), so it is never mistaken for an original; its SOP Instance UID stays,
since the pixels are unchanged. Lossy targets on lossy input append a new method/ratio step.
``in_place`` only ever replaces a file with a verified *lossless* result.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.charset import default_encoding
from pydicom.dataset import Dataset

from .. import __version__
from ..cache.lru import OpenLRU
from ..errors import DcmstreamError
from ..image import Instance
from ..image import open as open_instance
from ..image.frame_reader import codestream_reader
from ..index.pixel_spec import PixelSpec
from ..io.atomic import atomic_copy
from ..io.walk import iter_paths
from . import header as hdr
from . import writer
from .encoders import (
    LOSSY_SYNTAXES,
    EncodePlan,
    FrameEncoder,
    QualitySearch,
    Target,
    UnsupportedTarget,
    parse_target,
)
from .metrics import FrameMetrics, Window, frame_metrics, window_from_dataset

__all__ = [
    "EOT_THRESHOLD",
    "FrameTransform",
    "Pools",
    "iter_inputs",
    "QaThresholds",
    "TranscodeResult",
    "make_executor",
    "transcode",
]

#: Pixel Data size from which the Extended Offset Table is written instead of the Basic
#: Offset Table (whose 32-bit offsets end at 4 GiB). Compared with an upper-bound estimate
#: made before writing (the native size, plus a margin for incompressible data).
EOT_THRESHOLD = 1 << 32
_EXPANSION_MARGIN = 1.05  # lossless codecs can expand noise a little; estimate above that

Progress = Callable[[int, int], None]  # (frames done, source bytes of those frames)


class QaFailure(DcmstreamError):
    """A lossy frame missed a quality threshold; the file is not written."""


@dataclass(frozen=True)
class QaThresholds:
    """Per-frame acceptance of lossy results; ``None`` disables a check."""

    min_psnr: float | None = None
    max_error: int | None = None
    min_ssim: float | None = None

    def failure(self, metrics: FrameMetrics) -> str | None:
        if self.min_psnr is not None and metrics.psnr < self.min_psnr:
            return f"PSNR {metrics.psnr:.2f} dB < {self.min_psnr:g}"
        if self.max_error is not None and metrics.max_error > self.max_error:
            return f"max error {metrics.max_error} > {self.max_error}"
        if self.min_ssim is not None and metrics.ssim is not None and metrics.ssim < self.min_ssim:
            return f"SSIM {metrics.ssim:.4f} < {self.min_ssim:g}"
        return None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.min_psnr, self.max_error, self.min_ssim))


@dataclass
class TranscodeResult:
    """What happened to one file (one row of the report)."""

    source: str
    output: str | None
    status: str  # written | kept-input | refused | skipped | failed
    message: str = ""
    target: str = ""
    syntax_in: str = ""
    syntax_out: str = ""
    modality: str = ""
    frames: int = 0
    rows: int = 0
    columns: int = 0
    samples: int = 0
    bits_stored: int = 0
    input_bytes: int = 0  # file sizes
    output_bytes: int = 0
    raw_bytes: int = 0  # native size of all frames (what the codec saw)
    pixel_bytes: int = 0  # encoded frames, as written (without item headers)
    offset_table: str | None = None
    lossy: bool = False
    sop_instance_uid: str = ""
    source_seconds: float = 0.0  # decoding the source frames (summed over workers)
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0  # decoding the written frames back (verification / QA)
    wall_seconds: float = 0.0
    verified: bool = False
    retried_frames: int = 0  # frames whose check failed once and passed when encoded alone
    encodes: int = 0  # encoder calls, with a PSNR goal's search and a ratio's calibration
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    window_psnr: list[float] = field(default_factory=list)
    max_error: int | None = None
    companions: list["TranscodeResult"] = field(default_factory=list)  # hybrid previews

    @property
    def ratio(self) -> float | None:
        """Raw pixel bytes / encoded pixel bytes (None when nothing was encoded)."""
        return self.raw_bytes / self.pixel_bytes if self.pixel_bytes else None

    @property
    def encodes_per_frame(self) -> float | None:
        """Encoder calls per frame (1.0 for plain targets; more when a goal was searched)."""
        return self.encodes / self.frames if self.frames and self.encodes else None

    @property
    def saved_bytes(self) -> int:
        """Storage saved in the output folder (0 unless the output was written)."""
        return self.input_bytes - self.output_bytes if self.status == "written" else 0

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "companions"}
        data["ratio"] = self.ratio
        data["companions"] = [c.as_dict() for c in self.companions]
        return data


# ---------------------------------------------------------------------------------------------
# Per-process instance cache (thread pools share the caller's instance; worker processes
# open their own once)
# ---------------------------------------------------------------------------------------------

_MAX_OPEN = 4
_INSTANCES: OpenLRU[str, Instance] = OpenLRU(_MAX_OPEN)


def _instance(path: str) -> Instance:
    return _INSTANCES.open(path, lambda: open_instance(path, cache=False))


def _register(path: str, inst: Instance) -> None:
    # Pinned: the caller owns it and closes it; never evicted until _forget.
    _INSTANCES.pin(path)
    _INSTANCES.put(path, inst)


def _forget(path: str, close: bool) -> None:
    inst = _INSTANCES.pop(path)
    _INSTANCES.unpin(path)
    if inst is not None and close:
        inst.close()


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


try:  # libdeflate's checksums (20-40 GB/s); zlib's give the same values, slower
    from imagecodecs import deflate_adler32 as _adler32
    from imagecodecs import deflate_crc32 as _crc32
except ImportError:  # pragma: no cover - imagecodecs without libdeflate
    from zlib import adler32 as _adler32
    from zlib import crc32 as _crc32


def digest(frame: np.ndarray | bytes, pad: bool = False) -> bytes:
    """Length, CRC-32 and Adler-32 of a frame's samples (with shape and dtype) or of a
    codestream (``pad``: followed by one 0x00, as an odd codestream is written).

    What it guards is the step from checked bytes in memory to bytes in the written file:
    a torn or misplaced write, a wrong offset, a storage error. CRC-32 catches every error
    burst up to 32 bits, and a different codestream of the same length passes both sums
    with odds near 2**-64. A cryptographic hash would add nothing against these and cost
    ~0.1 ms per frame (SHA-256 at 1.6 GB/s, twice per frame), 4 % of a 2-job transcode."""
    if isinstance(frame, np.ndarray):
        head = f"{frame.shape}{frame.dtype.str}".encode()
        data: Any = memoryview(np.ascontiguousarray(frame)).cast("B")
    else:
        head, data = b"", frame
    crc, adler = _crc32(data, _crc32(head)), _adler32(data, _adler32(head))
    size = len(head) + len(data)
    if pad:
        crc, adler, size = _crc32(b"\0", crc), _adler32(b"\0", adler), size + 1
    return struct.pack("<QII", size, crc, adler)


def _raw_frame(inst: Instance, i: int) -> np.ndarray:
    """Frame ``i`` as stored, without the YCbCr -> RGB conversion of :meth:`Instance.frame`
    (8-bit colour only: used to keep native YBR_FULL samples exactly)."""
    return np.array(inst.reader.decode_stored(inst.encoded_frame(i), i), copy=True)


@dataclass(frozen=True)
class FrameTransform:
    """A picklable change applied to every source frame before encoding (hybrid previews:
    block-average downsampling by ``factor``; ``nearest`` for palette indices)."""

    factor: int
    nearest: bool = False

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        f = self.factor
        if f == 1:
            return frame
        rows, cols = frame.shape[0] // f * f, frame.shape[1] // f * f
        cropped = frame[:rows, :cols]
        if self.nearest:
            return np.ascontiguousarray(cropped[::f, ::f])
        shape = (rows // f, f, cols // f, f) + frame.shape[2:]
        mean = cropped.reshape(shape).mean(axis=(1, 3), dtype=np.float64)
        return np.rint(mean).astype(frame.dtype)


@dataclass(frozen=True)
class _FrameJob:
    """Everything a worker needs to produce one frame (picklable)."""

    path: str
    raw: bool  # keep native YBR_FULL samples as stored
    encoder: FrameEncoder
    native: bool  # write the frame itself (explicit, deflate)
    lossy: bool
    syntax: str
    spec: PixelSpec  # of the output
    window: Window | None
    with_ssim: bool
    qa: QaThresholds
    transform: FrameTransform | None = None
    verify: bool = True


@dataclass
class _FrameOut:
    index: int
    payload: Any  # bytes (codestream) or ndarray (native target)
    source_digest: bytes
    payload_digest: bytes
    metrics: FrameMetrics | None
    failure: str | None
    source_seconds: float
    encode_seconds: float
    decode_seconds: float
    raw_bytes: int
    mismatch: bool = False  # a lossless codestream that does not decode to the source
    retried: bool = False  # encoded again (alone) after a failed check
    encodes: int = 1  # encoder calls for this frame (a PSNR goal may take more than one)


def _decode_codestream(data: bytes, syntax: str, spec: PixelSpec) -> np.ndarray:
    """Decode one frame as dcmstream does when it reads the written file."""
    return codestream_reader(syntax, spec).decode(data)


def _decode_raw(data: bytes, syntax: str, spec: PixelSpec) -> np.ndarray:
    """Decode one frame without colour conversion (the counterpart of :func:`_raw_frame`)."""
    return codestream_reader(syntax, spec).decode_stored(data)


#: Held while a frame is encoded again after its check failed (see _run_frame).
_ALONE = threading.Lock()


def _decodes_to(payload: bytes, frame: np.ndarray, job: _FrameJob) -> bool:
    """Whether ``payload`` decodes, as dcmstream reads it, to exactly ``frame``."""
    try:
        decoded = _decode_raw(payload, job.syntax, job.spec) if job.raw else \
            _decode_codestream(payload, job.syntax, job.spec)
    except Exception:  # noqa: BLE001 - every codec raises its own types: not decodable
        return False
    return decoded.shape == frame.shape and decoded.dtype == frame.dtype and np.array_equal(decoded, frame)


def _run_frame(job: _FrameJob, i: int) -> _FrameOut:
    """Read, encode and check one frame.

    Codestreams are decoded back right here, in the worker, with the decoder dcmstream
    reads the output with: a lossless one must equal the source frame exactly (else the
    frame is a ``mismatch``), a lossy one is measured. What is compared afterwards, in the
    written file, is then only the codestream bytes (by digest): decoding them again would
    give the same pixels. Native targets have no codestream: their frames are compared by
    digest after the file is written.
    """
    inst = _instance(job.path)
    t0 = time.perf_counter()
    frame = _raw_frame(inst, i) if job.raw else inst.frame(i)
    if job.transform is not None:
        frame = job.transform(frame)
    t1 = time.perf_counter()
    metrics = failure = None
    mismatch = retried = False
    encodes = 0 if job.native else 1
    if isinstance(job.encoder, QualitySearch):  # a PSNR goal: searched, decoded, measured
        found = job.encoder.search(frame, lambda data: _decode_codestream(data, job.syntax, job.spec))
        payload: Any = found.payload
        encodes = found.encodes
        t2 = t1 + found.encode_seconds
        t3 = t2 + found.decode_seconds
        metrics = frame_metrics(frame, found.decoded, bits_stored=job.spec.bits_stored,
                                window=job.window, with_ssim=job.with_ssim, psnr=found.psnr)
        failure = job.qa.failure(metrics)
    elif job.lossy:
        payload = job.encoder(frame)
        t2 = time.perf_counter()
        decoded = _decode_codestream(payload, job.syntax, job.spec)
        t3 = time.perf_counter()  # decode speed without the QA metrics' time
        metrics = frame_metrics(frame, decoded, bits_stored=job.spec.bits_stored,
                                window=job.window, with_ssim=job.with_ssim)
        failure = job.qa.failure(metrics)
    elif job.verify and not job.native:
        payload = job.encoder(frame)
        t2 = time.perf_counter()
        mismatch = not _decodes_to(payload, frame, job)
        if mismatch:
            # Once, alone: a codec that misbehaves under concurrency gets a second chance
            # with no other codec call running; the result is verified all the same.
            with _ALONE:
                payload = job.encoder(frame)
                mismatch = not _decodes_to(payload, frame, job)
            retried = True
            encodes += 1
        t3 = time.perf_counter()
    else:
        payload = frame if job.native else job.encoder(frame)
        t2 = t3 = time.perf_counter()
    return _FrameOut(
        index=i, payload=payload,
        source_digest=digest(frame) if job.native and job.verify else b"",
        # The digest covers the item as written: codestreams are padded to even length.
        payload_digest=b"" if job.native else digest(payload, pad=len(payload) % 2 == 1),
        metrics=metrics,
        failure=failure, source_seconds=t1 - t0, encode_seconds=t2 - t1,
        decode_seconds=t3 - t2, raw_bytes=frame.nbytes, mismatch=mismatch, retried=retried,
        encodes=encodes)


def _run_chunk(run: Callable[[Any, int], Any], job: Any, start: int, stop: int) -> list[Any]:
    return [run(job, i) for i in range(start, stop)]


def _ordered(run: Callable[[Any, int], Any], job: Any, count: int,
             executor: Executor | None, window: int, chunk: int = 1) -> Iterator[Any]:
    """``run(job, i)`` for i in 0..count-1, in order, at most ``window`` in flight.

    In a pool, each task runs ``chunk`` consecutive frames: every task costs a hand-over to
    a worker and a wake-up of the consumer (futex calls, GIL hand-offs), which at ~3 ms a
    frame was a few per cent of a two-thread transcode."""
    if executor is None:
        for i in range(count):
            yield run(job, i)
        return
    chunk = max(1, min(chunk, window))
    pending: deque[Future] = deque()
    submitted = 0

    def submit() -> None:
        nonlocal submitted
        stop = min(submitted + chunk, count)
        pending.append(executor.submit(_run_chunk, run, job, submitted, stop))
        submitted = stop

    try:
        while submitted < count and len(pending) * chunk < window:
            submit()
        while pending:
            results = pending.popleft().result()
            if submitted < count:
                submit()
            yield from results
    finally:
        for future in pending:
            future.cancel()
        for future in pending:  # let running ones finish before the file goes away
            if not future.cancelled():
                try:
                    future.result()
                except BaseException:  # noqa: BLE001 - already failing
                    pass


def make_executor(jobs: int, *, processes: bool = False) -> Executor | None:
    """A pool of ``jobs`` workers (None for 1). Threads suit encoders that release the GIL
    (imagecodecs); processes those that hold it (pyjpegls for 12-bit JPEG-LS, RLE)."""
    if jobs <= 1:
        return None
    if processes:
        import multiprocessing

        # forkserver: no fork of a process whose other threads (progress bar) hold locks.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["dcmstream.compress.transcode"])
        return ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="dcmstream-compress")


class Pools:
    """Lazily created worker pools shared by many transcodes: threads for encoders that
    release the GIL (and for verification decodes), processes for those that hold it."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)
        self._threads: Executor | None = None
        self._processes: Executor | None = None
        self._lock = threading.Lock()

    def threads(self) -> Executor | None:
        with self._lock:
            if self._threads is None and self.jobs > 1:
                self._threads = make_executor(self.jobs)
            return self._threads

    def for_encoder(self, releases_gil: bool) -> Executor | None:
        if releases_gil or self.jobs <= 1:
            return self.threads()
        with self._lock:
            if self._processes is None:
                self._processes = make_executor(self.jobs, processes=True)
            return self._processes

    def close(self) -> None:
        for pool in (self._threads, self._processes):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._threads = self._processes = None

    def __enter__(self) -> "Pools":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Transcoding one file
# ---------------------------------------------------------------------------------------------


def _source_is_lossy(inst: Instance) -> bool:
    return (str(inst.header_dataset.get("LossyImageCompression", "")).strip() == "01"
            or str(inst.transfer_syntax) in LOSSY_SYNTAXES)


def _frame_photometric(inst: Instance) -> tuple[str, bool]:
    """Photometric of the frames handed to the encoder, and whether they are raw samples."""
    spec = inst.pixel_spec
    photometric = spec.photometric_interpretation
    if spec.samples_per_pixel == 1:
        return photometric, False
    if photometric in ("YBR_FULL", "YBR_FULL_422") and inst.frame_index.kind == "native" \
            and spec.bits_allocated == 8:
        return "YBR_FULL", True  # keep the stored samples: YCbCr -> RGB would round
    if photometric in ("RGB", "YBR_RCT", "YBR_ICT"):
        return "RGB", False
    if photometric in ("YBR_FULL", "YBR_FULL_422") and _source_is_lossy(inst):
        return "RGB", False  # decoded pixels of a lossy source: RGB is what there is
    raise UnsupportedTarget(f"colour frames in {photometric} ({inst.transfer_syntax.name}) "
                            "cannot be transcoded exactly")


def _calibration_frames(inst: Instance, raw: bool,
                        transform: FrameTransform | None) -> list[np.ndarray]:
    n = len(inst)
    frames = []
    for i in sorted({0, n // 2, n - 1}):
        frame = _raw_frame(inst, i) if raw else inst.frame(i)
        frames.append(transform(frame) if transform is not None else frame)
    return frames


def _header_bytes(ds: Dataset, enc: writer.Encoding, lossy: bool,
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
            piece.set_original_encoding(*ds.original_encoding, ds.original_character_set
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
                raise RuntimeError("could not locate the Lossy Image Compression Ratio placeholder")
            ratio_at = len(out) + at
            out.extend(middle)
            piece = Dataset()
            continue
        piece[elem.tag] = elem
    emit()
    if raw_groups is not None:
        out.extend(raw_groups)
    return bytes(out), ratio_at


@dataclass
class _Plan:
    """A file ready to be written: its header, its frames and how to check them."""

    job: _FrameJob
    dataset: Any  # pydicom Dataset of the output (no pixel data)
    target: Target
    count: int
    native_estimate: int  # bytes of all frames uncompressed
    raw_groups: bytes | None = None  # the source's per-frame groups as stored, copied as is


def _estimate_offset_table(plan: _Plan, eot_threshold: int) -> str:
    estimate = plan.native_estimate * _EXPANSION_MARGIN + 16 * plan.count
    return "eot" if estimate >= eot_threshold else "bot"


#: Raw (decoded) bytes between two :meth:`AtomicFile.write_behind` calls.
_WRITE_BEHIND = 32 << 20


def _in_flight(plan: _Plan, workers: int) -> tuple[int, int]:
    """(frames in flight, frames per task) for ``workers``: tasks of about 1 MiB of raw
    frames (a 512 x 512 x 16-bit frame goes in pairs: 2-3 % faster with two threads than one
    task per frame), two tasks queued per worker, never fewer than 4 frames per worker."""
    frame_bytes = max(plan.native_estimate // max(plan.count, 1), 1)
    chunk = max(1, min(_MAX_TASK_FRAMES, -(-_TASK_BYTES // frame_bytes)))
    return max(4 * workers, 2 * workers * chunk), chunk


#: Raw bytes, and most frames, one pool task transcodes (see :func:`_in_flight`).
_TASK_BYTES = 1 << 20
_MAX_TASK_FRAMES = 16


def _write(plan: _Plan, atomic: writer.AtomicFile, offset_table: str,
           executor: Executor | None, window: int, chunk: int, progress: Progress | None,
           result: TranscodeResult) -> list[tuple[bytes, bytes]]:
    """Write the whole file into ``atomic``; returns (source, payload) digests per frame."""
    job, ds = plan.job, plan.dataset
    fh = atomic.fh
    fh.write(writer.file_meta_bytes(ds.file_meta))
    enc = writer.encoding_for(plan.target.transfer_syntax)
    header, ratio_at = _header_bytes(ds, enc, plan.target.lossy or job.lossy, plan.raw_groups)
    body: Any = writer.DeflateWriter(fh) if writer.is_deflated(plan.target.transfer_syntax) else fh
    header_start = fh.tell()
    body.write(header)
    digests: list[tuple[bytes, bytes]] = []
    behind = [0]  # raw bytes done at the last write-behind
    psnrs, ssims, wpsnrs, errors = [], [], [], []

    def frames() -> Iterator[Any]:
        for out in _ordered(_run_frame, job, plan.count, executor, window, chunk):
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


#: Frames per task of the post-write check (a task per frame cost more in futures than in
#: hashing for small codestreams).
_VERIFY_CHUNK = 16


def _verify_frame(args: tuple[str, bool, bool], i: int) -> tuple[int, bytes, float]:
    """Digest of frame ``i`` of the written file: its decoded pixels for native targets,
    its codestream (as indexed: the offset table found it) for encapsulated ones."""
    path, native, raw = args
    inst = _instance(path)
    t0 = time.perf_counter()
    if native:
        value = digest(_raw_frame(inst, i) if raw else inst.frame(i))
    else:
        value = digest(inst.encoded_frame(i))
    return i, value, time.perf_counter() - t0


def _verify(path: Path, plan: _Plan, digests: list[tuple[bytes, bytes]],
            pool: Executor | None, window: int, result: TranscodeResult) -> None:
    """Reopen the written file and check every frame; raises DcmstreamError on mismatch.

    Encapsulated frames were decoded and compared with their source in the workers: here
    each frame's codestream, found through the written offset table, must be the one that
    was checked. Native frames are decoded from the file and compared with the source."""
    job = plan.job
    native = job.native
    key = str(path)
    inst = open_instance(key, cache=False)
    _register(key, inst)
    try:
        if len(inst) != plan.count:
            raise DcmstreamError(f"{path.name}: {len(inst)} frames written, {plan.count} expected")
        if str(inst.transfer_syntax) != plan.target.transfer_syntax:
            raise DcmstreamError(f"{path.name}: written with the wrong transfer syntax")
        if not job.native and inst.frame_index.kind.value not in ("bot", "eot"):
            raise DcmstreamError(f"{path.name}: no offset table found in the written file "
                                 f"({inst.frame_index.kind.value})")
        seconds = 0.0
        # Native decodes in threads of this process (``pool``: the temporary file stays
        # private to this process). Codestreams only need a read and a checksum (~35 us a
        # frame): handing them to threads cost more than it saved.
        checked = _ordered(_verify_frame, (key, native, job.raw), plan.count,
                           pool if native else None, max(window, 2 * _VERIFY_CHUNK),
                           _VERIFY_CHUNK)
        for i, value, spent in checked:
            expected = digests[i][0] if native else digests[i][1]
            if value != expected:
                what = "pixels differ from the source" if native else \
                    "codestream differs from the one checked"
                raise DcmstreamError(f"{path.name}: verification failed at frame {i}: {what}")
            seconds += spent
        if native:
            result.decode_seconds += seconds
        result.verified = True
    finally:
        _forget(key, close=True)


def _prepare(inst: Instance, source: str, target: Target, *, qa: QaThresholds,
             with_ssim: bool, transform: FrameTransform | None = None,
             edit: Callable[[Dataset], None] | None = None,
             description_extra: str = "") -> tuple[_Plan, EncodePlan]:
    """Plan the output of ``inst`` in ``target``: header, encoder, frame job."""
    spec = inst.pixel_spec
    photometric, raw = _frame_photometric(inst)
    if transform is not None and transform.factor > 1:
        spec = replace(spec, rows=spec.rows // transform.factor,
                       columns=spec.columns // transform.factor)
    if spec.samples_per_pixel > 1 and spec.photometric_interpretation != photometric:
        spec = replace(spec, photometric_interpretation=photometric, planar_configuration=0)
    encode_plan = target.plan(spec, photometric)
    if encode_plan.needs_calibration:
        encode_plan = encode_plan.calibrate(_calibration_frames(inst, raw, transform))
    source_lossy = _source_is_lossy(inst)
    # Without edits, the per-frame functional groups are copied as stored (when the source
    # allows): parsing and re-encoding them cost 0.3 s per 1,000 frames.
    source_ds, raw_groups = (inst.dataset, None) if edit is not None else inst.dataset_and_raw_frame_groups()
    ds = hdr.output_dataset(source_ds, photometric=encode_plan.photometric,
                            samples=spec.samples_per_pixel,
                            big_endian_source=str(inst.transfer_syntax) == "1.2.840.10008.1.2.2")
    if transform is not None and transform.factor > 1:
        ds.Rows, ds.Columns = spec.rows, spec.columns
    if source_lossy and not target.lossy:
        # Keep (or add) the record that these pixels went through lossy compression.
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and str(inst.transfer_syntax) in LOSSY_SYNTAXES:
            ds.LossyImageCompressionMethod = LOSSY_SYNTAXES[str(inst.transfer_syntax)]
    if target.lossy:
        sop_class = str(source_ds.get("SOPClassUID", ""))
        sop_instance = str(source_ds.get("SOPInstanceUID", ""))
        description = (f"Lossy compression {target.label} ({target.method}) by dcmstream "
                       f"{__version__}{description_extra}")
        hdr.append_lossy_derivation(ds, method=target.method or "", description=description,
                                    source_lossy=source_lossy, source_sop_class=sop_class,
                                    source_sop_instance=sop_instance)
    if edit is not None:
        edit(ds)
    ds.file_meta = hdr.new_file_meta(ds, target.transfer_syntax,
                                     getattr(source_ds, "file_meta", None))
    window = window_from_dataset(source_ds) if spec.samples_per_pixel == 1 and \
        spec.photometric_interpretation.startswith("MONOCHROME") else None
    job = _FrameJob(path=source, raw=raw, encoder=encode_plan.encoder, native=target.native,
                    lossy=target.lossy, syntax=target.transfer_syntax, spec=encode_plan.spec,
                    window=window, with_ssim=with_ssim, qa=qa, transform=transform)
    count = len(inst)
    native_estimate = encode_plan.spec.pixels_per_frame * max(
        encode_plan.spec.bits_allocated // 8, 1) * count
    return _Plan(job, ds, target, count, native_estimate, raw_groups), encode_plan


def _fill_identity(result: TranscodeResult, inst: Instance | None, target: Target) -> None:
    result.target = target.label
    result.syntax_out = target.transfer_syntax
    if inst is None:
        return
    result.syntax_in = str(inst.transfer_syntax)
    result.modality = str(inst.header_dataset.get("Modality", "") or "")
    result.sop_instance_uid = str(inst.header_dataset.get("SOPInstanceUID", "") or "")
    if inst.has_pixels:
        spec = inst.pixel_spec
        result.frames = len(inst)
        result.rows, result.columns = spec.rows, spec.columns
        result.samples, result.bits_stored = spec.samples_per_pixel, spec.bits_stored


def copy_atomically(source: Path, destination: Path) -> None:
    """Copy ``source`` to ``destination`` through a temporary file (streamed)."""
    atomic_copy(source, destination)


def transcode(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None,
    target: str | Target,
    *,
    min_psnr: float | None = None,
    max_error: int | None = None,
    min_ssim: float | None = None,
    jobs: int = 1,
    executor: Executor | Pools | None = None,
    in_place: bool = False,
    eot_threshold: int = EOT_THRESHOLD,
    verify: bool = True,
    ssim: bool = True,
    copy_kept: bool = True,
    progress: Progress | None = None,
    transform: FrameTransform | None = None,
    edit: Callable[[Dataset], None] | None = None,
    description: str = "",
) -> TranscodeResult:
    """Transcode one DICOM file to ``target`` (a name like ``"jpeg-ls"``, see
    :func:`~dcmstream.compress.encoders.parse_target`) and return what happened.

    ``destination`` is the output path; with ``in_place=True`` it must be None or the
    source, and the source is replaced only by a verified lossless result. Lossless results
    are always decoded back and compared bit-exact before they are committed
    (``verify=False`` skips that, for benchmarks only); a result that is not smaller than
    the source is dropped and the source kept (copied to ``destination`` when
    ``copy_kept``). Lossy results are checked per frame against ``min_psnr`` (dB over the
    Bits Stored range), ``max_error`` and ``min_ssim``: one failing frame and nothing is
    written (status "refused"). ``jobs`` > 1 encodes frames in a pool: threads, or
    processes for encoders that hold the GIL; pass ``executor`` (an Executor, or
    :class:`Pools` to share them across files) to reuse workers. ``eot_threshold`` is the estimated Pixel Data size from which the
    Extended Offset Table is used. Never raises for a bad input file: the result says
    "failed" with the reason.

    ``transform`` (a picklable frame function, e.g. :class:`FrameTransform` downsampling),
    ``edit`` (changes the output header) and ``description`` (appended to the Derivation
    Description) serve derived renditions such as the hybrid preview.
    """
    started = time.perf_counter()
    src = Path(source)
    result = TranscodeResult(source=str(src), output=None, status="failed")
    try:
        target = parse_target(target) if isinstance(target, str) else target
    except UnsupportedTarget as exc:
        result.message = str(exc)
        return result
    result.target = target.label
    if in_place:
        if destination is not None and Path(destination).resolve() != src.resolve():
            raise ValueError("in_place=True writes over the source; pass destination=None")
        if target.lossy:
            result.status = "refused"
            result.message = "in-place replacement with a lossy result is never done"
            return result
        dest = src
    else:
        if destination is None:
            raise ValueError("destination is required unless in_place=True")
        dest = Path(destination)
        if dest.resolve() == src.resolve():
            result.status = "refused"
            result.message = "destination is the source: use in_place to replace it"
            return result
    try:
        result.input_bytes = src.stat().st_size
        inst = open_instance(src, cache=False)
    except (OSError, DcmstreamError) as exc:
        result.message = f"{type(exc).__name__}: {exc}"
        return result
    key = str(src.resolve())
    own_pools: Pools | None = None
    try:
        _fill_identity(result, inst, target)
        if not inst.has_pixels:
            result.status, result.message = "skipped", "no pixel data"
            return result
        if str(inst.transfer_syntax) == target.transfer_syntax and not target.lossy \
                and transform is None:
            result.status, result.message = "kept-input", "already in the target syntax"
            _keep(result, src, dest, in_place, copy_kept)
            return result
        qa = QaThresholds(min_psnr, max_error, min_ssim)
        try:
            plan, encode_plan = _prepare(inst, key, target, qa=qa, with_ssim=ssim,
                                         transform=transform, edit=edit,
                                         description_extra=description)
        except UnsupportedTarget as exc:
            result.status, result.message = "kept-input", f"{exc}; input kept"
            _keep(result, src, dest, in_place, copy_kept)
            return result
        plan.job = replace(plan.job, verify=verify)
        result.lossy = target.lossy
        result.encodes = encode_plan.calibration_encodes
        result.sop_instance_uid = str(plan.dataset.SOPInstanceUID)
        _register(key, inst)
        if executor is None and jobs > 1:
            own_pools = executor = Pools(jobs)
        if isinstance(executor, Pools):
            encode_pool = executor.for_encoder(encode_plan.encoder.releases_gil)
            verify_pool = executor.threads()
            jobs = max(jobs, executor.jobs)
        else:
            encode_pool = executor
            verify_pool = executor if isinstance(executor, ThreadPoolExecutor) else None
        window, chunk = _in_flight(plan, max(jobs, getattr(encode_pool, "_max_workers", 1) or 1))
        offset_table = _estimate_offset_table(plan, eot_threshold)
        dest.parent.mkdir(parents=True, exist_ok=True)
        while True:
            attempt = replace(result, raw_bytes=0, pixel_bytes=0, source_seconds=0.0,
                              encode_seconds=0.0, decode_seconds=0.0)
            with writer.AtomicFile(dest) as atomic:
                try:
                    digests = _write(plan, atomic, offset_table, encode_pool, window, chunk,
                                     progress, attempt)
                except writer.PixelDataTooLarge:
                    if offset_table == "eot" or target.native:
                        raise
                    offset_table = "eot"  # the estimate was wrong: start again with EOT
                    continue
                except QaFailure as exc:
                    result.status, result.message = "refused", f"QA failed at {exc}"
                    result.psnr, result.ssim = attempt.psnr, attempt.ssim
                    return result
                atomic.close()
                result = attempt
                if verify:
                    _verify(atomic.path, plan, digests, verify_pool, window, result)
                result.output_bytes = atomic.path.stat().st_size
                if writer.is_deflated(target.transfer_syntax):
                    result.pixel_bytes = result.output_bytes  # header and pixels deflate together
                if target.compresses and transform is None \
                        and result.output_bytes >= result.input_bytes:
                    result.status = "kept-input"
                    result.message = (f"result ({result.output_bytes} bytes) not smaller than "
                                      f"the input ({result.input_bytes} bytes); input kept")
                    result.output_bytes = 0
                    atomic.discard()
                    _keep(result, src, dest, in_place, copy_kept)
                    return result
                # Release our handle on the source before it is replaced in place.
                _forget(key, close=False)
                atomic.commit()
            break
        result.status = "written"
        result.output = str(dest)
        if target.lossy:
            result.message = (f"lossy ratio {result.ratio:.1f}, PSNR min "
                              f"{min(result.psnr, default=float('inf')):.1f} dB")
        if result.retried_frames:
            result.message = "; ".join(filter(None, [result.message, (
                f"{result.retried_frames} frame(s) failed the check once and passed when "
                "encoded again alone")]))
        return result
    except (DcmstreamError, ValueError, RuntimeError, OSError, MemoryError, TypeError) as exc:
        result.status = "failed"
        result.message = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        _forget(key, close=False)
        inst.close()
        if own_pools is not None:
            own_pools.close()
        result.wall_seconds = time.perf_counter() - started


def _keep(result: TranscodeResult, src: Path, dest: Path, in_place: bool, copy_kept: bool) -> None:
    """The input is the best version: leave it (in place) or copy it to the destination."""
    if in_place or not copy_kept:
        result.output = str(src)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    copy_atomically(src, dest)
    result.output = str(dest)
    result.output_bytes = dest.stat().st_size


def iter_inputs(inputs: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input root) for files and folders (recursive, sorted);
    hidden files (our temporaries among them) are skipped."""
    return iter_paths(inputs, missing_ok=False)
