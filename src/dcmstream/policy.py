"""Ingest compression policy: rules (modality / transfer syntax / size -> target) applied
by a background worker that swaps archived blobs for verified lossless transcodes.

A policy file (JSON, or TOML when it ends in ``.toml``)::

    {"rules": [
        {"target": "jpeg-ls", "modalities": ["CT", "MR"],
         "transfer_syntaxes": ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"], "min_bytes": 65536},
        {"target": "htj2k", "modalities": ["DX", "CR"]}
    ]}

The first matching rule wins. Only lossless targets are accepted unless the policy says
``"allow_lossy": true`` (and even then the worker refuses lossy targets: it replaces the
archived object, which is only done for bit-exact results).

After an instance is committed, :class:`PolicyWorker` (one background thread, bounded
queue) transcodes its blob to a staging file with :func:`dcmstream.compress.transcode`
(lossless results are decoded back and compared bit-exact before they are written), and
when the result is written and smaller swaps it in. The order makes every crash safe:

1. the new blob is put under a *new* key (``study/series/c<token>/sop.dcm``; temp file +
   fsync + rename + fsync of the directory) in the instance's storage tier (where it was
   read from: an instance a lifecycle rule moved to a cold tier is compressed there). A
   crash here leaves the old state intact plus at most an unreferenced blob, which the
   worker pins (locks, on local storage: :meth:`.BlobStore.pinned_source`) until step 2
   commits, so the next sweep removes a killed worker's at once and never a live one's;
2. its frame index is rebuilt from the stored new blob (``dcmstream.open``) and the
   catalog row (transfer syntax, blob key, size, DICOM JSON, frame index, pixel
   description) is updated in one transaction, only if the row still points to the old
   blob (compare and swap). Before the commit readers see the old state, after it the new;
3. the old blob is deleted. A crash before that leaves the new consistent state plus an
   unreferenced old blob. Readers that already opened the old blob keep reading it (POSIX
   unlink semantics).

Any failure (transcode refused/failed, index mismatch, catalog error) is logged and
counted; the archived instance is left untouched and the new blob, if any, removed.

Why this module sits at the top of the package, beside :mod:`dcmstream.web` and
:mod:`dcmstream.pipeline`, and not in :mod:`dcmstream.archive`: it joins the archive
(records, blobs, listeners) and the compressor (targets, the verified transcoder), and
those two packages must not import each other. It uses only their public API; the
server and ``dcmstream import`` (the CLI) attach a worker to an archive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .archive import Archive, BlobStore, IngestResult, InstanceRecord
from .archive.ingest import instance_record
from .compress import OutputOptions, TranscodeOptions, TranscodeResult, UnsupportedTarget, parse_target
from .compress import transcode as compress_transcode
from .errors import DcmstreamError

__all__ = ["CompressionPolicy", "CompressionRule", "PolicyError", "PolicyWorker", "load_policy"]

log = logging.getLogger(__name__)


class PolicyError(DcmstreamError, ValueError):
    """A compression policy that cannot be used (bad rule, lossy target, bad file), or a
    transcode result that cannot replace the archived object."""

_MODALITY_TAG = "00080060"


@dataclass(frozen=True)
class CompressionRule:
    """Compress instances of these modalities / transfer syntaxes, at least ``min_bytes``
    large, to ``target`` (a :mod:`dcmstream.compress` target name). ``None`` matches any."""

    target: str
    modalities: frozenset[str] | None = None
    transfer_syntaxes: frozenset[str] | None = None
    min_bytes: int = 0

    def __post_init__(self) -> None:
        parse_target(self.target)  # raises UnsupportedTarget for unknown names
        if self.modalities is not None:
            object.__setattr__(self, "modalities", frozenset(str(m).strip().upper() for m in self.modalities))
        if self.transfer_syntaxes is not None:
            object.__setattr__(self, "transfer_syntaxes", frozenset(str(t).strip() for t in self.transfer_syntaxes))
        if int(self.min_bytes) < 0:
            raise PolicyError(f"min_bytes must be >= 0, not {self.min_bytes}")

    @property
    def lossy(self) -> bool:
        return parse_target(self.target).lossy

    @property
    def target_syntax(self) -> str:
        return parse_target(self.target).transfer_syntax

    def matches(self, modality: str, transfer_syntax: str, size: int) -> bool:
        if self.modalities is not None and modality.upper() not in self.modalities:
            return False
        if self.transfer_syntaxes is not None and transfer_syntax not in self.transfer_syntaxes:
            return False
        if size < self.min_bytes:
            return False
        return transfer_syntax != self.target_syntax  # already there: nothing to do


def _attrs(obj: InstanceRecord | Mapping[str, Any]) -> tuple[str, str, int]:
    """(modality, transfer syntax, size) of an InstanceRecord or a mapping."""
    if isinstance(obj, Mapping):
        return str(obj.get("modality") or ""), str(obj.get("transfer_syntax") or ""), int(obj.get("size") or 0)
    modality = str((obj.columns or {}).get("modality") or "")
    text = obj.dataset_json
    if not modality and text:
        values = json.loads(text).get(_MODALITY_TAG, {}).get("Value") or [""]
        modality = str(values[0] or "")
    return modality, str(obj.transfer_syntax), int(obj.size)


@dataclass
class CompressionPolicy:
    """Ordered rules; :meth:`match` returns the target of the first matching one."""

    rules: list[CompressionRule] = field(default_factory=list)
    allow_lossy: bool = False

    def __post_init__(self) -> None:
        self.rules = list(self.rules)
        if not self.allow_lossy:
            lossy = [r.target for r in self.rules if r.lossy]
            if lossy:
                raise PolicyError(f"lossy targets {lossy} are not allowed in a compression policy (allow_lossy=False)")

    def match(self, instance: InstanceRecord | Mapping[str, Any]) -> str | None:
        """The target for an :class:`InstanceRecord` (with ``dataset_json`` or a
        ``modality`` column) or a mapping with ``modality``, ``transfer_syntax``, ``size``."""
        modality, syntax, size = _attrs(instance)
        for rule in self.rules:
            if rule.matches(modality, syntax, size):
                return rule.target
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionPolicy:
        rules = []
        for i, item in enumerate(data.get("rules") or []):
            if not isinstance(item, Mapping) or "target" not in item:
                raise PolicyError(f"rule {i + 1}: expected a table with a 'target'")
            unknown = set(item) - {"target", "modalities", "transfer_syntaxes", "min_bytes"}
            if unknown:
                raise PolicyError(f"rule {i + 1}: unknown keys {sorted(unknown)}")

            def as_set(value: Any) -> frozenset[str] | None:
                if value is None:
                    return None
                return frozenset([value] if isinstance(value, str) else value)

            rules.append(
                CompressionRule(
                    str(item["target"]),
                    as_set(item.get("modalities")),
                    as_set(item.get("transfer_syntaxes")),
                    int(item.get("min_bytes", 0)),
                )
            )
        return cls(rules, allow_lossy=bool(data.get("allow_lossy", False)))


def load_policy(path: str | os.PathLike[str]) -> CompressionPolicy:
    """Read a policy file: TOML when it ends in ``.toml``, JSON otherwise."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        data = json.loads(text)
    if not isinstance(data, Mapping):
        raise PolicyError(f"{path}: a compression policy is an object with 'rules'")
    try:
        return CompressionPolicy.from_dict(data)
    except UnsupportedTarget as exc:
        raise PolicyError(f"{path}: {exc}") from exc


