"""Memory management: byte-budgeted frame caches, their metrics (and prefetch, pools, governor)."""

from .frame_cache import FrameCache, default_cache, nbytes_of, set_default_cache
from .stats import CacheStats, TierStats
from .tier import ByteBudgetLRU, CacheBudgetError

__all__ = [
    "FrameCache",
    "CacheStats",
    "TierStats",
    "ByteBudgetLRU",
    "CacheBudgetError",
    "default_cache",
    "set_default_cache",
    "nbytes_of",
]
