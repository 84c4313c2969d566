"""Memory budgets: parsing "2GB", the starting batch size, and adapting it to what items cost.

The rule for the first batch (the seeds'): ``budget x 0.7 / (item size x 3)``. The 0.7
keeps 30 % of the budget for what is not an item (encoded bytes, the sink's buffers,
allocator slack); the 3 is the number of batches alive at once in a pipeline that
overlaps I/O and compute: one being read, one being computed, one being written.

After that the batch follows the *measured* memory per item: the larger of the bytes an
item demonstrably holds (its array plus its result) and the growth of the resident set
above the run's baseline divided by the items in flight. It shrinks at once when items
turn out larger than estimated and grows back slowly (a quarter of the gap per update),
so one light item does not let a batch of heavy ones in.
"""

from __future__ import annotations

import threading

from ..units import format_bytes, parse_size

__all__ = ["parse_size", "initial_batch", "BatchSizer", "format_bytes", "HEADROOM", "STAGES"]

#: Fraction of the budget items may use.
HEADROOM = 0.7
#: Batches alive at once: reading, computing, writing.
STAGES = 3
#: Measured item bytes (array + result) are multiplied by this for fn's temporaries.
TEMPORARIES = 1.5
#: The RSS-based estimate per item is capped at this multiple of the measured bytes.
RSS_CAP = 4.0

def initial_batch(budget: int, item_bytes: int, *, max_batch: int = 1024) -> int:
    """``budget x 0.7 / (item size x 3)``, at least 1 and at most ``max_batch``."""
    item_bytes = max(1, int(item_bytes))
    return int(min(max_batch, max(1, (budget * HEADROOM) // (item_bytes * STAGES))))


class BatchSizer:
    """The current batch size, re-estimated from measured memory per item.

    ``observe_item(nbytes)`` records what one item held (array + result);
    ``observe_rss(above_baseline, in_flight)`` records the process growth with that many
    items alive. :attr:`batch` is what the pipeline admits next; the window of items
    in flight is ``STAGES x batch``.
    """

    def __init__(self, budget: int, item_bytes: int, *, max_batch: int = 1024, min_batch: int = 1) -> None:
        self.budget = int(budget)
        self.max_batch = int(max_batch)
        self.min_batch = int(min_batch)
        self.estimate = float(max(1, item_bytes))  # bytes per item
        self.initial = initial_batch(budget, item_bytes, max_batch=max_batch)
        self.batch = max(self.min_batch, self.initial)
        self.smallest = self.largest = self.batch
        self.updates = 0
        self._item_peak = 0.0
        self._lock = threading.Lock()

    @property
    def window(self) -> int:
        """Items that may be in flight at once."""
        return self.batch * STAGES

    def admissible(self, completed: int, workers: int) -> int:
        """The window, opened gradually ("slow start"): the first items are measured
        before many like them are admitted, because the first estimate knows the size
        of an item's pixels but not of what ``fn`` makes of them."""
        return min(self.window, max(2 * workers, 2 * (completed + workers)))

    def observe_item(self, nbytes: int) -> None:
        with self._lock:
            self._item_peak = max(self._item_peak, float(nbytes))

    def observe_rss(self, above_baseline: int, in_flight: int, steady: bool = True) -> None:
        """Fold the items seen since the last call and, when ``steady`` (the window is at
        least half full, so RSS is made of live items), one resident-set sample into the
        estimate; resize the batch."""
        with self._lock:
            # What an item demonstrably holds, plus half again for fn's temporaries.
            measured = self._item_peak * TEMPORARIES
            if steady and in_flight > 0 and above_baseline > 0 and measured > 0:
                # The process growth per live item also counts what no array shows
                # (allocator slack, buffers), but it includes fixed costs too (threads,
                # a sink's own buffers), so it may at most quadruple the estimate;
                # back-pressure handles the rest.
                measured = max(measured, min(above_baseline / in_flight, RSS_CAP * measured))
            if measured <= 0:
                return
            if measured > self.estimate:
                self.estimate = measured  # shrink at once
            else:
                self.estimate += (measured - self.estimate) / 4  # grow slowly
            self._item_peak = 0.0
            batch = int(min(self.max_batch, max(self.min_batch, (self.budget * HEADROOM) // (self.estimate * STAGES))))
            self.batch = batch
            self.smallest = min(self.smallest, batch)
            self.largest = max(self.largest, batch)
            self.updates += 1
