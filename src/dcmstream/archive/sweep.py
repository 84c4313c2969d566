"""The sweep: remove what killed writers left in an archive, safely while others write.

A process killed mid-write (``kill -9``, a power cut) leaves, by design, nothing half in
the catalog, but it may leave:

- staging files (a STOW-RS body being spooled, a put in progress): removed when no live
  process holds them locked (:meth:`.BlobStore.clean_staging`);
- blobs without a catalog row (killed between the put and the catalog add): removed when no
  live writer pins them, or by age where nothing can pin (:func:`.ingest.sweep_orphans`);
- blobs a delete still owes (killed after its catalog commit): deleted by the journal
  (:func:`.deletion.finish_deletions`).

:func:`sweep` does all three (and, asked to, lists catalog rows whose blob is missing: a
report only, a row is never deleted automatically). Every step decides under a lock or
from the catalog read anew, so it may run while other processes (servers on this host or
others) ingest into the same archive: ``dcmstream serve`` runs a :class:`Sweeper` at start
(in the background: readiness is not delayed) and every ``sweep_interval_seconds``;
``dcmstream sweep`` runs it by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import CatalogFeatureError
from .deletion import finish_deletions
from .ingest import sweep_orphans

if TYPE_CHECKING:
    from .archive import Archive

__all__ = ["SweepResult", "sweep", "missing_blobs", "Sweeper"]

log = logging.getLogger(__name__)

_PAGE = 500


@dataclass
class SweepResult:
    """What one sweep removed (``dry_run``: would remove) and found."""

    dry_run: bool = False
    #: Staging files of killed writers.
    staging: list[Path] = field(default_factory=list)
    #: Keys of blobs no catalog row points at.
    orphans: list[str] = field(default_factory=list)
    #: Journalled blob deletions finished (dry run: pending) and left for later.
    deletions: int = 0
    deletions_left: int = 0
    #: SOP Instance UIDs of catalog rows whose blob is missing (checked only when asked).
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        done = "pending" if self.dry_run else "finished"
        text = (f"{verb} {len(self.staging)} staging file(s) and {len(self.orphans)} orphan blob(s); "
                f"{self.deletions} journalled deletion(s) {done}")
        if self.deletions_left:
            text += f", {self.deletions_left} left for later"
        return text + f" ({self.seconds:.2f} s)"


def sweep(archive: Archive, *, older_than: float | None = None, dry_run: bool = False,
          check_rows: bool = False) -> SweepResult:
    """Sweep ``archive`` (see the module). ``older_than`` (default: the archive's
    ``staging_max_age``) is the age after which what no lock protects counts as left over:
    staging files of writers that do not lock (none of this package's: they all stage in
    files created locked), unreferenced blobs in object storage. ``check_rows`` also lists rows whose blob is missing."""
    started = time.monotonic()
    age = archive.staging_max_age if older_than is None else older_than
    result = SweepResult(dry_run=dry_run)
    seen: set[Path] = set()
    for store in archive.tiers.values():
        folder = store.staging_path().parent
        if folder in seen:
            continue
        seen.add(folder)
        result.staging += store.staging_leftovers(age, delete=not dry_run)
    if dry_run:
        result.deletions = _pending_deletions(archive)
    else:
        result.deletions, result.deletions_left = finish_deletions(archive)
    result.orphans = sweep_orphans(archive, older_than=age, dry_run=dry_run)
    if check_rows:
        result.missing = missing_blobs(archive)
    result.seconds = time.monotonic() - started
    return result


def _pending_deletions(archive: Archive) -> int:
    try:
        return len(archive.catalog.pending_deletions())
    except CatalogFeatureError:
        return 0


def missing_blobs(archive: Archive) -> list[str]:
    """SOP Instance UIDs of catalog rows whose blob is not in their tier (a store that lost
    files, a restore from backup that missed some). A row changed or removed meanwhile (a
    compression swap, a move, a delete in another process) is not reported. One page of
    rows at a time; a catalog without tiers (no paging by tier) reports nothing."""
    missing: list[str] = []
    for name, store in archive.tiers.items():
        value = archive.tier_value(name)
        after = ""
        while True:
            try:
                page = archive.catalog.tier_candidates(value, after_sop=after, limit=_PAGE)
            except CatalogFeatureError:
                return missing
            if not page:
                break
            for record in page:
                if store.exists(record.blob_key):
                    continue
                fresh = archive.catalog.get(record.sop_uid)
                if fresh is not None and (fresh.blob_key, fresh.tier) == (record.blob_key, record.tier):
                    missing.append(record.sop_uid)
            after = page[-1].sop_uid
    return missing


class Sweeper:
    """Runs :func:`sweep` in a daemon thread: once at start, then every ``interval``
    seconds (0: only at start). Each run is logged (a warning when it removed something:
    a writer was killed) and counted; :meth:`metrics` gives the counters ``/metrics`` shows."""

    def __init__(self, archive: Archive, interval: float = 3600.0) -> None:
        self.archive = archive
        self.interval = interval
        self.runs = 0
        self.errors = 0
        self.staging_removed = archive.staging_swept_at_open  # the open's sweep, just before
        self.orphans_removed = 0
        self.deletions_finished = 0
        self.last_run = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        self.archive.sweeper = self
        self._thread = threading.Thread(target=self._loop, name="dcmstream-sweep", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        self.run_once()
        while self.interval > 0 and not self._stop.wait(self.interval):
            self.run_once()

    def run_once(self) -> SweepResult | None:
        """One sweep; its result (None when it failed: logged, counted, retried next time)."""
        try:
            result = sweep(self.archive)
        except Exception:  # noqa: BLE001 - a failed sweep must not end the thread; the next one retries
            log.exception("sweep of %s failed", self.archive.root)
            with self._lock:
                self.errors += 1
                self.runs += 1
                self.last_run = time.time()
            return None
        with self._lock:
            self.runs += 1
            self.staging_removed += len(result.staging)
            self.orphans_removed += len(result.orphans)
            self.deletions_finished += result.deletions
            self.last_run = time.time()
        if result.staging or result.orphans or result.deletions:
            log.warning("sweep of %s: %s, left by interrupted writes", self.archive.root, result.summary())
        else:
            log.info("sweep of %s: %s", self.archive.root, result.summary())
        return result

    def metrics(self) -> dict[str, int]:
        with self._lock:
            return {
                "dcmstream_sweep_runs_total": self.runs,
                "dcmstream_sweep_errors_total": self.errors,
                "dcmstream_sweep_staging_files_removed_total": self.staging_removed,
                "dcmstream_sweep_orphan_blobs_removed_total": self.orphans_removed,
                "dcmstream_sweep_deletions_finished_total": self.deletions_finished,
                "dcmstream_sweep_last_run_timestamp_seconds": int(self.last_run),
            }
