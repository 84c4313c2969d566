"""The archive catalog: which instances exist, where their bytes are, how to search them.

:class:`Catalog` is the interface (every backend passes
``tests/archive/test_catalog.py::CatalogTests``). :class:`SQLCatalog` implements it
with SQLAlchemy 2 Core, so the same code runs on SQLite (the embedded default,
:class:`SQLiteCatalog`) and PostgreSQL (``SQLCatalog("postgresql://...")``, driven by
psycopg 3 through a connection pool). The schema is created and migrated by alembic
(:mod:`.migrations`) when a catalog opens; several processes and hosts may write to
one PostgreSQL catalog at once (see :meth:`SQLCatalog.add`).

Three tables, one per QIDO level. QIDO matching keys are columns
(:mod:`.attributes`); each row also keeps a *summary* (the DICOM JSON of the first
instance without bulk or large values) for ``includefield``; the instance row keeps
the full DICOM JSON for WADO-RS metadata, the frame index built at ingest and the
pixel element description, so serving a frame needs no header parse.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    event,
    exists,
    func,
    or_,
    select,
    true,
)
from sqlalchemy import Column as SAColumn
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.sql import FromClause
from sqlalchemy.types import TypeEngine

from .. import dicomjson
from ..errors import DcmstreamError, InvalidArgumentError, MissingDependencyError
from .attributes import COLUMNS_BY_KEYWORD, COLUMNS_BY_LEVEL, LEVELS, Column
from .blobstore import StorageFullError

__all__ = [
    "Catalog",
    "SQLCatalog",
    "SQLiteCatalog",
    "InstanceRecord",
    "BlobMove",
    "BlobDeletion",
    "Query",
    "SearchResult",
    "CatalogConflictError",
    "CatalogUnavailableError",
    "CatalogFeatureError",
    "QueryError",
    "query_integer",
    "normalize_url",
    "schema_metadata",
    "summarize",
]

_LEVEL_DEPTH = {level: i for i, level in enumerate(LEVELS)}
# Values longer than this (in JSON characters) stay out of the search summaries.
_SUMMARY_MAX = 2048


class CatalogConflictError(DcmstreamError, ValueError):
    """The instance contradicts the catalog (e.g. its series belongs to another study)."""


class CatalogUnavailableError(DcmstreamError, RuntimeError):
    """The database kept refusing a write (locked, deadlocked, unreachable) after retries; 503 on the web."""


class CatalogFeatureError(DcmstreamError, NotImplementedError):
    """This catalog backend lacks an optional feature (blob swaps, tiers, the move journal)."""


class QueryError(DcmstreamError, ValueError):
    """A malformed query value (e.g. a date range that is not a date); 400 on the web."""


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance, as the catalog knows it.

    ``columns`` holds the indexed attribute values by column name (all three
    levels). ``dataset_json`` is the full DICOM JSON text (only loaded on request).
    ``frame_index`` is ``FrameIndex.to_dict()`` of the blob (None without pixel
    data, or when the stored bytes cannot be indexed in place, e.g. deflated files).
    ``pixel`` describes the pixel data element and :class:`PixelSpec`.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    columns: Mapping[str, Any] = field(default_factory=dict)
    dataset_json: str | None = None
    frame_index: dict[str, Any] | None = None
    pixel: dict[str, Any] | None = None
    ingested_at: float = 0.0
    #: The storage tier holding the blob; None: the archive's first tier (where new
    #: instances are stored), so rows from before tiers and never-moved rows need no write.
    tier: str | None = None
    #: Last read of the instance's bytes (epoch seconds, batched by
    #: :class:`~.access.AccessTracker`); None: never read since it was stored.
    last_access: float | None = None

    @property
    def number_of_frames(self) -> int:
        return 0 if self.frame_index is None else len(self.frame_index["offsets"])


@dataclass(frozen=True)
class BlobMove:
    """A journal row of a tier move in progress (:mod:`.lifecycle`).

    ``state`` is ``"copying"`` from before the first byte is written to the target until
    the catalog switch, ``"switched"`` (set in the switch's transaction) until the old
    copy is deleted, ``"abandoned"`` when a recovery took the move over before its switch.
    """

    id: int
    sop_uid: str
    source_tier: str
    source_key: str
    target_tier: str
    target_key: str
    state: str
    started_at: float


@dataclass(frozen=True)
class BlobDeletion:
    """A journal row of a delete in progress (:mod:`.deletion`): the blob ``blob_key`` in
    tier ``tier`` (a name) belonged to an instance whose catalog row is gone, and is
    still to be deleted. Inserted in the transaction that removes the row."""

    id: int
    sop_uid: str
    tier: str
    blob_key: str
    requested_at: float


@dataclass(frozen=True)
class Query:
    """A QIDO-RS search: level, path scope, matching keys, paging.

    ``matches`` are (keyword, raw query value) pairs; the value syntax is PS3.18's
    (``*``/``?`` wildcards, ``a-b`` date/time ranges, comma or backslash separated
    UID lists, "" for universal matching).
    """

    level: str
    study_uid: str | None = None
    series_uid: str | None = None
    matches: Sequence[tuple[str, str]] = ()
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0


@dataclass
class SearchResult:
    """The matches (DICOM JSON dicts with parent-level attributes merged in) and the
    query keys that were ignored because they cannot be matched."""

    hits: list[dict[str, Any]]
    unsupported: list[str] = field(default_factory=list)


def summarize(dataset_json: str | Mapping[str, Any]) -> dict[str, Any]:
    """The small part of a DICOM JSON dataset kept for searches: no bulk, no big values."""
    data = json.loads(dataset_json) if isinstance(dataset_json, str) else dict(dataset_json)
    out = {}
    for key, value in data.items():
        if "BulkDataURI" in value or "InlineBinary" in value:
            continue
        if len(dicomjson.dumps(value)) > _SUMMARY_MAX:
            continue
        out[key] = value
    return out


class Catalog(ABC):
    """Instances, their locations and their searchable attributes."""

    @abstractmethod
    def add(self, record: InstanceRecord) -> bool:
        """Insert an instance; False (and nothing changed) if its SOP Instance UID exists.

        Raises :class:`CatalogConflictError` when the instance contradicts the catalog
        (its series is already filed under another study).
        """

    @abstractmethod
    def get(self, sop_uid: str, *, with_dataset: bool = False) -> InstanceRecord | None:
        """The record of one instance (``dataset_json`` only when asked), or None."""

    @abstractmethod
    def instances(self, study_uid: str, series_uid: str | None = None) -> list[InstanceRecord]:
        """Records of a study or series, ordered by series then instance number."""

    @abstractmethod
    def metadata(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[str]:
        """Stored DICOM JSON texts of the instances in scope, in :meth:`instances` order."""

    @abstractmethod
    def version(self, study_uid: str, series_uid: str | None = None) -> tuple[int, int]:
        """(instance count, newest row revision) of a study or series: changes on every add,
        remove, blob swap (:meth:`replace_blob`) and tier move (:meth:`switch_move`), made
        by any process, so caches keyed by it never serve a stale answer.

        Every writing transaction stamps the row it adds or changes with the next value of a
        catalog-wide counter, handed out in commit order; a remove lowers the count. A
        state after removes only is a subset of an earlier one with the same newest row, so
        equal versions mean equal rows. Access times (:meth:`touch`) are no change."""

    @abstractmethod
    def search(self, query: Query) -> SearchResult:
        """QIDO-RS matching (see :class:`Query`)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Numbers of studies, series and instances."""

    @abstractmethod
    def remove(self, sop_uid: str) -> InstanceRecord | None:
        """Delete an instance row (and its series/study when they become empty)."""

    def replace_blob(self, sop_uid: str, old_blob_key: str, record: InstanceRecord) -> bool:
        """Point an instance at a new blob (transfer syntax, size, DICOM JSON, frame index,
        pixel description) in one transaction, only if it still points at ``old_blob_key``;
        returns whether the row was updated. Used by the compression policy."""
        raise CatalogFeatureError(f"{type(self).__name__} cannot replace blobs")

    # -- tiers, access times and the move journal (optional: storage tiers need them) --------
    def touch(self, accesses: Mapping[str, float]) -> int:
        """Set ``last_access = max(last_access, t)`` for each ``sop_uid -> t``, in one
        transaction; returns the number of UPDATE statements it took (rows sharing a
        time share one). Called by :class:`~.access.AccessTracker` in batches."""
        raise CatalogFeatureError(f"{type(self).__name__} does not track access")

    def tier_totals(self) -> dict[str | None, tuple[int, int]]:
        """(instances, bytes) per stored tier value (None: the first tier), one GROUP BY."""
        raise CatalogFeatureError(f"{type(self).__name__} has no tiers")

    def tier_candidates(
        self,
        tier: str | None,
        *,
        accessed_before: float | None = None,
        ingested_before: float | None = None,
        after_sop: str = "",
        limit: int = 500,
    ) -> list[InstanceRecord]:
        """Records in ``tier`` (None: the first tier) last read (or, never read, stored)
        before ``accessed_before`` and stored before ``ingested_before`` (each condition
        only when given), in SOP Instance UID order after ``after_sop``: one page."""
        raise CatalogFeatureError(f"{type(self).__name__} has no tiers")

    def begin_move(self, sop_uid: str, source_tier: str, source_key: str, target_tier: str, target_key: str) -> int:
        """Journal a tier move (state ``"copying"``) before any byte is copied; its id."""
        raise CatalogFeatureError(f"{type(self).__name__} has no move journal")

    def switch_move(self, move_id: int, sop_uid: str, source_key: str, new_tier: str | None, new_key: str) -> bool:
        """In one transaction: the move ``"copying"`` -> ``"switched"`` and the row's blob key
        and tier to the new copy, only if the move is still ``"copying"`` (no recovery took it
        over) and the row still points at ``source_key`` (compare and swap). False: nothing
        changed."""
        raise CatalogFeatureError(f"{type(self).__name__} has no move journal")

    def abandon_move(self, move_id: int) -> bool:
        """Mark a ``"copying"`` move ``"abandoned"`` (its switch can no longer happen)."""
        raise CatalogFeatureError(f"{type(self).__name__} has no move journal")

    def end_move(self, move_id: int) -> None:
        """Delete a journal row: the move is finished or cleaned up."""
        raise CatalogFeatureError(f"{type(self).__name__} has no move journal")

    def pending_moves(self) -> list[BlobMove]:
        """Every journal row (moves in progress, or left by a killed run), oldest first."""
        raise CatalogFeatureError(f"{type(self).__name__} has no move journal")

    # -- deletes and their journal (optional: Archive.delete needs them) ------------------------
    def delete_instances(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        first_tier: str,
        before_commit: Callable[[], None] | None = None,
    ) -> list[InstanceRecord]:
        """In one transaction: remove the rows of every instance in scope (a study, a series
        of it, or one instance of that series), their series and study rows when they become
        empty, and journal each removed instance's blob (:class:`BlobDeletion`, tier by name:
        ``first_tier`` for a NULL tier). Returns the removed records (empty: nothing matched).

        ``before_commit`` runs inside the transaction after every statement (a test hook:
        a process killed there leaves the catalog as it was)."""
        raise CatalogFeatureError(f"{type(self).__name__} cannot delete with a journal")

    def pending_deletions(self, after_id: int = 0, limit: int | None = None) -> list[BlobDeletion]:
        """Journalled blob deletions not finished yet with ids above ``after_id``, oldest
        first (at most ``limit``: one page)."""
        raise CatalogFeatureError(f"{type(self).__name__} has no deletion journal")

    def deletion_pending(self, blob_key: str) -> bool:
        """Whether a journalled deletion names ``blob_key`` (in any tier): an ingest must not
        put a new blob under that key while it is listed (the journal would delete it)."""
        return False

    def deletion_epoch(self) -> int:
        """A number every delete changes (in any process): readers that memoise records
        compare it to drop them (see :meth:`Archive.record`). Constant without deletes."""
        return 0

    def end_deletions(self, ids: Sequence[int]) -> None:
        """Delete journal rows: their blobs are gone."""
        raise CatalogFeatureError(f"{type(self).__name__} has no deletion journal")

    def close(self) -> None:  # noqa: B027 - optional hook: a catalog without connections has nothing to release
        """Release connections."""

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# SQLAlchemy implementation
# ---------------------------------------------------------------------------------------------


def _text(length: int) -> TypeEngine[str]:
    # PostgreSQL compares these with the binary "C" collation, like SQLite (migration 0002).
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _columns_for(level: str) -> list[SAColumn]:
    cols: list[SAColumn] = []
    for c in COLUMNS_BY_LEVEL[level]:
        if c.name in ("study_uid", "series_uid", "sop_uid"):
            continue
        cols.append(SAColumn(c.name, Integer if c.is_integer else _text(256), index=c.name in _INDEXED))
    return cols


_INDEXED = {"patient_id", "patient_name", "study_date", "accession_number", "modality"}


def _make_tables(metadata: MetaData) -> tuple[Table, Table, Table]:
    """The tables the catalog queries; ``migrations/versions`` must produce exactly these."""
    studies = Table(
        "studies",
        metadata,
        SAColumn("seq", Integer, primary_key=True, autoincrement=True),
        SAColumn("study_uid", _text(64), nullable=False, unique=True),
        *_columns_for("study"),
        SAColumn("attrs_json", Text, nullable=False),
    )
    series = Table(
        "series",
        metadata,
        SAColumn("seq", Integer, primary_key=True, autoincrement=True),
        SAColumn("series_uid", _text(64), nullable=False, unique=True),
        SAColumn("study_uid", _text(64), ForeignKey("studies.study_uid"), nullable=False, index=True),
        *_columns_for("series"),
        SAColumn("attrs_json", Text, nullable=False),
    )
    instances = Table(
        "instances",
        metadata,
        SAColumn("seq", Integer, primary_key=True, autoincrement=True),
        SAColumn("sop_uid", _text(64), nullable=False, unique=True),
        SAColumn("series_uid", _text(64), ForeignKey("series.series_uid"), nullable=False),
        SAColumn("study_uid", _text(64), nullable=False, index=True),
        *_columns_for("instance"),
        SAColumn("transfer_syntax", _text(64), nullable=False),
        SAColumn("blob_key", _text(1024), nullable=False),
        SAColumn("size", Integer().with_variant(BigInteger(), "postgresql"), nullable=False),
        SAColumn("attrs_json", Text, nullable=False),
        SAColumn("dataset_json", Text, nullable=False),
        SAColumn("frame_index_json", Text),
        SAColumn("pixel_json", Text),
        SAColumn("ingested_at", Float, nullable=False),
        SAColumn("tier", _text(64), index=True),
        SAColumn("last_access", Float),
        # The catalog_revision value of the transaction that last added or changed the row
        # (0: unchanged since before migration 0004); see Catalog.version.
        SAColumn("revision", BigInteger, nullable=False, server_default="0"),
        Index("ix_instances_series_number", "series_uid", "instance_number"),
    )
    # Row 1: the catalog-wide change counter, taken by every transaction that adds or changes
    # an instance row (SQLCatalog._stamp); row 2: the count of deletes (Catalog.deletion_epoch).
    Table(
        "catalog_revision",
        metadata,
        SAColumn("id", Integer, primary_key=True, autoincrement=False),
        SAColumn("value", BigInteger, nullable=False),
    )
    # The journal of tier moves in progress (see archive/lifecycle.py): a row exists from
    # before the first byte is copied until the old copy is deleted, so a run killed at
    # any point leaves a row saying what to finish or clean.
    Table(
        "blob_moves",
        metadata,
        SAColumn("id", Integer, primary_key=True, autoincrement=True),
        SAColumn("sop_uid", _text(64), nullable=False),
        SAColumn("source_tier", _text(64), nullable=False),
        SAColumn("source_key", _text(1024), nullable=False),
        SAColumn("target_tier", _text(64), nullable=False),
        SAColumn("target_key", _text(1024), nullable=False),
        SAColumn("state", _text(16), nullable=False),
        SAColumn("started_at", Float, nullable=False),
    )
    # The journal of blob deletions (archive/deletion.py): rows inserted in the transaction
    # that removes instance rows, deleted once their blobs are gone (migration 0005).
    Table(
        "blob_deletions",
        metadata,
        SAColumn("id", Integer, primary_key=True, autoincrement=True),
        SAColumn("sop_uid", _text(64), nullable=False),
        SAColumn("tier", _text(64), nullable=False),
        SAColumn("blob_key", _text(1024), nullable=False, index=True),
        SAColumn("requested_at", Float, nullable=False),
    )
    return studies, series, instances


def schema_metadata() -> MetaData:
    """A MetaData holding the catalog's tables (alembic's autogenerate target)."""
    metadata = MetaData()
    _make_tables(metadata)
    return metadata


def normalize_url(url: str | URL) -> URL:
    """The SQLAlchemy URL for a catalog URL: plain ``postgresql://`` (and ``postgres://``)
    means psycopg 3, the one PostgreSQL driver dcmstream depends on."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