#: A staging file is written only when the transcode wrote a result (never a copy of the input).
_NO_COPY = TranscodeOptions(output=OutputOptions(copy_kept=False))


class PolicyWorker:
    """Applies a :class:`CompressionPolicy` to newly stored instances in one background thread.

    ``start()`` attaches it to the archive's ingest listeners; stored instances are queued
    (a full queue drops them with a warning, unless ``block=True``: then ingest waits,
    which suits a bulk import). :meth:`join` waits until the queue is processed,
    :meth:`stop` drains (or not) and ends the thread. :meth:`process` runs one instance
    synchronously. ``transcode`` can be replaced (tests).
    """

    def __init__(
        self,
        archive: Archive,
        policy: CompressionPolicy,
        *,
        queue_size: int = 1024,
        block: bool = False,
        transcode: Callable[..., TranscodeResult] | None = None,
    ) -> None:
        if policy is None or not policy.rules:
            raise PolicyError("PolicyWorker needs a policy with at least one rule")
        self.archive = archive
        self.policy = policy
        self.block = block
        self._transcode = transcode if transcode is not None else compress_transcode
        # SOP Instance UIDs to process; None stops the thread
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max(int(queue_size), 1))
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self.counts = {"queued": 0, "compressed": 0, "kept": 0, "skipped": 0, "failed": 0, "dropped": 0, "bytes_saved": 0}

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> PolicyWorker:
        if self._thread is not None:
            return self
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="dcmstream-compress-policy", daemon=True)
        self._thread.start()
        self.archive.add_listener(self._on_ingest)
        self.archive.policy_worker = self
        return self

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking work; process what is queued (``drain``) or drop it; end the thread."""
        self._stopped.set()
        if self._thread is None:
            return
        if not drain:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._done()
        self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._thread = None

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued instance has been processed; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def metrics(self) -> dict[str, int]:
        with self._lock:
            return {
                "dcmstream_policy_compressed_total": self.counts["compressed"],
                "dcmstream_policy_bytes_saved_total": self.counts["bytes_saved"],
                "dcmstream_policy_failed_total": self.counts["failed"],
                "dcmstream_policy_queue_length": self._pending,
            }

    # -- queueing ---------------------------------------------------------------------------
    def _on_ingest(self, result: IngestResult) -> None:
        if result.status == "stored" and result.sop_uid and not self._stopped.is_set():
            self.submit(result.sop_uid)

    def submit(self, sop_uid: str) -> bool:
        """Queue an instance; False (and counted as dropped) when the queue is full or stopped."""
        if self._stopped.is_set():
            return False
        with self._lock:
            self._pending += 1
        try:
            self._queue.put(sop_uid, block=self.block)
        except queue.Full:
            self._done()
            self._bump("dropped")
            log.warning("compression policy queue full: %s stays as stored", sop_uid)
            return False
        self._bump("queued")
        return True

    def submit_all(self, sop_uids: Iterable[str]) -> int:
        return sum(1 for sop in sop_uids if self.submit(sop))

    def _bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending <= 0:
                self._pending = 0
                self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.process(item)
            except Exception:
                log.exception("compression policy: %s failed", item)
                self._bump("failed")
            finally:
                self._done()

    # -- one instance -----------------------------------------------------------------------
    def process(self, sop_uid: str) -> str:
        """Apply the policy to one archived instance; returns compressed/kept/skipped/failed."""
        archive = self.archive
        record = archive.catalog.get(sop_uid, with_dataset=True)
        if record is None:
            return self._outcome("skipped", sop_uid, "not in the catalog")
        target = self.policy.match(record)
        if target is None:
            return self._outcome("skipped", sop_uid, "no rule matches")
        if parse_target(target).lossy:
            return self._outcome("skipped", sop_uid, f"lossy target {target} never replaces an archived object")
        # The record's own tier: read there, and the result is written there (an instance
        # a lifecycle rule moved to a cold tier is compressed in the cold tier).
        store = archive.store_of(record)
        # Every local file of this swap is locked by this process until it is done with it
        # (so a sweep in any process removes them at once if it is killed, never before):
        # ``held`` is created locked, and the transcoder's output beside it (written by temp
        # file and rename) belongs to it; the output is then pinned itself, and the pin goes
        # with it into the store, until the catalog row points at the new blob.
        with contextlib.ExitStack() as pins:
            held = pins.enter_context(store.create_staging(".swap"))
            out = held.sibling(".dcm")  # beside the store's blobs: the put is a rename
            pins.callback(out.unlink, missing_ok=True)
            return self._swap(record, target, store, out, pins)

    def _swap(self, record: InstanceRecord, target: str, store: BlobStore, out: Path,
              pins: contextlib.ExitStack) -> str:
        """Steps 1-3 of the module for ``record``, its transcode written to ``out``; every
        lock it takes is released when ``pins`` closes (after the catalog's switch)."""
        archive, sop_uid = self.archive, record.sop_uid
        new_key: str | None = None
        committed = False
        try:
            source = store.local_path(record.blob_key)
            if source is None:
                copy = pins.enter_context(store.create_staging(".src"))
                with copy.open_write() as fh:
                    fh.writelines(archive.iter_blob(record))
                source = copy.path
            result = self._transcode(source, out, target, options=_NO_COPY)
            if result.status != "written" or not out.is_file():
                kind = "failed" if result.status == "failed" else "kept"
                return self._outcome(kind, sop_uid, f"transcode {result.status}: {result.message}")
            if result.lossy or not result.verified:
                return self._outcome("failed", sop_uid, "transcode result is not a verified lossless one")
            if out.stat().st_size >= record.size:
                return self._outcome("kept", sop_uid, "result not smaller than the stored blob")
            # 1. the new blob, under a new key in the record's tier (temp + fsync + rename),
            # pinned (locked) from before its name exists until the row switch below commits
            new_key = archive.replacement_key(record)
            source_file = store.pinned_source(out, move=True, pins=pins)
            size = store.put_file(new_key, source_file, move=True, exclusive=True)
            # 2. the frame index from the stored new blob, and the catalog row in one transaction
            new_record = self._new_record(record, store, new_key, size)
            if not archive.catalog.replace_blob(sop_uid, record.blob_key, new_record):
                return self._outcome("skipped", sop_uid, "the catalog row changed meanwhile")
            committed = True
            archive.forget(sop_uid)
            self._notify(record)
            # 3. the old blob goes last
            try:
                store.delete(record.blob_key)
            except OSError as exc:
                log.warning("compression policy: old blob %s not removed: %s", record.blob_key, exc)
            with self._lock:
                self.counts["bytes_saved"] += record.size - size
            return self._outcome("compressed", sop_uid, f"{record.size} -> {size} bytes ({target})")
        except Exception as exc:
            log.exception("compression policy: %s", sop_uid)
            return self._outcome("failed", sop_uid, f"{type(exc).__name__}: {exc}")
        finally:
            if new_key is not None and not committed:
                try:
                    store.delete(new_key)
                except Exception:  # noqa: BLE001
                    log.warning("compression policy: could not remove unused blob %s", new_key)

    def _new_record(self, record: InstanceRecord, store: BlobStore, new_key: str, size: int) -> InstanceRecord:
        """The catalog row of the new blob ``new_key`` in ``store`` (the record's tier, which
        the row keeps), its frame index built from the stored bytes."""
        from .image.instance import open as open_instance

        inst = open_instance(store.open(new_key), cache=False, strict=True, close_source=True)
        try:
            ds = inst.dataset
            if str(ds.get("SOPInstanceUID", "")) != record.sop_uid:
                raise PolicyError("the transcoded file has another SOP Instance UID")
            fresh = instance_record(ds, inst, str(inst.transfer_syntax), blob_key=new_key)
        finally:
            inst.close()
        old_frames = record.frame_index and len(record.frame_index["offsets"])
        new_frames = fresh.frame_index and len(fresh.frame_index["offsets"])
        if old_frames != new_frames:
            raise PolicyError(f"frame count changed ({old_frames} -> {new_frames})")
        return replace(fresh, blob_key=new_key, size=size, columns=record.columns, ingested_at=record.ingested_at,
                       tier=record.tier, last_access=record.last_access)

    def _notify(self, record: InstanceRecord) -> None:
        # Caches drop the old bytes; this worker's own listener ignores "replaced".
        self.archive.notify(IngestResult(
            "replaced", sop_uid=record.sop_uid, sop_class_uid=record.sop_class_uid,
            study_uid=record.study_uid, series_uid=record.series_uid,
        ))

    def _outcome(self, kind: str, sop_uid: str, message: str) -> str:
        self._bump(kind)
        level = logging.WARNING if kind == "failed" else logging.INFO
        log.log(level, "compression policy: %s %s: %s", sop_uid, kind, message)
        return kind
