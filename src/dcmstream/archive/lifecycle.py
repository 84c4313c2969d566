"""Lifecycle rules: move instances between storage tiers, verified and crash-safe.

A rule moves instances from one tier to another after some days without access (last
read, or ingest when never read) or since ingest::

    [[lifecycle]]
    from = "hot"
    to = "cold"
    after_days_without_access = 30     # and/or after_days_since_ingest = 365

:func:`plan` lists what the rules would move now (a dry run); :func:`run_lifecycle` moves
it. One move, in this order:

1. a journal row (catalog table ``blob_moves``, state ``copying``) says which copy is being
   made, before any byte is written;
2. the blob is streamed from the source tier to a staging file of the target (SHA-256 on
   the way) and put in the target tier under a *new* key (exclusive put, so nothing is
   ever overwritten; :meth:`Archive.replacement_key`);
3. the new copy is read back from the target tier, streamed: its length and SHA-256 must
   equal the source's;
4. one catalog transaction sets the journal row to ``switched`` and the instance row's
   blob key and tier to the new copy, only if the journal row is still ``copying`` and the
   instance row still points at the old key (compare and swap: an instance changed
   meanwhile, e.g. by the compression policy, is left alone);
5. the old copy is deleted, then the journal row.

Killed at any moment, nothing is lost and :func:`recover` (the start of every run)
finishes or undoes what was in flight: a ``copying`` row is first marked ``abandoned`` (so
its switch can no longer happen, even if its process is still alive somewhere), then its
new copy and partial files are deleted (its staging file, created locked, goes with the
staging sweep once its writer is gone, as every killed writer's does); a ``switched`` row gets its old copy
deleted. Before step 4 readers use the old copy, after it the new one; a reader that
already opened the old copy keeps reading it on local files (POSIX unlink), and a reader in
another process whose memoised record points at a deleted copy re-reads the record.

Several lifecycle runs at once never lose data either (each switch is a compare and swap
on the journal row and the instance row), but a run's recovery makes another run's moves
in flight fail (they are retried by the next run): run one at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DcmstreamError
from .archive import Archive
from .blobstore import BlobStore, FilesystemBlobStore, StagingFile
from .catalog import BlobMove, InstanceRecord
from .s3store import S3BlobStore

__all__ = [
    "LifecycleRule",
    "LifecycleError",
    "Move",
    "LifecycleReport",
    "TierStatus",
    "load_rules",
    "rules_from_config",
    "plan",
    "iter_plan",
    "recover",
    "move_instance",
    "run_lifecycle",
    "tier_status",
]

log = logging.getLogger(__name__)

_DAY = 86400.0
_CHUNK = 8 << 20
_PAGE = 500
_GB = 1e9  # prices are per GB (10^9 bytes) and month, as cloud price lists state them

#: A per-move callback ``hook(stage, move)``, stages "begun", "staged", "copied",
#: "verified", "switched", "deleted": what the crash tests use to stop a run between steps.
MoveHook = Callable[[str, "Move"], None]


class LifecycleError(DcmstreamError, RuntimeError):
    """A rule that cannot be applied (unknown tier, bad value) or a move that failed verification."""


@dataclass(frozen=True)
class LifecycleRule:
    """Move instances from tier ``source`` to tier ``target`` once every given condition holds."""

    source: str
    target: str
    after_days_without_access: float | None = None
    after_days_since_ingest: float | None = None

    def __post_init__(self) -> None:
        if self.source == self.target:
            raise LifecycleError(f"lifecycle rule moves {self.source!r} to itself")
        if self.after_days_without_access is None and self.after_days_since_ingest is None:
            raise LifecycleError(
                f"lifecycle rule {self.source} -> {self.target}: give after_days_without_access or after_days_since_ingest"
            )
        for value in (self.after_days_without_access, self.after_days_since_ingest):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise LifecycleError(f"lifecycle rule {self.source} -> {self.target}: days must be numbers >= 0, not {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LifecycleRule:
        """A rule from a ``[[lifecycle]]`` table: ``from``, ``to``, ``after_days_*``."""
        known = {"from", "to", "after_days_without_access", "after_days_since_ingest"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LifecycleError(f"unknown lifecycle key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        for key in ("from", "to"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise LifecycleError(f"lifecycle rule: {key!r} must name a storage tier")
        return cls(
            str(data["from"]),
            str(data["to"]),
            after_days_without_access=data.get("after_days_without_access"),
            after_days_since_ingest=data.get("after_days_since_ingest"),
        )

    def conditions(self, now: float) -> dict[str, float]:
        """The catalog filter (``accessed_before``/``ingested_before``) at time ``now``."""
        out = {}
        if self.after_days_without_access is not None:
            out["accessed_before"] = now - self.after_days_without_access * _DAY
        if self.after_days_since_ingest is not None:
            out["ingested_before"] = now - self.after_days_since_ingest * _DAY
        return out

    def __str__(self) -> str:
        conds = []
        if self.after_days_without_access is not None:
            conds.append(f"{self.after_days_without_access:g} days without access")
        if self.after_days_since_ingest is not None:
            conds.append(f"{self.after_days_since_ingest:g} days since ingest")
        return f"{self.source} -> {self.target} after {' and '.join(conds)}"


def rules_from_config(entries: Iterable[Mapping[str, Any]]) -> list[LifecycleRule]:
    """Rules from the ``[[lifecycle]]`` tables of a configuration, in order."""
    return [LifecycleRule.from_dict(entry) for entry in entries]


def load_rules(path: str | os.PathLike[str]) -> list[LifecycleRule]:
    """Rules from a TOML file's ``[[lifecycle]]`` tables (other tables are ignored)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    entries = data.get("lifecycle", [])
    if not isinstance(entries, list):
        raise LifecycleError(f"{path}: 'lifecycle' must be an array of tables ([[lifecycle]])")
    return rules_from_config(entries)


