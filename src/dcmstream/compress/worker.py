"""The per-frame work of a transcode: read a source frame, encode it, check it.

A :class:`FrameJob` holds everything a worker needs (picklable: frames also run in worker
processes); :func:`run_frame` does one frame and returns a :class:`FrameOut` - the payload
to write, its digests, the QA metrics and timings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..index.pixel_spec import PixelSpec
from .encoders import FrameEncoder, QualitySearch
from .frames import FrameTransform, decode_codestream, decode_raw, digest, raw_frame
from .instances import instance
from .metrics import FrameMetrics, Window, frame_metrics
from .options import QualityOptions

__all__ = ["FrameJob", "FrameOut", "run_frame"]


@dataclass(frozen=True)
class FrameJob:
    """Everything a worker needs to produce one frame (picklable)."""

    path: str
    raw: bool  # keep native YBR_FULL samples as stored
    encoder: FrameEncoder
    native: bool  # write the frame itself (explicit, deflate)
    lossy: bool
    syntax: str
    spec: PixelSpec  # of the output
    window: Window | None
    quality: QualityOptions
    transform: FrameTransform | None = None


@dataclass
class FrameOut:
    """One frame done: what to write and what was measured on the way."""

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


#: Held while a frame is encoded again after its check failed (see run_frame).
_ALONE = threading.Lock()


def _decodes_to(payload: bytes, frame: np.ndarray, job: FrameJob) -> bool:
    """Whether ``payload`` decodes, as dcmstream reads it, to exactly ``frame``."""
    try:
        decoded = decode_raw(payload, job.syntax, job.spec) if job.raw else \
            decode_codestream(payload, job.syntax, job.spec)
    except Exception:  # noqa: BLE001 - every codec raises its own types: not decodable
        return False
    return decoded.shape == frame.shape and decoded.dtype == frame.dtype and np.array_equal(decoded, frame)


def run_frame(job: FrameJob, i: int) -> FrameOut:
    """Read, encode and check one frame.

    Codestreams are decoded back right here, in the worker, with the decoder dcmstream
    reads the output with: a lossless one must equal the source frame exactly (else the
    frame is a ``mismatch``), a lossy one is measured. What is compared afterwards, in the
    written file, is then only the codestream bytes (by digest): decoding them again would
    give the same pixels. Native targets have no codestream: their frames are compared by
    digest after the file is written.
    """
    inst = instance(job.path)
    t0 = time.perf_counter()
    frame = raw_frame(inst, i) if job.raw else inst.frame(i)
    if job.transform is not None:
        frame = job.transform(frame)
    t1 = time.perf_counter()
    metrics = failure = None
    mismatch = retried = False
    encodes = 0 if job.native else 1
    if isinstance(job.encoder, QualitySearch):  # a PSNR goal: searched, decoded, measured
        found = job.encoder.search(frame, lambda data: decode_codestream(data, job.syntax, job.spec))
        payload: Any = found.payload
        encodes = found.encodes
        t2 = t1 + found.encode_seconds
        t3 = t2 + found.decode_seconds
        metrics = frame_metrics(frame, found.decoded, bits_stored=job.spec.bits_stored,
                                window=job.window, with_ssim=job.quality.ssim, psnr=found.psnr)
        failure = job.quality.failure(metrics)
    elif job.lossy:
        payload = job.encoder(frame)
        t2 = time.perf_counter()
        decoded = decode_codestream(payload, job.syntax, job.spec)
        t3 = time.perf_counter()  # decode speed without the QA metrics' time
        metrics = frame_metrics(frame, decoded, bits_stored=job.spec.bits_stored,
                                window=job.window, with_ssim=job.quality.ssim)
        failure = job.quality.failure(metrics)
    elif job.quality.verify and not job.native:
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
    return FrameOut(
        index=i, payload=payload,
        source_digest=digest(frame) if job.native and job.quality.verify else b"",
        # The digest covers the item as written: codestreams are padded to even length.
        payload_digest=b"" if job.native else digest(payload, pad=len(payload) % 2 == 1),
        metrics=metrics,
        failure=failure, source_seconds=t1 - t0, encode_seconds=t2 - t1,
        decode_seconds=t3 - t2, raw_bytes=frame.nbytes, mismatch=mismatch, retried=retried,
        encodes=encodes)

