"""Cache metrics as plain dataclasses, readable by anyone (CLI, server, tests)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .buffers import BufferPoolStats

__all__ = ["TierStats", "CacheStats", "DecodeTimer", "DECODE_BUCKETS_MS"]

#: Upper bounds (milliseconds) of the decode-time histogram buckets.
DECODE_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000)


@dataclass(frozen=True)
class TierStats:
    """One tier (encoded bytes or decoded arrays) at one moment."""

    name: str
    hits: int
    misses: int
    bytes: int
    items: int
    max_bytes: int
    evictions: int
    refused: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a FrameCache: both tiers, decode times, prefetch use, frame buffers.

    ``hits``/``misses``/``hit_rate``/``bytes``/``evictions`` are over both tiers;
    the per-tier numbers are in ``decoded`` and ``encoded``. ``max_bytes`` is the one
    budget both tiers share (``decoded.max_bytes + encoded.max_bytes``, the encoded tier
    ``encoded_share`` of it); ``buffers`` is the decode buffer pool (idle buffers are
    outside the tiers, at most ``buffers.max_bytes``).
    """

    hits: int
    misses: int
    hit_rate: float
    bytes: int
    evictions: int
    decoded: TierStats
    encoded: TierStats
    deduplicated: int  # requests that waited for a load already in flight
    decodes: int
    decode_seconds: float
    decode_histogram_ms: dict[str, int] = field(default_factory=dict)
    prefetch_issued: int = 0
    prefetch_used: int = 0
    prefetch_wasted: int = 0
    max_bytes: int = 0
    encoded_share: float = 0.0
    buffers: BufferPoolStats | None = None

    @property
    def used_fraction(self) -> float:
        """``bytes / max_bytes``: how full the cache is against its one budget."""
        return self.bytes / self.max_bytes if self.max_bytes else 0.0

    def as_dict(self) -> dict[str, object]:
        """A flat dict (for JSON, Prometheus export, benchmark tables)."""
        out: dict[str, object] = {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hit_rate, 4),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "encoded_share": self.encoded_share,
            "evictions": self.evictions,
            "deduplicated": self.deduplicated,
            "decodes": self.decodes,
            "decode_seconds": round(self.decode_seconds, 6),
            "prefetch_issued": self.prefetch_issued,
            "prefetch_used": self.prefetch_used,
            "prefetch_wasted": self.prefetch_wasted,
        }
        for tier in (self.decoded, self.encoded):
            for key in ("hits", "misses", "bytes", "items", "max_bytes", "evictions", "refused"):
                out[f"{tier.name}_{key}"] = getattr(tier, key)
        if self.buffers is not None:
            for key, value in self.buffers.as_dict().items():
                out[f"buffers_{key}"] = value
        out["decode_histogram_ms"] = dict(self.decode_histogram_ms)
        return out


class DecodeTimer:
    """Thread-safe histogram of decode durations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.seconds = 0.0
        self._buckets = [0] * (len(DECODE_BUCKETS_MS) + 1)

    def record(self, seconds: float) -> None:
        slot = bisect_left(DECODE_BUCKETS_MS, seconds * 1e3)
        with self._lock:
            self.count += 1
            self.seconds += seconds
            self._buckets[slot] += 1

    def histogram(self) -> dict[str, int]:
        labels = [f"<={b:g}" for b in DECODE_BUCKETS_MS] + [f">{DECODE_BUCKETS_MS[-1]:g}"]
        with self._lock:
            return dict(zip(labels, self._buckets, strict=True))

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.seconds = 0.0
            self._buckets = [0] * (len(DECODE_BUCKETS_MS) + 1)