@dataclass(frozen=True)
class Move:
    """One planned move: an instance (its record as planned), from tier, to tier, and the rule."""

    record: InstanceRecord
    source: str
    target: str
    rule: int

    @property
    def sop_uid(self) -> str:
        return self.record.sop_uid

    @property
    def size(self) -> int:
        return self.record.size


@dataclass
class LifecycleReport:
    """What a run did (or, dry, would do)."""

    dry_run: bool = False
    planned: int = 0
    moved: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: Journal rows of interrupted moves finished or cleaned at the start of the run.
    recovered: int = 0
    #: Moves per rule index.
    by_rule: dict[int, int] = field(default_factory=dict)
    #: The plan (dry runs only; a real run does not keep every move in memory).
    moves: list[Move] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        """Bytes moved (copied, verified and switched) per second, in MB (10^6 bytes)."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "planned": self.planned, "moved": self.moved, "bytes": self.bytes,
            "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_s, 1), "recovered": self.recovered,
            "failures": [{"sop_uid": sop, "error": msg} for sop, msg in self.failures],
        }


def check_rules(archive: Archive, rules: Sequence[LifecycleRule]) -> None:
    """Raise :class:`LifecycleError` if a rule names a tier the archive does not have."""
    for rule in rules:
        for name in (rule.source, rule.target):
            if name not in archive.tiers:
                raise LifecycleError(f"lifecycle rule {rule}: no storage tier {name!r} (tiers: {', '.join(archive.tiers)})")


def iter_plan(archive: Archive, rules: Sequence[LifecycleRule], now: float | None = None) -> Iterator[Move]:
    """The moves the rules call for at ``now``, rule by rule, each instance at most once.

    Candidates are read from the catalog a page at a time (no full scan in memory), so a
    run can consume this lazily; an instance moved by an earlier rule of the same run is
    not moved again by a later one (as in :func:`plan`).
    """
    check_rules(archive, rules)
    now = time.time() if now is None else now
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        tier = archive.tier_value(rule.source)
        after = ""
        while True:
            page = archive.catalog.tier_candidates(tier, after_sop=after, limit=_PAGE, **rule.conditions(now))
            for record in page:
                if record.sop_uid not in seen:
                    seen.add(record.sop_uid)
                    yield Move(record, rule.source, rule.target, i)
            if len(page) < _PAGE:
                break
            after = page[-1].sop_uid


def plan(archive: Archive, rules: Sequence[LifecycleRule], now: float | None = None) -> list[Move]:
    """Every move the rules call for at ``now`` (default: the current time)."""
    return list(iter_plan(archive, rules, now))


# -- one move ---------------------------------------------------------------------------------
def _copy_to_staging(source: BlobStore, key: str, staging: StagingFile) -> tuple[int, bytes]:
    """Stream a blob into a new (locked) staging file; (length, SHA-256)."""
    digest = hashlib.sha256()
    n = 0
    with staging.open_write() as fh:
        for chunk in source.iter_range(key, chunk_size=_CHUNK):
            digest.update(chunk)
            fh.write(chunk)
            n += len(chunk)
    return n, digest.digest()


def _read_back(store: BlobStore, key: str) -> tuple[int, bytes]:
    """(length, SHA-256) of a stored blob, streamed from the store (never whole in memory)."""
    digest = hashlib.sha256()
    n = 0
    for chunk in store.iter_range(key, chunk_size=_CHUNK):
        digest.update(chunk)
        n += len(chunk)
    return n, digest.digest()


def _discard_partial(store: BlobStore, key: str) -> None:
    """Delete what a killed put of ``key`` may have left in the store: the blob, unfinished
    uploads, and on local files a hidden temporary sibling (``.NAME.XXXX.tmp``, written by
    older versions) and empty folders. Its staging file is not looked for here: it was
    created locked (:meth:`.BlobStore.create_staging`), so the staging sweep removes it
    once its writer is gone (:meth:`.BlobStore.clean_staging`, run by :func:`recover`)."""
    store.delete(key)
    if isinstance(store, S3BlobStore):
        store.abort_uploads(key)
    if isinstance(store, FilesystemBlobStore):
        dest = store.objects / key
        for leftover in dest.parent.glob(f".{dest.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
        parent = dest.parent
        while parent != store.objects and store.objects in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def move_instance(archive: Archive, move: Move, *, hook: MoveHook | None = None) -> int:
    """Move one instance (copy, verify, switch, delete; see the module); returns its bytes.

    Raises :class:`LifecycleError` when verification fails or the row changed meanwhile;
    the instance then stays where it was and the new copy is removed.
    """
    record, catalog = move.record, archive.catalog
    source, target = archive.store(move.source), archive.store(move.target)
    new_key = archive.replacement_key(record)
    move_id = catalog.begin_move(record.sop_uid, move.source, record.blob_key, move.target, new_key)
    switched = False
    staging = target.create_staging(".move")  # locked: no sweep takes it while this move lives
    try:
        if hook:
            hook("begun", move)
        n, digest = _copy_to_staging(source, record.blob_key, staging)
        if n != record.size:
            raise LifecycleError(f"{record.sop_uid}: the stored blob has {n} bytes, the catalog says {record.size}")
        if hook:
            hook("staged", move)
        target.put_file(new_key, staging.path, move=True, exclusive=True)
        if hook:
            hook("copied", move)
        if _read_back(target, new_key) != (n, digest):
            raise LifecycleError(f"{record.sop_uid}: the copy in tier {move.target!r} reads back different bytes")
        if hook:
            hook("verified", move)
        if not catalog.switch_move(move_id, record.sop_uid, record.blob_key, archive.tier_value(move.target), new_key):
            raise LifecycleError(f"{record.sop_uid}: the catalog row changed during the move; left as it is")
        switched = True
    except BaseException:
        staging.discard()
        if not switched:
            _undo(archive, move_id, move.target, new_key)
        raise
    staging.discard()  # moved into the store: only the lock is left to release
    # Moved: the catalog points at the new copy. The old one goes; if that fails, the
    # journal row (``switched``) makes the next run's recovery delete it.
    archive.forget(record.sop_uid)
    if hook:
        hook("switched", move)
    try:
        source.delete(record.blob_key)
        if hook:
            hook("deleted", move)
        catalog.end_move(move_id)
    except (DcmstreamError, OSError) as exc:
        log.warning("lifecycle: old copy of %s not removed yet (the next run will): %s", record.sop_uid, exc)
    return n


def _undo(archive: Archive, move_id: int, target: str, new_key: str) -> None:
    """Remove the new copy of a failed move, if its switch can no longer happen; else leave
    the journal row for :func:`recover` (e.g. the switch committed but its reply was lost)."""
    try:
        if archive.catalog.abandon_move(move_id):
            _discard_partial(archive.store(target), new_key)
            archive.catalog.end_move(move_id)
    except Exception:  # noqa: BLE001 - the journal row stays: the next run's recovery finishes this
        log.warning("lifecycle: move %d not cleaned up now (the next run will)", move_id, exc_info=True)


def recover(archive: Archive) -> int:
    """Finish or undo every journalled move (interrupted runs); returns rows handled.

    ``copying``/``abandoned``: the switch never happened (or can no longer happen once
    marked abandoned), so the new copy and its partial files go. ``switched``: the catalog
    points at the new copy, so the old one goes. Each step is idempotent: a recovery killed
    half-way is finished by the next.
    """
    handled = 0
    for store in archive.tiers.values():  # killed moves' staging files (one sweep: the archive's)
        store.clean_staging(older_than=archive.staging_max_age)
    for mv in archive.catalog.pending_moves():
        if mv.source_tier not in archive.tiers or mv.target_tier not in archive.tiers:
            log.warning("lifecycle: journal row %d names a tier this archive lacks (%s -> %s); left", mv.id,
                        mv.source_tier, mv.target_tier)
            continue
        state = mv.state
        if state == "copying":
            state = "abandoned" if archive.catalog.abandon_move(mv.id) else _state_now(archive, mv)
        if state == "abandoned":
            _discard_partial(archive.store(mv.target_tier), mv.target_key)
        elif state == "switched":
            current = archive.catalog.get(mv.sop_uid)
            if current is not None and current.blob_key == mv.source_key:  # pragma: no cover - cannot happen (CAS)
                log.error("lifecycle: journal row %d says switched but the row points at the old copy; left", mv.id)
                continue
            archive.store(mv.source_tier).delete(mv.source_key)
            archive.forget(mv.sop_uid)
        else:
            continue  # gone meanwhile (another recovery)
        archive.catalog.end_move(mv.id)
        handled += 1
    return handled


def _state_now(archive: Archive, mv: BlobMove) -> str:
    for row in archive.catalog.pending_moves():
        if row.id == mv.id:
            return row.state
    return "gone"


def run_lifecycle(
    archive: Archive,
    rules: Sequence[LifecycleRule],
    *,
    now: float | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    hook: MoveHook | None = None,
) -> LifecycleReport:
    """Apply ``rules`` once: recover interrupted moves, then move what is eligible at ``now``.

    ``dry_run`` only plans (no writes, no recovery). ``limit`` caps the moves of this run.
    A failed move is reported (``failures``) and the run goes on.
    """
    check_rules(archive, rules)
    report = LifecycleReport(dry_run=dry_run)
    if dry_run:
        moves = plan(archive, rules, now)
        report.moves = moves[:limit] if limit is not None else moves
        report.planned = len(report.moves)
        report.bytes = sum(m.size for m in report.moves)
        return report
    report.recovered = recover(archive)
    started = time.perf_counter()
    for move in iter_plan(archive, rules, now):
        if limit is not None and report.planned >= limit:
            break
        report.planned += 1
        try:
            n = move_instance(archive, move, hook=hook)
        except (DcmstreamError, OSError) as exc:
            log.warning("lifecycle: %s %s -> %s failed: %s", move.sop_uid, move.source, move.target, exc)
            report.failures.append((move.sop_uid, str(exc)))
            continue
        report.moved += 1
        report.bytes += n
        report.by_rule[move.rule] = report.by_rule.get(move.rule, 0) + 1
    report.seconds = time.perf_counter() - started
    return report


# -- status and cost --------------------------------------------------------------------------
@dataclass(frozen=True)
class TierStatus:
    """Instances and bytes in one tier, and their estimated monthly storage cost (None: no price)."""

    name: str
    instances: int
    bytes: int
    est_monthly_cost: float | None


def tier_status(archive: Archive, prices: Mapping[str, float] | None = None, *, max_age: float = 0.0) -> list[TierStatus]:
    """Per tier, in the archive's order: instances, bytes and ``bytes / 10^9 * price``.

    ``prices`` is per GB and month by tier name (default: the archive's ``tier_prices``).
    One GROUP BY on the catalog; ``max_age`` > 0 reuses a result that recent.
    """
    prices = archive.tier_prices if prices is None else prices
    out = []
    for name, (n, size) in archive.tier_totals(max_age=max_age).items():
        price = prices.get(name)
        out.append(TierStatus(name, n, size, None if price is None else size / _GB * float(price)))
    return out
