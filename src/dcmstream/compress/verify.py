"""The post-write check: the written file, reopened with dcmstream, holds what was checked."""

from __future__ import annotations

import time
from concurrent.futures import Executor
from pathlib import Path

from ..errors import DcmstreamError
from ..image import open as open_instance
from .executor import ordered
from .frames import digest, raw_frame
from .instances import forget, instance, register
from .planning import FilePlan
from .results import TranscodeResult

__all__ = ["verify_file", "verify_frame"]


#: Frames per task of the post-write check (a task per frame cost more in futures than in
#: hashing for small codestreams).
_VERIFY_CHUNK = 16


def verify_frame(args: tuple[str, bool, bool], i: int) -> tuple[int, bytes, float]:
    """Digest of frame ``i`` of the written file: its decoded pixels for native targets,
    its codestream (as indexed: the offset table found it) for encapsulated ones."""
    path, native, raw = args
    inst = instance(path)
    t0 = time.perf_counter()
    if native:
        value = digest(raw_frame(inst, i) if raw else inst.frame(i))
    else:
        value = digest(inst.encoded_frame(i))
    return i, value, time.perf_counter() - t0


def verify_file(path: Path, plan: FilePlan, digests: list[tuple[bytes, bytes]],
                pool: Executor | None, window: int, result: TranscodeResult) -> None:
    """Reopen the written file and check every frame; raises DcmstreamError on mismatch.

    Encapsulated frames were decoded and compared with their source in the workers: here
    each frame's codestream, found through the written offset table, must be the one that
    was checked. Native frames are decoded from the file and compared with the source."""
    job = plan.job
    native = job.native
    key = str(path)
    inst = open_instance(key, cache=False)
    register(key, inst)
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
        checked = ordered(verify_frame, (key, native, job.raw), plan.count,
                          pool if native else None, max(window, 2 * _VERIFY_CHUNK), _VERIFY_CHUNK)
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
        forget(key, close=True)

