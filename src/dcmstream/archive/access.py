"""Last-access times of archived instances, batched: no catalog write per frame request.

Lifecycle rules such as "30 days without access" need to know when an instance was last
read, but a viewer scrolling a 1,000-frame study makes a thousand requests a minute: one
catalog write each would make the database the bottleneck of every read. An
:class:`AccessTracker` keeps ``sop_uid -> latest time`` in a dict (a set under a lock per
read) and a background thread writes the batch every ``interval`` seconds, or sooner when
``max_pending`` instances are waiting, with :meth:`Catalog.touch` (``last_access =
max(last_access, t)``, one UPDATE per distinct time, all in one transaction). Times are
rounded up to ``resolution`` seconds so that reads of a batch share few distinct values.

What a crash costs: at most the last ``interval`` seconds of access times of that process,
which makes an instance look a little older to the rules, never lost data. Several
processes (servers behind one address) each batch their own reads; ``max`` makes the
order of their writes irrelevant.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from .catalog import Catalog

__all__ = ["AccessTracker"]

log = logging.getLogger(__name__)


class AccessTracker:
    """Batches ``record(sop_uid)`` calls into a few :meth:`Catalog.touch` writes."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        interval: float = 30.0,
        max_pending: int = 10_000,
        resolution: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.interval = float(interval)
        self.max_pending = max(int(max_pending), 1)
        self.resolution = float(resolution)
        self.clock = clock
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._flush_lock = threading.Lock()  # one flush at a time (thread, close, callers)
        #: Catalog writes (transactions) and statements so far; what tests and metrics read.
        self.flushes = 0
        self.statements = 0

    def _quantize(self, t: float) -> float:
        if self.resolution <= 0:
            return t
        return math.ceil(t / self.resolution) * self.resolution

    def record(self, sop_uid: str, at: float | None = None) -> None:
        """Note a read of ``sop_uid`` now (or at ``at``); no I/O on the caller's thread."""
        t = self._quantize(self.clock() if at is None else at)
        with self._lock:
            if self._closed:
                return
            previous = self._pending.get(sop_uid)
            if previous is None or t > previous:
                self._pending[sop_uid] = t
            n = len(self._pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dcmstream-access", daemon=True)
                self._thread.start()
        if n >= self.max_pending:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Instances whose access time is not written yet."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write what is pending now (on the calling thread); returns instances written.

        On a catalog error the batch is kept (merged with newer reads) for the next flush.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                self.statements += self.catalog.touch(batch)
                self.flushes += 1
            except NotImplementedError:
                log.warning("%r does not store access times: not tracking them", self.catalog)
                with self._lock:
                    self._closed = True
                    self._pending.clear()
                return 0
            except Exception:
                with self._lock:
                    for sop, t in batch.items():
                        if t > self._pending.get(sop, -math.inf):
                            self._pending[sop] = t
                raise
            return len(batch)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                closed = self._closed
            if closed:
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a background thread: log, keep the batch, try again
                log.warning("access times not written yet (will retry)", exc_info=True)

    def close(self) -> None:
        """Stop the thread and write what is pending (the archive calls this when it closes)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - closing: report, do not mask the caller's own exit
            log.warning("access times of %d instances lost at close", self.pending, exc_info=True)