# SQLSTATEs after which a write transaction is simply tried again: serialization
# failure, deadlock (PostgreSQL); "database is locked" has no SQLSTATE (SQLite).
_RETRY_SQLSTATES = {"40001", "40P01"}
_WRITE_ATTEMPTS = 8


class _AlreadyStored(DcmstreamError):
    """Internal, never leaves :meth:`SQLCatalog.add`: raised inside its transaction to
    roll it back when another writer committed the same instance first."""


class _Rollback(DcmstreamError):
    """Internal, never leaves :class:`SQLCatalog`: rolls a compare-and-swap transaction
    back when its second condition fails."""


# Rows of the catalog_revision table: the revision stamped on changed instance rows
# (migration 0004), and the count of deletes (0005).
_REVISION_ROW, _DELETIONS_ROW = 1, 2

# Values per ``IN (...)`` list: SQLite's old limit of 999 bound parameters, with room.
_IN_CHUNK = 500


def _transient(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _RETRY_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def _full(exc: DBAPIError) -> bool:
    """Whether the database refused a write for want of space: PostgreSQL's disk_full
    (53100), SQLite's SQLITE_FULL ("database or disk is full")."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code == "53100":
        return True
    return isinstance(exc, OperationalError) and "database or disk is full" in str(exc.orig)


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


#: SQLite INTEGER and PostgreSQL BIGINT: 64-bit signed; larger values make the driver raise.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")


def query_integer(text: str, name: str, minimum: int = INT64_MIN) -> int:
    """``text`` as an integer the databases accept, or :class:`QueryError` naming ``name``.

    Integer attributes (IS/US/UL/SL/SS) and ``limit``/``offset`` go through here: ``int()``
    alone takes "1_0" and non-ASCII digits, and lets 2**63 through to the driver (a 500).
    """
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped) or len(stripped) > 40:
        raise QueryError(f"{name}={text[:80]!r}: expected an integer")
    number = int(stripped)
    if not minimum <= number <= INT64_MAX:
        raise QueryError(f"{name}={text[:80]!r}: out of range (expected {minimum} to {INT64_MAX})")
    return number


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.replace("\\", ",").split(",") if v.strip()]


_DATE_CHARS = set("0123456789.:+ ")


class SQLCatalog(Catalog):
    """A :class:`Catalog` on any SQLAlchemy 2 database URL (SQLite, PostgreSQL).

    ``postgresql://`` URLs use psycopg 3 with a connection pool (``engine_kwargs``
    override the pool settings). Opening runs the schema migrations
    (:func:`.migrations.upgrade`): the first process creates the tables, any other
    opening the same database at once waits for it.
    """

    #: PostgreSQL pool: a few connections per process (one per concurrent request at
    #: most), checked before use (a server restart or idle timeout leaves dead ones)
    #: and replaced after half an hour (load balancers and firewalls drop idle TCP).
    POOL_SETTINGS: Mapping[str, Any] = {
        "pool_size": 5,
        "max_overflow": 10,
        "pool_timeout": 30,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }

    def __init__(self, url: str | URL, **engine_kwargs: Any) -> None:
        parsed = normalize_url(url)
        self.url = parsed.render_as_string(hide_password=False)
        self.engine: Engine = self._create_engine(self.url, **engine_kwargs)
        self._schema = MetaData()
        self.studies, self.series, self.instances_table = _make_tables(self._schema)
        self.moves_table = self._schema.tables["blob_moves"]
        self.revision_table = self._schema.tables["catalog_revision"]
        self.deletions_table = self._schema.tables["blob_deletions"]
        self._level_tables = {"study": self.studies, "series": self.series, "instance": self.instances_table}
        # SQLite has one writer at a time anyway (and ":memory:" shares one connection):
        # serialize this process's writers here rather than in the busy-wait.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else contextlib.nullcontext()
        )
        from . import migrations

        try:
            migrations.upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    def _create_engine(self, url: str, **kwargs: Any) -> Engine:
        if make_url(url).get_backend_name() == "postgresql":
            for key, value in self.POOL_SETTINGS.items():
                kwargs.setdefault(key, value)
        try:
            return create_engine(url, **kwargs)
        except ModuleNotFoundError as exc:
            if exc.name == "psycopg":
                raise MissingDependencyError("a PostgreSQL catalog needs psycopg 3: pip install 'dcmstream[postgres]'") from exc
            raise

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    # -- writing ---------------------------------------------------------------------------
    def _write(self, what: str, work: Callable[[Connection], Any]) -> Any:
        """Run ``work`` in one transaction, again if the database reports a transient
        conflict (deadlock, serialization failure, SQLite busy past its timeout)."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._write_lock, self.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if _full(exc):
                    raise StorageFullError(errno.ENOSPC, f"{what}: the catalog database is full: {exc.orig}") from exc
                if isinstance(exc, IntegrityError) or not _transient(exc):
                    raise
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise CatalogUnavailableError(f"{what}: the catalog database kept refusing the write: {exc.orig}") from exc
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def add(self, record: InstanceRecord) -> bool:
        """Insert an instance (see :meth:`Catalog.add`); safe against concurrent writers.

        Study, series and instance rows are inserted with ``ON CONFLICT DO NOTHING``
        in that order, in one transaction: of several processes adding the same SOP
        Instance UID at once exactly one inserts it, the others wait for its commit
        and get False (their transaction is rolled back, so a study or series they
        created for it disappears too). A series filed under another study raises
        :class:`CatalogConflictError`, also when the other study was committed a
        moment ago by another process.
        """
        if record.dataset_json is None:
            raise InvalidArgumentError(f"add {record.sop_uid}: InstanceRecord.dataset_json is required to add an instance")
        summary = dicomjson.dumps(summarize(record.dataset_json))
        cols = dict(record.columns)
        for _ in range(_WRITE_ATTEMPTS):
            try:
                return bool(self._write(f"add {record.sop_uid}", lambda conn: self._add(conn, record, cols, summary)))
            except _AlreadyStored:
                return False
            except IntegrityError:
                # Only a dialect without ON CONFLICT (or a concurrent remove() of the
                # series we are adding to) gets here: look again from the start.
                if self.get(record.sop_uid) is not None:
                    return False
        raise CatalogUnavailableError(f"add {record.sop_uid}: concurrent changes kept conflicting with it")

    def _insert_new(self, conn: Connection, table: Table, key: str, values: dict[str, Any]) -> bool:
        """INSERT unless a row with the same ``key`` exists (or is being inserted); True if inserted."""
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            module = pg_dialect if dialect == "postgresql" else sqlite_dialect
            stmt = module.insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
            if conn.dialect.insert_returning:  # rowcount is -1 with RETURNING (psycopg)
                return conn.execute(stmt.returning(table.c[key])).first() is not None
            return conn.execute(stmt).rowcount == 1
        if conn.execute(select(table.c[key]).where(table.c[key] == values[key])).first() is not None:
            return False
        conn.execute(table.insert().values(**values))
        return True

    def _add(self, conn: Connection, record: InstanceRecord, cols: dict[str, Any], summary: str) -> bool:
        st, se, ins = self.studies, self.series, self.instances_table
        if conn.execute(select(ins.c.seq).where(ins.c.sop_uid == record.sop_uid)).first() is not None:
            return False
        values = {c.name: cols.get(c.name) for c in COLUMNS_BY_LEVEL["study"] if c.name != "study_uid"}
        self._insert_new(conn, st, "study_uid", dict(study_uid=record.study_uid, attrs_json=summary, **values))
        values = {c.name: cols.get(c.name) for c in COLUMNS_BY_LEVEL["series"] if c.name != "series_uid"}
        self._insert_new(
            conn, se, "series_uid", dict(series_uid=record.series_uid, study_uid=record.study_uid, attrs_json=summary, **values)
        )
        owner = conn.execute(select(se.c.study_uid).where(se.c.series_uid == record.series_uid)).scalar_one()
        if owner != record.study_uid:
            raise CatalogConflictError(f"series {record.series_uid} is filed under study {owner}, not {record.study_uid}")
        values = {c.name: cols.get(c.name) for c in COLUMNS_BY_LEVEL["instance"] if c.name != "sop_uid"}
        values["sop_class_uid"] = record.sop_class_uid
        inserted = self._insert_new(
            conn,
            ins,
            "sop_uid",
            dict(
                sop_uid=record.sop_uid,
                series_uid=record.series_uid,
                study_uid=record.study_uid,
                transfer_syntax=record.transfer_syntax,
                blob_key=record.blob_key,
                size=record.size,
                attrs_json=summary,
                dataset_json=record.dataset_json,
                frame_index_json=_dumps_or_none(record.frame_index),
                pixel_json=_dumps_or_none(record.pixel),
                ingested_at=record.ingested_at or time.time(),
                tier=record.tier,
                last_access=record.last_access,
                **values,
            ),
        )
        if not inserted:
            # Another writer committed this instance while we waited: roll back the study
            # or series rows this transaction may have created for it.
            raise _AlreadyStored
        self._stamp(conn, record.sop_uid)
        return True

    def _stamp(self, conn: Connection, sop_uid: str) -> None:
        """Give the instance row this transaction added or changed the next catalog revision
        (what :meth:`version` reports). The last statements of the transaction: the counter
        row's lock is held only until the commit, and its holder never waits for another
        lock (the instance row is already its own), so values are handed out in commit order
        and no deadlock can involve the counter."""
        counter, ins = self.revision_table, self.instances_table
        bump = counter.update().where(counter.c.id == _REVISION_ROW).values(value=counter.c.value + 1)
        value = conn.execute(bump.returning(counter.c.value)).scalar_one()
        conn.execute(ins.update().where(ins.c.sop_uid == sop_uid).values(revision=value))

    def remove(self, sop_uid: str) -> InstanceRecord | None:
        record = self.get(sop_uid)
        if record is None:
            return None
        ins = self.instances_table

        def work(conn: Connection) -> bool:
            if conn.execute(ins.delete().where(ins.c.sop_uid == sop_uid)).rowcount != 1:
                return False
            if self._sqlite:  # one writer at a time: the emptiness checks below cannot race
                self._remove_if_empty(conn, record)
                return True
            # Another process may be adding to this series right now: if so its row
            # makes the delete fail (foreign key), and the series and study stay.
            try:
                with conn.begin_nested():
                    self._remove_if_empty(conn, record)
            except IntegrityError:
                pass
            return True

        return record if self._write(f"remove {sop_uid}", work) else None

    def _remove_if_empty(self, conn: Connection, record: InstanceRecord) -> None:
        st, se, ins = self.studies, self.series, self.instances_table
        if conn.execute(select(ins.c.seq).where(ins.c.series_uid == record.series_uid).limit(1)).first() is None:
            conn.execute(se.delete().where(se.c.series_uid == record.series_uid))
        if conn.execute(select(se.c.seq).where(se.c.study_uid == record.study_uid).limit(1)).first() is None:
            conn.execute(st.delete().where(st.c.study_uid == record.study_uid))

    def replace_blob(self, sop_uid: str, old_blob_key: str, record: InstanceRecord) -> bool:
        if record.dataset_json is None:
            raise InvalidArgumentError(f"replace_blob {sop_uid}: InstanceRecord.dataset_json is required to replace a blob")
        ins = self.instances_table
        summary = dicomjson.dumps(summarize(record.dataset_json))

        def work(conn: Connection) -> bool:
            res = conn.execute(
                ins.update()
                .where(ins.c.sop_uid == sop_uid, ins.c.blob_key == old_blob_key)
                .values(
                    transfer_syntax=record.transfer_syntax,
                    blob_key=record.blob_key,
                    size=record.size,
                    attrs_json=summary,
                    dataset_json=record.dataset_json,
                    frame_index_json=_dumps_or_none(record.frame_index),
                    pixel_json=_dumps_or_none(record.pixel),
                    tier=record.tier,
                )
            )
            if res.rowcount != 1:
                return False
            self._stamp(conn, sop_uid)
            return True

        return bool(self._write(f"replace the blob of {sop_uid}", work))

    # -- tiers, access times, move journal ----------------------------------------------------
    def touch(self, accesses: Mapping[str, float]) -> int:
        ins = self.instances_table
        by_time: dict[float, list[str]] = {}
        for sop, at in accesses.items():
            by_time.setdefault(float(at), []).append(sop)
        batches = [
            (at, sops[i : i + _IN_CHUNK])
            for at, sops in sorted(by_time.items())
            for sops in [sorted(sops)]  # one lock order for every writer (PostgreSQL deadlocks)
            for i in range(0, len(sops), _IN_CHUNK)
        ]
        if not batches:
            return 0

        def work(conn: Connection) -> int:
            for at, sops in batches:
                newer = case((or_(ins.c.last_access.is_(None), ins.c.last_access < at), at), else_=ins.c.last_access)
                conn.execute(ins.update().where(ins.c.sop_uid.in_(sops)).values(last_access=newer))
            return len(batches)

        return int(self._write("record access times", work))

    def tier_totals(self) -> dict[str | None, tuple[int, int]]:
        ins = self.instances_table
        stmt = select(ins.c.tier, func.count(), func.coalesce(func.sum(ins.c.size), 0)).group_by(ins.c.tier)
        with self.engine.connect() as conn:
            return {tier: (int(n), int(size)) for tier, n, size in conn.execute(stmt)}

    def tier_candidates(
        self,
        tier: str | None,
        *,
        accessed_before: float | None = None,
        ingested_before: float | None = None,
        after_sop: str = "",
        limit: int = 500,
    ) -> list[InstanceRecord]:
        ins = self.instances_table
        cond = [ins.c.tier.is_(None) if tier is None else ins.c.tier == tier, ins.c.sop_uid > after_sop]
        if accessed_before is not None:
            cond.append(func.coalesce(ins.c.last_access, ins.c.ingested_at) < accessed_before)
        if ingested_before is not None:
            cond.append(ins.c.ingested_at < ingested_before)
        stmt = select(*self._record_columns(False)).where(*cond).order_by(ins.c.sop_uid).limit(max(int(limit), 1))
        with self.engine.connect() as conn:
            return [self._record(row, False) for row in conn.execute(stmt)]

    def begin_move(self, sop_uid: str, source_tier: str, source_key: str, target_tier: str, target_key: str) -> int:
        mv = self.moves_table
        values = dict(sop_uid=sop_uid, source_tier=source_tier, source_key=source_key, target_tier=target_tier,
                      target_key=target_key, state="copying", started_at=time.time())

        def work(conn: Connection) -> int:
            key = conn.execute(mv.insert().values(**values)).inserted_primary_key
            if key is None:  # pragma: no cover - every dialect reports an autoincrement key
                raise CatalogUnavailableError("the database did not report the journal row's id")
            return int(key[0])

        return int(self._write(f"journal the move of {sop_uid}", work))

    def switch_move(self, move_id: int, sop_uid: str, source_key: str, new_tier: str | None, new_key: str) -> bool:
        mv, ins = self.moves_table, self.instances_table

        def work(conn: Connection) -> bool:
            to_switched = mv.update().where(mv.c.id == move_id, mv.c.state == "copying").values(state="switched")
            if conn.execute(to_switched).rowcount != 1:
                return False
            cas = ins.update().where(ins.c.sop_uid == sop_uid, ins.c.blob_key == source_key)
            res = conn.execute(cas.values(blob_key=new_key, tier=new_tier))
            if res.rowcount != 1:
                raise _Rollback  # the row changed meanwhile: the journal row stays "copying"
            self._stamp(conn, sop_uid)
            return True

        try:
            return bool(self._write(f"switch the blob of {sop_uid}", work))
        except _Rollback:
            return False

    def abandon_move(self, move_id: int) -> bool:
        mv = self.moves_table

        def work(conn: Connection) -> bool:
            to_abandoned = mv.update().where(mv.c.id == move_id, mv.c.state == "copying").values(state="abandoned")
            return conn.execute(to_abandoned).rowcount == 1

        return bool(self._write(f"abandon move {move_id}", work))

    def end_move(self, move_id: int) -> None:
        mv = self.moves_table
        self._write(f"end move {move_id}", lambda conn: conn.execute(mv.delete().where(mv.c.id == move_id)))

    def pending_moves(self) -> list[BlobMove]:
        mv = self.moves_table
        with self.engine.connect() as conn:
            rows = conn.execute(select(mv).order_by(mv.c.id)).all()
        return [
            BlobMove(row.id, row.sop_uid, row.source_tier, row.source_key, row.target_tier, row.target_key, row.state,
                     row.started_at)
            for row in rows
        ]

    # -- deletes and their journal ----------------------------------------------------------
    def delete_instances(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        first_tier: str,
        before_commit: Callable[[], None] | None = None,
    ) -> list[InstanceRecord]:
        st, se, ins, dl = self.studies, self.series, self.instances_table, self.deletions_table
        scope = self._scope(study_uid, series_uid, sop_uid)

        def work(conn: Connection) -> list[InstanceRecord]:
            rows = conn.execute(select(*self._record_columns(False)).where(scope).order_by(ins.c.seq)).all()
            records = [self._record(row, False) for row in rows]
            if not records:
                return []
            now = time.time()
            journal = [
                dict(sop_uid=r.sop_uid, tier=r.tier or first_tier, blob_key=r.blob_key, requested_at=now) for r in records
            ]
            for i in range(0, len(journal), _IN_CHUNK):
                conn.execute(dl.insert(), journal[i : i + _IN_CHUNK])
            sops = [r.sop_uid for r in records]
            removed = 0
            for i in range(0, len(sops), _IN_CHUNK):
                removed += conn.execute(ins.delete().where(ins.c.sop_uid.in_(sops[i : i + _IN_CHUNK]))).rowcount
            if removed != len(sops):  # pragma: no cover - the rows were read in this transaction
                raise CatalogUnavailableError(f"delete in study {study_uid}: rows changed while being deleted; try again")
            # Parents left empty go too. On PostgreSQL another process may be adding an
            # instance to one of them right now: its row then makes this delete fail (foreign
            # key) and the parent stays (as in remove()); the instances are deleted either way.
            def drop_empty_parents() -> None:
                for series in sorted({r.series_uid for r in records}):
                    if conn.execute(select(ins.c.seq).where(ins.c.series_uid == series).limit(1)).first() is None:
                        conn.execute(se.delete().where(se.c.series_uid == series))
                if conn.execute(select(se.c.seq).where(se.c.study_uid == study_uid).limit(1)).first() is None:
                    conn.execute(st.delete().where(st.c.study_uid == study_uid))

            if self._sqlite:  # one writer at a time: the emptiness checks cannot race
                drop_empty_parents()
            else:
                try:
                    with conn.begin_nested():
                        drop_empty_parents()
                except IntegrityError:
                    pass
            # The revision counter moves too (version() already changes: the count drops), so
            # that revisions stay a total order of every change; and the deletions counter,
            # which other processes watch to drop the records they memoised.
            counter = self.revision_table
            for row in (_REVISION_ROW, _DELETIONS_ROW):
                conn.execute(counter.update().where(counter.c.id == row).values(value=counter.c.value + 1))
            if before_commit is not None:
                before_commit()
            return records

        what = f"delete {sop_uid or series_uid or study_uid}"
        return list(self._write(what, work))

    def pending_deletions(self, after_id: int = 0, limit: int | None = None) -> list[BlobDeletion]:
        dl = self.deletions_table
        stmt = select(dl).where(dl.c.id > after_id).order_by(dl.c.id)
        if limit is not None:
            stmt = stmt.limit(max(int(limit), 1))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [BlobDeletion(row.id, row.sop_uid, row.tier, row.blob_key, row.requested_at) for row in rows]

    def deletion_pending(self, blob_key: str) -> bool:
        dl = self.deletions_table
        with self.engine.connect() as conn:
            return conn.execute(select(dl.c.id).where(dl.c.blob_key == blob_key).limit(1)).first() is not None

    def deletion_epoch(self) -> int:
        counter = self.revision_table
        with self.engine.connect() as conn:
            value = conn.execute(select(counter.c.value).where(counter.c.id == _DELETIONS_ROW)).scalar()
        return int(value or 0)

    def end_deletions(self, ids: Sequence[int]) -> None:
        dl = self.deletions_table
        ids = list(ids)

        def work(conn: Connection) -> None:
            for i in range(0, len(ids), _IN_CHUNK):
                conn.execute(dl.delete().where(dl.c.id.in_(ids[i : i + _IN_CHUNK])))

        if ids:
            self._write("end journalled deletions", work)

    # -- reading ---------------------------------------------------------------------------
    def _record(self, row: Any, with_dataset: bool) -> InstanceRecord:
        columns = {c.name: getattr(row, c.name, None) for c in COLUMNS_BY_LEVEL["instance"]}
        return InstanceRecord(
            study_uid=row.study_uid,
            series_uid=row.series_uid,
            sop_uid=row.sop_uid,
            sop_class_uid=row.sop_class_uid,
            transfer_syntax=row.transfer_syntax,
            blob_key=row.blob_key,
            size=row.size,
            columns=columns,
            dataset_json=row.dataset_json if with_dataset else None,
            frame_index=None if row.frame_index_json is None else json.loads(row.frame_index_json),
            pixel=None if row.pixel_json is None else json.loads(row.pixel_json),
            ingested_at=row.ingested_at,
            tier=row.tier,
            last_access=row.last_access,
        )

    def _record_columns(self, with_dataset: bool) -> list[Any]:
        ins = self.instances_table
        return [c for c in ins.c if with_dataset or c.name not in ("dataset_json", "attrs_json")]

    def get(self, sop_uid: str, *, with_dataset: bool = False) -> InstanceRecord | None:
        ins = self.instances_table
        with self.engine.connect() as conn:
            row = conn.execute(select(*self._record_columns(with_dataset)).where(ins.c.sop_uid == sop_uid)).first()
        return None if row is None else self._record(row, with_dataset)

    def _scope(self, study_uid: str, series_uid: str | None, sop_uid: str | None = None) -> Any:
        ins = self.instances_table
        cond = [ins.c.study_uid == study_uid]
        if series_uid is not None:
            cond.append(ins.c.series_uid == series_uid)
        if sop_uid is not None:
            cond.append(ins.c.sop_uid == sop_uid)
        return and_(*cond)

    def _ordered(self, stmt: Any) -> Any:
        ins, se = self.instances_table, self.series
        return stmt.select_from(ins.join(se, se.c.series_uid == ins.c.series_uid)).order_by(
            se.c.seq, ins.c.instance_number, ins.c.seq
        )

    def instances(self, study_uid: str, series_uid: str | None = None) -> list[InstanceRecord]:
        stmt = self._ordered(select(*self._record_columns(False)).where(self._scope(study_uid, series_uid)))
        with self.engine.connect() as conn:
            return [self._record(row, False) for row in conn.execute(stmt)]

    def metadata(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[str]:
        ins = self.instances_table
        stmt = self._ordered(select(ins.c.dataset_json).where(self._scope(study_uid, series_uid, sop_uid)))
        with self.engine.connect() as conn:
            return [row.dataset_json for row in conn.execute(stmt)]

    def version(self, study_uid: str, series_uid: str | None = None) -> tuple[int, int]:
        ins = self.instances_table
        stmt = select(func.count(ins.c.seq), func.max(ins.c.revision)).where(self._scope(study_uid, series_uid))
        with self.engine.connect() as conn:
            count, last = conn.execute(stmt).one()
        return int(count or 0), int(last or 0)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in (("studies", self.studies), ("series", self.series), ("instances", self.instances_table))
            }

    # -- searching -------------------------------------------------------------------------
    def _condition(self, column: Column, value: str, fuzzy: bool) -> Any:
        table = self._level_tables[column.level]
        col = table.c[column.name]
        if column.is_integer:
            numbers = [query_integer(v, column.keyword) for v in _split_list(value)]
            if not numbers:
                raise QueryError(f"{column.keyword}={value[:80]!r}: expected an integer (or a comma separated list)")
            return col.in_(numbers) if len(numbers) > 1 else col == numbers[0]
        if column.vr == "UI":
            uids = _split_list(value)
            if not uids:
                raise QueryError(f"{column.keyword}: expected one or more UIDs, got none")
            return col.in_(uids) if len(uids) > 1 else col == uids[0]
        if column.vr in ("DA", "TM", "DT") and "-" in value:
            low, _, high = value.partition("-")
            low, high = low.strip(), high.strip()
            if (not low and not high) or not set(low + high) <= _DATE_CHARS:
                raise QueryError(f"{column.keyword}={value!r}: expected a range like 20200101-20201231")
            conds = []
            if low:
                conds.append(col >= low)
            if high:
                if column.vr == "DA":
                    conds.append(col <= high)
                else:
                    # "1300" must include 13:00:59.9: compare against the upper bound's prefix.
                    conds.append(or_(col <= high, func.substr(col, 1, len(high)) == high))
            return and_(col.is_not(None), *conds)
        if column.vr == "PN":
            # PS3.18: PN matching is case-insensitive; fuzzy also matches any part of a name.
            pattern = _like_pattern(value)
            if fuzzy:
                pattern = f"%{pattern.strip('%')}%"
            return col.ilike(pattern, escape="\\")
        if "*" in value or "?" in value:
            return col.like(_like_pattern(value), escape="\\")
        if column.vr == "CS" and ("," in value or "\\" in value):
            return col.in_(_split_list(value))
        return col == value

    def search(self, query: Query) -> SearchResult:
        if query.level not in _LEVEL_DEPTH:
            raise QueryError(f"unknown query level {query.level!r}")
        st, se, ins = self.studies, self.series, self.instances_table
        depth = _LEVEL_DEPTH[query.level]
        own: list[Any] = []
        deeper: dict[str, list[Any]] = {"series": [], "instance": []}
        unsupported: list[str] = []
        matches = list(query.matches)
        if query.study_uid is not None:
            matches.append(("StudyInstanceUID", query.study_uid))
        if query.series_uid is not None:
            matches.append(("SeriesInstanceUID", query.series_uid))
        for keyword, value in matches:
            if keyword == "ModalitiesInStudy":
                keyword = "Modality"
            column = COLUMNS_BY_KEYWORD.get(keyword)
            if column is None:
                unsupported.append(keyword)
                continue
            if value == "" or value == "*":
                continue  # universal matching: the attribute is returned, nothing filtered
            cond = self._condition(column, value, query.fuzzy)
            if _LEVEL_DEPTH[column.level] <= depth:
                own.append(cond)
            else:
                deeper[column.level].append(cond)

        source: FromClause  # a table or its joins
        if query.level == "study":
            source = st
            cols = [st.c.study_uid, st.c.attrs_json.label("study_attrs")]
            order: tuple[SAColumn[Any], ...] = (st.c.seq,)
            if deeper["series"]:
                own.append(exists(select(se.c.seq).where(se.c.study_uid == st.c.study_uid, *deeper["series"])))
            if deeper["instance"]:
                own.append(exists(select(ins.c.seq).where(ins.c.study_uid == st.c.study_uid, *deeper["instance"])))
        elif query.level == "series":
            source = se.join(st, st.c.study_uid == se.c.study_uid)
            cols = [se.c.study_uid, se.c.series_uid, st.c.attrs_json.label("study_attrs"), se.c.attrs_json.label("series_attrs")]
            order = (se.c.seq,)
            if deeper["instance"]:
                own.append(exists(select(ins.c.seq).where(ins.c.series_uid == se.c.series_uid, *deeper["instance"])))
        else:
            source = ins.join(se, se.c.series_uid == ins.c.series_uid).join(st, st.c.study_uid == ins.c.study_uid)
            cols = [
                ins.c.study_uid,
                ins.c.series_uid,
                ins.c.sop_uid,
                st.c.attrs_json.label("study_attrs"),
                se.c.attrs_json.label("series_attrs"),
                ins.c.attrs_json.label("instance_attrs"),
                ins.c.number_of_frames,
            ]
            order = (se.c.seq, ins.c.instance_number, ins.c.seq)
        stmt = select(*cols).select_from(source).where(and_(*own) if own else true())
        stmt = stmt.order_by(*order)
        if query.offset:
            stmt = stmt.offset(max(int(query.offset), 0))
        if query.limit is not None:
            stmt = stmt.limit(max(int(query.limit), 0))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
            hits = [self._merge(row, query.level) for row in rows]
            if query.level == "study":
                self._add_study_counts(conn, hits)
            elif query.level == "series":
                self._add_series_counts(conn, hits)
        return SearchResult(hits, unsupported)

    @staticmethod
    def _merge(row: Any, level: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for name in ("study_attrs", "series_attrs", "instance_attrs"):
            text = getattr(row, name, None)
            if text:
                attrs.update(json.loads(text))
        if level == "study":
            # The summary comes from one instance: series/instance values would mislead.
            for keyword in ("SeriesInstanceUID", "SOPInstanceUID", "Modality", "SeriesNumber", "InstanceNumber"):
                attrs.pop(_hex(keyword), None)
        elif level == "series":
            for keyword in ("SOPInstanceUID", "InstanceNumber"):
                attrs.pop(_hex(keyword), None)
        return attrs

    def _add_study_counts(self, conn: Connection, hits: list[dict[str, Any]]) -> None:
        if not hits:
            return
        st_uids = [h["0020000D"]["Value"][0] for h in hits]
        se, ins = self.series, self.instances_table
        n_series = _count_by(conn, se.c.study_uid, st_uids)
        n_inst = _count_by(conn, ins.c.study_uid, st_uids)
        modalities: dict[str, list[str]] = {}
        for uid, modality in conn.execute(
            select(se.c.study_uid, se.c.modality).where(se.c.study_uid.in_(st_uids)).distinct().order_by(se.c.modality)
        ):
            if modality:
                modalities.setdefault(uid, []).append(modality)
        classes: dict[str, list[str]] = {}
        study_classes = select(ins.c.study_uid, ins.c.sop_class_uid).where(ins.c.study_uid.in_(st_uids))
        for uid, sop_class in conn.execute(study_classes.distinct().order_by(ins.c.sop_class_uid)):
            classes.setdefault(uid, []).append(sop_class)
        for hit, uid in zip(hits, st_uids, strict=True):
            hit["00080061"] = {"vr": "CS", "Value": modalities[uid]} if modalities.get(uid) else {"vr": "CS"}
            hit["00080062"] = {"vr": "UI", "Value": classes.get(uid, [])}
            hit["00201206"] = {"vr": "IS", "Value": [n_series.get(uid, 0)]}
            hit["00201208"] = {"vr": "IS", "Value": [n_inst.get(uid, 0)]}

    def _add_series_counts(self, conn: Connection, hits: list[dict[str, Any]]) -> None:
        if not hits:
            return
        se_uids = [h["0020000E"]["Value"][0] for h in hits]
        ins = self.instances_table
        n_inst = _count_by(conn, ins.c.series_uid, se_uids)
        for hit, uid in zip(hits, se_uids, strict=True):
            hit["00201209"] = {"vr": "IS", "Value": [n_inst.get(uid, 0)]}

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({make_url(self.url).render_as_string(hide_password=True)!r})"


def _count_by(conn: Connection, key: SAColumn[str], uids: list[str]) -> dict[str, int]:
    """Rows per value of ``key`` among ``uids``, in one GROUP BY query (the QIDO count attributes)."""
    rows = conn.execute(select(key, func.count()).where(key.in_(uids)).group_by(key))
    return {uid: int(n) for uid, n in rows}


def _dumps_or_none(value: Any) -> str | None:
    """The stored JSON of an optional column (frame index, pixel description)."""
    return None if value is None else dicomjson.dumps(value)


def _hex(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    return f"{tag_for_keyword(keyword):08X}"


class SQLiteCatalog(SQLCatalog):
    """The embedded default: one SQLite file (WAL journal), or ``":memory:"``."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        url = "sqlite://" if self.path == ":memory:" else f"sqlite:///{Path(self.path).resolve()}"
        super().__init__(url)

    def _create_engine(self, url: str, **kwargs: Any) -> Engine:
        if url == "sqlite://":
            from sqlalchemy.pool import StaticPool

            # One shared connection, or every thread would see its own empty database.
            kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if url != "sqlite://":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            # DICOM matching is case-sensitive except for PN (which uses lower() explicitly).
            cur.execute("PRAGMA case_sensitive_like=ON")
            cur.close()

        return engine
