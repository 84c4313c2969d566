"""The open source (and written) instances of this process, by path.

A transcode's frame workers read their frames through :func:`instance`: in a thread pool
they share the instance the caller opened and :func:`register`-ed (pinned, never evicted,
closed by its owner); a worker process opens its own once and keeps a few (LRU).
"""

from __future__ import annotations

from ..cache.lru import OpenLRU
from ..image import Instance
from ..image import open as open_instance

__all__ = ["forget", "instance", "register"]

_MAX_OPEN = 4
_INSTANCES: OpenLRU[str, Instance] = OpenLRU(_MAX_OPEN)


def instance(path: str) -> Instance:
    """The instance at ``path``: the registered one, or one opened here (without cache)."""
    return _INSTANCES.open(path, lambda: open_instance(path, cache=False))


def register(path: str, inst: Instance) -> None:
    """Share ``inst`` (opened by the caller, who closes it) until :func:`forget`."""
    _INSTANCES.pin(path)
    _INSTANCES.put(path, inst)


def forget(path: str, close: bool) -> None:
    """Drop ``path`` from the registry (closing its instance when ``close``)."""
    inst = _INSTANCES.pop(path)
    _INSTANCES.unpin(path)
    if inst is not None and close:
        inst.close()
