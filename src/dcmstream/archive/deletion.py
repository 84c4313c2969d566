"""Deleting studies, series and instances: catalog rows and blobs, crash-safe.

The rows live in the catalog, the bytes in blob stores (tiers): two systems without a
shared transaction. A delete, in order (:func:`delete`):

1. one catalog transaction removes the instance rows in scope (and their series and study
   rows when those become empty), inserts one row per blob (its tier and key) into the
   journal table ``blob_deletions`` and moves the revision counter. Killed before the
   commit: nothing happened. After it: readers get 404 (no row), whatever the blobs;
2. the blobs are deleted, from the tier each row named;
3. the journal rows are deleted.

Killed after 1, the journal says which blobs are still owed: :func:`finish_deletions`
(run when an :class:`~.archive.Archive` opens, by every delete, and by the orphan sweep)
deletes them and then their rows; each step is idempotent, so a finish killed half-way is
completed by the next. While a key is journalled no ingest writes a new blob under it
(:func:`.ingest._put_blob` takes a fresh key), so a late finish never deletes new bytes.

Readers: a process that memoised the record finds the blob gone and the row gone, and
answers 404 (:class:`~.archive.InstanceDeletedError`); a reader holding the blob open on
local files finishes (POSIX unlink), one reading from S3 gets a clean
:class:`~dcmstream.errors.SourceError` on its next range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DcmstreamError
from .catalog import CatalogFeatureError, InstanceRecord
from .uids import validate_uid

if TYPE_CHECKING:
    from .archive import Archive

__all__ = ["DeleteResult", "DeleteHook", "delete", "finish_deletions"]

log = logging.getLogger(__name__)

#: ``hook(stage)`` called between the steps of a delete: "transaction" (inside the catalog
#: transaction, before its commit), "journalled" (committed), "blob" (after each blob
#: deleted), "blobs" (every blob deleted, journal rows still there), "done". The crash
#: tests end the process there.
DeleteHook = Callable[[str], None]

_PAGE = 500


@dataclass
class DeleteResult:
    """What a delete removed: the scope it was given and the removed instances' records."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None
    records: list[InstanceRecord] = field(default_factory=list)
    #: Blobs deleted now (journalled ones left by an earlier crash included).
    blobs_deleted: int = 0
    #: Blobs still owed (a store failed): the journal keeps them for the next finish.
    blobs_pending: int = 0

    @property
    def found(self) -> bool:
        return bool(self.records)

    def as_dict(self) -> dict[str, Any]:
        """The JSON answer of ``DELETE`` (counts and UIDs)."""
        series = sorted({r.series_uid for r in self.records})
        return {
            "StudyInstanceUID": self.study_uid,
            "deleted": {
                "instances": len(self.records),
                "series": len(series),
                "SeriesInstanceUID": series,
                "SOPInstanceUID": [r.sop_uid for r in self.records],
                "bytes": sum(r.size for r in self.records),
            },
            "blobs_pending": self.blobs_pending,
        }


def delete(
    archive: Archive,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    *,
    hook: DeleteHook | None = None,
) -> DeleteResult:
    """Delete a study, one of its series, or one instance (of ``series`` when given): rows
    and blobs on every tier (see the module). An empty :attr:`DeleteResult.records`: the
    scope matched nothing. Raises :class:`~.uids.InvalidUIDError` for a malformed UID,
    :class:`~.catalog.CatalogFeatureError` for a catalog without the journal."""
    validate_uid(study, "StudyInstanceUID")
    if series is not None:
        validate_uid(series, "SeriesInstanceUID")
    if instance is not None:
        validate_uid(instance, "SOPInstanceUID")
    before_commit = (lambda: hook("transaction")) if hook is not None else None
    records = archive.catalog.delete_instances(study, series, instance, first_tier=archive.hot_tier,
                                               before_commit=before_commit)
    result = DeleteResult(study, series, instance, records)
    if not records:
        return result
    for record in records:
        archive.forget(record.sop_uid)
    if hook is not None:
        hook("journalled")
    _tell_listeners(archive, records)
    log.info("deleted %d instance(s) of study %s%s%s", len(records), study,
             f" series {series}" if series else "", f" instance {instance}" if instance else "")
    result.blobs_deleted, result.blobs_pending = finish_deletions(archive, hook=hook)
    return result


def _tell_listeners(archive: Archive, records: list[InstanceRecord]) -> None:
    """One "deleted" event per series (the web drops that study's cached metadata)."""
    from .ingest import IngestResult

    for study, series in sorted({(r.study_uid, r.series_uid) for r in records}):
        archive.notify(IngestResult("deleted", study_uid=study, series_uid=series))


def finish_deletions(archive: Archive, *, hook: DeleteHook | None = None) -> tuple[int, int]:
    """Delete every journalled blob, then its journal row: (blobs handled, rows left).

    A row naming a tier this archive lacks, or whose store fails, stays for a later
    finish (logged). A catalog without the journal has nothing to finish.
    """
    catalog = archive.catalog
    done = left = 0
    after = 0
    while True:
        try:
            page = catalog.pending_deletions(after_id=after, limit=_PAGE)
        except CatalogFeatureError:
            return 0, 0
        if not page:
            break
        finished: list[int] = []
        for row in page:
            if row.tier not in archive.tiers:
                log.warning("delete: journalled blob %s names tier %r, which this archive lacks; left", row.blob_key, row.tier)
                left += 1
                continue
            try:
                archive.store(row.tier).delete(row.blob_key)
            except (DcmstreamError, OSError) as exc:
                log.warning("delete: blob %s (tier %s) not deleted yet (the next open or sweep will): %s",
                            row.blob_key, row.tier, exc)
                left += 1
                continue
            archive.forget(row.sop_uid)
            finished.append(row.id)
            done += 1
            if hook is not None:
                hook("blob")
        if hook is not None and finished:
            hook("blobs")
        catalog.end_deletions(finished)
        after = page[-1].id
    if hook is not None:
        hook("done")
    return done, left
