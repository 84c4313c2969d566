"""How much memory this process and the machine use: the one probe every part of dcmstream
(the cache governor, the pipeline's memory monitor, the server's ``/metrics``, the
benchmarks and the memory tests) reads, so they all measure the same thing.

* :func:`process_rss` - resident bytes of this process (optionally plus its descendants:
  the worker processes of a pool).
* :func:`system_memory_fraction` / :func:`total_memory` - the machine's memory in use and
  its size.
* :func:`peak_rss` / :func:`reset_peak_rss` - the kernel's exact high-water mark of the
  resident set (Linux ``VmHWM``), resettable, so a benchmark or a test measures a peak
  without sampling.

Bottom layer (like :mod:`dcmstream.errors`): imports nothing of dcmstream.
"""

from __future__ import annotations

import os

import psutil

__all__ = ["peak_rss", "process_rss", "reset_peak_rss", "system_memory_fraction", "total_memory"]

_PROCESS: psutil.Process | None = None


def _me() -> psutil.Process:
    # Created lazily and re-created after a fork (the pid differs in the child).
    global _PROCESS
    if _PROCESS is None or _PROCESS.pid != os.getpid():
        _PROCESS = psutil.Process(os.getpid())
    return _PROCESS


def process_rss(include_children: bool = False) -> int:
    """Resident bytes of this process (and of its descendants with ``include_children``:
    the worker processes of a pool; ones that end meanwhile are skipped)."""
    proc = _me()
    rss = int(proc.memory_info().rss)
    if include_children:
        for child in proc.children(recursive=True):
            try:
                rss += int(child.memory_info().rss)
            except psutil.Error:
                pass
    return rss


def system_memory_fraction() -> float:
    """Machine-wide memory in use, 0..1 (what memory pressure means to the governor)."""
    return float(psutil.virtual_memory().percent) / 100.0


def total_memory() -> int:
    """Physical memory of the machine in bytes."""
    return int(psutil.virtual_memory().total)


def peak_rss() -> int | None:
    """The kernel's high-water mark of this process's resident set (``VmHWM``) in bytes,
    since start or the last :func:`reset_peak_rss`; None where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS (Linux >= 4.0); False where that is
    not possible (then measure peaks by sampling :func:`process_rss`)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return peak_rss() is not None
