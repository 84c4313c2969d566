"""The catalog's schema history (alembic revisions in ``versions/``) and :func:`upgrade`.

Every :class:`~dcmstream.archive.catalog.SQLCatalog` calls :func:`upgrade` when it
opens a database: a fresh database gets the whole history, an older one the missing
revisions, one at head costs one ``SELECT``. Several processes opening the same
database at once are serialized by a lock (a PostgreSQL advisory lock held for the
migration's transaction; SQLite's write lock via ``BEGIN IMMEDIATE``), so exactly one
of them migrates and the others find the schema at head.

Catalogs made before alembic was used (the tables exist, ``alembic_version`` does
not) are stamped with :data:`BASELINE`, the revision equal to those tables, and then
upgraded like any other database.

A new revision (after changing the tables in ``catalog.py``)::

    alembic -c src/dcmstream/archive/migrations/alembic.ini -x url=sqlite:////tmp/c.sqlite upgrade head
    alembic -c src/dcmstream/archive/migrations/alembic.ini -x url=sqlite:////tmp/c.sqlite \\
        revision --autogenerate -m "what changed"

``tests/archive/test_catalog.py`` checks that a database at head matches the tables
the catalog queries.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from ...errors import DcmstreamError

__all__ = ["CatalogMigrationError", "BASELINE", "MIGRATIONS_DIR", "alembic_config", "head", "current", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent


class CatalogMigrationError(DcmstreamError, RuntimeError):
    """The schema history shipped with dcmstream is broken (a packaging bug)."""


#: The revision whose tables are those of catalogs made before alembic (stamped, not re-created).
BASELINE = "0001"
# pg_advisory_xact_lock key: "dcmscat" as a signed 64-bit number; scoped to one database.
_LOCK_KEY = int.from_bytes(b"dcmscat\0", "big") - (1 << 63)


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config for the package's migrations; ``connection`` is used by ``env.py``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str:
    """The newest revision (the history is linear: one head)."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:  # pragma: no cover - a branched history is a packaging bug
        raise CatalogMigrationError(f"the catalog migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    heads = MigrationContext.configure(connection).get_current_heads()
    return heads[0] if len(heads) == 1 else None


def _lock(connection: Connection) -> None:
    """Begin a transaction that holds the database's migration lock until it ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # pysqlite begins transactions lazily (before the first DML): take the write lock
        # now, so a second process waits (busy timeout) until this one has committed.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: Engine) -> None:
    """Bring the database to :func:`head`, once, whoever else is opening it right now."""
    with engine.connect() as conn:
        if current(conn) == head():
            return
        conn.rollback()
        _lock(conn)
        try:
            tables = set(inspect(conn).get_table_names())
            cfg = alembic_config(conn)
            if "alembic_version" not in tables and "instances" in tables:
                command.stamp(cfg, BASELINE)  # a catalog from before alembic: its tables are BASELINE's
            command.upgrade(cfg, "head")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
