"""C-FIND SCP: a query identifier becomes the catalog query QIDO-RS runs.

The identifier's keys with a value are matching keys, passed as the (keyword, value)
pairs of :class:`~dcmstream.archive.Query` (the catalog matches them exactly as for
QIDO: ``*``/``?`` wildcards, ``a-b`` date and time ranges, backslash-separated UID
lists); every key of the identifier is a return key, answered from the catalog's DICOM
JSON of the match (empty when it has no value). Levels: PATIENT (study matches grouped
by patient), STUDY, SERIES and IMAGE, for the patient root and the study root models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from ..archive.catalog import Query, QueryError
from .common import (
    STATUS_CANCEL,
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNABLE_TO_PROCESS,
)

if TYPE_CHECKING:
    from ..archive import Archive
    from .audit import DimseAudit

__all__ = ["handle_find", "identifier_query", "LEVELS", "MAX_MATCHES"]

log = logging.getLogger(__name__)

#: Q/R level -> catalog level.
LEVELS = {"PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
#: The most responses one C-FIND returns (a query matching more is cut, with a log line).
MAX_MATCHES = 20000
#: Keys that are no matching keys.
_NOT_MATCHED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability",
                "TimezoneOffsetFromUTC", "QueryRetrieveView"}


def _text(value: Any) -> str:
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def identifier_query(identifier: Dataset, limit: int | None = MAX_MATCHES + 1) -> Query:
    """The catalog query of a C-FIND (or C-MOVE/C-GET) identifier.

    Raises :class:`~dcmstream.archive.QueryError` for a missing or unknown QueryRetrieveLevel.
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level!r}: not PATIENT, STUDY, SERIES or IMAGE")
    matches: list[tuple[str, str]] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_MATCHED or elem.VR == "SQ" or elem.tag.group == 0x0002:
            continue
        value = _text(elem.value).strip()
        if value and value != "*":
            matches.append((keyword, value))
    return Query(LEVELS[level], matches=matches, limit=limit)


def _response(identifier: Dataset, hit: dict[str, Any], level: str, ae_title: str) -> Dataset:
    try:
        found = Dataset.from_json(hit)
    except Exception:  # noqa: BLE001 - a summary pydicom cannot read: answer its UIDs only
        found = Dataset()
        for tag in ("0020000D", "0020000E", "00080018", "00100020"):
            value = hit.get(tag, {}).get("Value")
            if value:
                found.add_new(int(tag, 16), hit[tag]["vr"], value[0])
    out = Dataset()
    if "SpecificCharacterSet" in found:
        out.SpecificCharacterSet = found.SpecificCharacterSet
    for elem in identifier:
        if elem.tag.group == 0x0002 or elem.keyword == "SpecificCharacterSet":
            continue
        if elem.keyword == "QueryRetrieveLevel":
            out.QueryRetrieveLevel = level
        elif elem.keyword == "RetrieveAETitle":
            out.RetrieveAETitle = ae_title
        elif elem.keyword == "InstanceAvailability":
            out.InstanceAvailability = "ONLINE"
        elif elem.tag in found:
            out[elem.tag] = found[elem.tag]
        else:
            out.add_new(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None)
    if "QueryRetrieveLevel" not in out:
        out.QueryRetrieveLevel = level
    return out


def _patients(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Study matches grouped by patient (PatientID + IssuerOfPatientID), in first-seen
    order, with NumberOfPatientRelatedStudies/Series/Instances."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for hit in hits:
        key = (str((hit.get("00100020", {}).get("Value") or [""])[0]), str((hit.get("00100021", {}).get("Value") or [""])[0]))
        patient = out.get(key)
        n_series = int((hit.get("00201206", {}).get("Value") or [0])[0])
        n_instances = int((hit.get("00201208", {}).get("Value") or [0])[0])
        if patient is None:
            patient = dict(hit)
            patient["00201200"] = {"vr": "IS", "Value": [0]}
            patient["00201202"] = {"vr": "IS", "Value": [0]}
            patient["00201204"] = {"vr": "IS", "Value": [0]}
            out[key] = patient
        patient["00201200"]["Value"][0] += 1
        patient["00201202"]["Value"][0] += n_series
        patient["00201204"]["Value"][0] += n_instances
    return list(out.values())


def handle_find(event: Any, archive: Archive, ae_title: str,
                audit: DimseAudit | None = None) -> Iterator[tuple[int, Dataset | None]]:
    """``evt.EVT_C_FIND``: pending responses, one per match, then success (or cancel);
    recorded in ``audit`` before the final response (with the names of the identifier's
    keys only), or when the association ends midway (the generator is closed)."""
    if audit is None:
        yield from _find(event, archive, ae_title)
        return
    from .audit import key_names

    identifier = event.identifier
    try:
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()[:16] or None
    except Exception:  # noqa: BLE001 - undecodable: _find answers it
        level = None
    matches = 0
    final: int | None = None
    try:
        for status, found in _find(event, archive, ae_title):
            if status == STATUS_PENDING:
                matches += 1
            else:
                final = status
                audit.find(event.assoc, status, level=level, keys=key_names(identifier), matches=matches)
            yield status, found
    finally:
        if final is None:
            audit.find(event.assoc, None, level=level, keys=key_names(identifier), matches=matches)


def _find(event: Any, archive: Archive, ae_title: str) -> Iterator[tuple[int, Dataset | None]]:
    identifier = event.identifier
    try:
        query = identifier_query(identifier)
    except QueryError as exc:
        log.warning("C-FIND: %s", exc)
        yield STATUS_IDENTIFIER_MISMATCH, None
        return
    except Exception:  # noqa: BLE001 - an identifier pydicom cannot decode
        log.warning("C-FIND identifier could not be read", exc_info=True)
        yield STATUS_IDENTIFIER_MISMATCH, None
        return
    level = str(identifier.QueryRetrieveLevel).strip().upper()
    try:
        result = archive.catalog.search(query)
    except QueryError as exc:
        log.warning("C-FIND: %s", exc)
        yield STATUS_UNABLE_TO_PROCESS, None
        return
    hits = result.hits
    if level == "PATIENT":
        hits = _patients(hits)
    if len(hits) > MAX_MATCHES:
        log.warning("C-FIND matched more than %d %s records; the first %d are returned", MAX_MATCHES, level, MAX_MATCHES)
        hits = hits[:MAX_MATCHES]
    for hit in hits:
        if event.is_cancelled:
            yield STATUS_CANCEL, None
            return
        yield STATUS_PENDING, _response(identifier, hit, level, ae_title)
    yield STATUS_SUCCESS, None
