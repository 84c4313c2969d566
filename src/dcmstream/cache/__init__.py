"""Memory management: byte-budgeted frame caches, their metrics (and prefetch, pools, governor)."""

from .buffers import BufferPool, BufferPoolStats
from .frame_cache import FrameCache, default_cache, nbytes_of, set_default_cache
from .governor import GovernorStats, MemoryGovernor, MemorySample, psutil_probe, tune_malloc
from .pool import DecodePool, PoolFullError, PoolStats, Priority
from .prefetch import OrderedLoad, PrefetchStats, StackPrefetcher, load_volume, volume_order
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
    "DecodePool",
    "Priority",
    "PoolFullError",
    "PoolStats",
    "StackPrefetcher",
    "PrefetchStats",
    "OrderedLoad",
    "volume_order",
    "load_volume",
    "MemoryGovernor",
    "MemorySample",
    "GovernorStats",
    "psutil_probe",
    "tune_malloc",
    "BufferPool",
    "BufferPoolStats",
]
