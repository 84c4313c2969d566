"""alembic's entry point for the catalog migrations.

Run by :func:`dcmstream.archive.migrations.upgrade` with the catalog's own connection
(``config.attributes["connection"]``, already holding the migration lock), or by the
``alembic`` command line with ``-x url=DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.engine import Connection

from dcmstream.archive.catalog import normalize_url, schema_metadata


def _run(connection: Connection, target: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target,
        # SQLite alters a table by copying it: alembic's batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=connection.dialect.name != "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    target = schema_metadata()
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection, target)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=postgresql://... or sqlite:///...")
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn, target)
        conn.commit()


# alembic loads this file by path to run it; importing it as a module of the package
# (tests walking dcmstream, documentation tools) must not touch any database.
if __name__ != "dcmstream.archive.migrations.env":
    _main()
