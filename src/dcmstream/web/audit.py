"""The audit trail: one JSON line per request that touches patient data.

Every request under the DICOMweb root except the root itself (QIDO searches, WADO
retrievals of instances, metadata, frames, rendered images and thumbnails, STOW stores,
deletes) is recorded when it ends, refused ones included (401/403 are "denied")::

    {"time": "2026-12-06T12:00:00.123456Z", "user": "alice", "role": "reader", "auth": "oidc",
     "client": "10.0.0.7", "action": "retrieve", "method": "GET",
     "path": "/dicomweb/studies/1.2/series/1.3/instances/1.4/frames/1", "query": ["quality"],
     "study": "1.2", "series": "1.3", "instance": "1.4", "resource": "frames",
     "status": 200, "outcome": "success"}

What it never holds: pixel data, tokens or keys, and patient names or IDs: query strings
may carry them (``PatientName=DOE^JOHN``), so only the parameter *names* are kept, and a
path segment that is neither a keyword nor a UID nor a frame list is written as
``"-"``. A STOW adds the UIDs it stored (``instances``, ``studies``) through :func:`note`.

The lines are written by :class:`dcmstream.audit.AuditLog` (one ``O_APPEND`` write each,
shared by every server process and by the DIMSE listener, whose records have the same
shape: :func:`dcmstream.audit.entry`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from ..audit import AuditLog, entry
from .auth import ANONYMOUS, IDENTITY_KEY, Identity

__all__ = ["AuditLog", "AuditMiddleware", "note", "AUDIT_KEY"]

#: The ASGI scope key of the record being built for a request (handlers add to it via :func:`note`).
AUDIT_KEY = "dcmstream.audit"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_FRAMES = re.compile(r"^[0-9]+(,[0-9]+)*$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_LEVELS = {"studies": "study", "series": "series", "instances": "instance"}
_RESOURCES = frozenset({"metadata", "frames", "rendered", "thumbnail", "bulkdata"})
_MAX_PARAMS = 50


def note(request: Request, *, studies: Iterable[str] = (), series: Iterable[str] = (),
         instances: Iterable[str] = ()) -> None:
    """Add UIDs a handler touched beyond those in its path (a STOW's stored instances)
    to the request's audit record; nothing happens without an audit trail."""
    record = request.scope.get(AUDIT_KEY)
    if record is None:
        return
    for key, values in (("studies", studies), ("series_list", series), ("instances", instances)):
        kept = [v for v in values if v and _UID.match(v)]
        if kept:
            have = record.setdefault(key, [])
            have.extend(v for v in kept if v not in have)


def describe(method: str, path: str, root: str) -> dict[str, Any] | None:
    """The audit fields a request's method and path give (None: it touches no patient data)."""
    if not path.startswith(root + "/"):
        return None
    segments = path[len(root) + 1:].split("/")
    clean: list[str] = []
    fields: dict[str, Any] = {}
    search = False
    i = 0
    while i < len(segments):
        segment = segments[i]
        if segment in _LEVELS:
            clean.append(segment)
            following = segments[i + 1] if i + 1 < len(segments) else None
            if following is None or following == "":
                search = True
            elif _UID.match(following) and len(following) <= 64:
                fields[_LEVELS[segment]] = following
                clean.append(following)
                i += 1
        elif segment in _RESOURCES:
            clean.append(segment)
            fields.setdefault("resource", segment)
        elif _FRAMES.match(segment) or _TAG.match(segment) or segment == "":
            clean.append(segment)
        else:
            clean.append("-")  # not ours to keep: it could be anything a client typed
        i += 1
    if method == "POST":
        action = "store"
    elif method == "DELETE":
        action = "delete"
    elif search and method in ("GET", "HEAD"):
        action = "search"
    elif method in ("GET", "HEAD"):
        action = "retrieve"
    else:
        action = method.lower() if method.isalpha() and len(method) <= 10 else "other"
    return {"action": action, "path": root + "/" + "/".join(clean), **fields}


def _param_names(query_string: bytes) -> list[str]:
    names: list[str] = []
    for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        # A name is a keyword or a tag; anything else (a value typed as a name) is masked.
        shown = name if re.fullmatch(r"[A-Za-z0-9_.]{1,64}", name) else "-"
        if shown not in names:
            names.append(shown)
        if len(names) >= _MAX_PARAMS:
            break
    return names


def _outcome(status: int | None) -> str:
    if status is None:
        return "incomplete"
    if status in (401, 403):
        return "denied"
    if status < 400:
        return "success"
    return "failure" if status < 500 else "error"


class AuditMiddleware:
    """Record each patient-data request when its response has started (or failed)."""

    def __init__(self, app: Any, audit: AuditLog, root: str, *, auth_enabled: bool = False) -> None:
        self.app = app
        self.audit = audit
        self.root = root
        #: With auth, a request without an identity was refused before anyone was known.
        self.nobody = Identity("unauthenticated", None, "none") if auth_enabled else ANONYMOUS

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        described = describe(scope["method"], scope["path"], self.root)
        if described is None:
            await self.app(scope, receive, send)
            return
        record: dict[str, Any] = {}
        scope[AUDIT_KEY] = record
        status: int | None = None

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except BaseException:
            status = status if status is not None else 500
            raise
        finally:
            self.audit.write(self._line(scope, described, record, status))

    def _line(self, scope: Mapping[str, Any], described: dict[str, Any], record: dict[str, Any],
              status: int | None) -> dict[str, Any]:
        who = scope.get(IDENTITY_KEY) or self.nobody
        client = scope.get("client")
        line = entry(
            user=who.user, role=who.role, auth=who.via, client=client[0] if client else None,
            action=described["action"], method=str(scope["method"])[:16],
            **{k: v for k, v in described.items() if k != "action"},
            query=_param_names(scope.get("query_string") or b""), status=status, outcome=_outcome(status),
        )
        # UIDs a handler added (a STOW's), after the outcome as they always were
        for key in ("studies", "series_list", "instances"):
            if record.get(key):
                line[key] = record[key]
        return line
