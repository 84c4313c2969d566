"""The audit trail's writer: one JSON line per access to patient data, from every front.

HIPAA-style access records must cover every path into the archive, so the DICOMweb
server (:mod:`dcmstream.web.audit`, a middleware) and the DICOM network listener
(:mod:`dcmstream.dimse.audit`) both write through :class:`AuditLog`, in one record shape
(:func:`entry`)::

    {"time": "2026-12-06T12:00:00.123456Z", "user": "alice", "role": "reader", "auth": "oidc",
     "client": "10.0.0.7", "action": "retrieve", ...what the front adds..., "status": 200,
     "outcome": "success"}

``action`` is one of search, retrieve, store, delete, commit, associate; ``outcome`` one
of :data:`OUTCOMES`. What a record never holds: pixel data, tokens or keys, patient names
or IDs (a front keeps only the *names* of query keys, never their values).

Several server processes (``--workers N``, the DIMSE listener, several hosts on a shared
volume) append to one file: it is opened with ``O_APPEND`` and each line is one
``write``, so lines never interleave. A path that cannot be opened for appending stops
the server at start (:class:`~dcmstream.config.ConfigError`), rather than losing records
silently; a write that fails later (a full disk) is logged as an error for each lost line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import ConfigError

__all__ = ["AuditLog", "entry", "timestamp", "OUTCOMES"]

log = logging.getLogger(__name__)

#: The outcomes a record may have: done; refused before anything was done (no or wrong
#: identity, no permission, calling AE title not accepted); the request was wrong; the
#: server failed; the request ended before an answer; the client cancelled it.
OUTCOMES = ("success", "denied", "failure", "error", "incomplete", "cancelled")


def timestamp() -> str:
    """Now, as an ISO 8601 UTC time with microseconds (``2026-12-06T12:00:00.123456Z``)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def entry(*, user: str | None, role: str | None, auth: str, client: str | None, action: str,
          status: int | None, outcome: str, **fields: Any) -> dict[str, Any]:
    """One audit record in the trail's shape: who (``user``, ``role``, how they were
    identified: ``auth``), from where, did what, with what result; ``fields`` (the UIDs
    touched, the front's own details) go between ``action`` and ``status``; those whose
    value is None are left out."""
    assert outcome in OUTCOMES, f"audit outcome {outcome!r} is not one of {OUTCOMES}"  # the fronts' own values
    record: dict[str, Any] = {"time": timestamp(), "user": user, "role": role, "auth": auth, "client": client,
                              "action": action}
    record.update((k, v) for k, v in fields.items() if v is not None)
    record["status"] = status
    record["outcome"] = outcome
    return record


class AuditLog:
    """An append-only JSON-lines file shared by every server process (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise ConfigError(f"[audit] path {self.path}: cannot append to it: {exc.strerror or exc}") from exc
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line (one ``write`` call on an ``O_APPEND`` descriptor)."""
        data = (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")
        try:
            with self._lock:
                written = os.write(self._fd, data)
                while written < len(data):  # a regular file writes it all at once; be sure anyway
                    written += os.write(self._fd, data[written:])
        except OSError as exc:
            log.error("audit trail %s: a record was not written: %s (%s %s)", self.path, exc.strerror or exc,
                      record.get("action"), record.get("path") or record.get("service"))

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
