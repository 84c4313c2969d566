"""What a transcode reports: one :class:`TranscodeResult` per file (a row of the report),
the progress callback's type, and the error that stops a file when a lossy frame misses
its QA thresholds (:class:`~.options.QualityOptions`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DcmstreamError

__all__ = ["Progress", "QaFailure", "TranscodeResult"]

Progress = Callable[[int, int], None]  # (frames done, source bytes of those frames)


class QaFailure(DcmstreamError):
    """A lossy frame missed a quality threshold; the file is not written."""



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
    companions: list[TranscodeResult] = field(default_factory=list)  # hybrid previews

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
