"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a temporary
data directory, a free loopback port, stopped and removed at the end.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user
(the Debian package creates it) in a directory chowned to it; as anyone else it runs as
that user. The socket lives in the data directory too, so nothing outside it is touched.
The server is tuned for tests (no fsync): its data is thrown away anyway.

Without ``initdb`` the caller skips, except in CI (``CI`` set), where a missing
PostgreSQL is a failure: ``scripts/install.sh`` installs it there.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "dcmstream"
_names = itertools.count()


def find_bin(name: str) -> str | None:
    """A PostgreSQL program on PATH, else the newest under /usr/lib/postgresql/*/bin (Debian)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str | None:
    """Why no server can be started here (None: it can)."""
    if find_bin("initdb") is None or find_bin("pg_ctl") is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; :meth:`database` gives each test a fresh database on it."""

    directory: Path
    port: int
    start_seconds: float

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None) -> str:
        """CREATE DATABASE (a fresh, empty one) and return its URL."""
        name = name or f"t{os.getpid()}_{next(_names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)


def _run(args: list[str], as_user: str | None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        user=as_user,
        group=as_user,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        **kwargs,
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a server in a temporary directory; stop it and delete everything on exit."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    assert initdb is not None and pg_ctl is not None
    as_user = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: its parents are private to root, and the postgres
    # user must reach the directory (the socket path must also stay short).
    directory = Path(tempfile.mkdtemp(prefix="dcmstream-pg-"))
    data = directory / "data"
    started = False
    try:
        if as_user is not None:
            entry = pwd.getpwnam(as_user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        t0 = time.perf_counter()
        # UTF-8 and the C.UTF-8 locale: the same everywhere, whatever the caller's LANG.
        res = _run(
            [initdb, "-D", str(data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            as_user,
            cwd=str(directory),
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            options = (
                f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            res = _run(
                [pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "server.log"), "-w", "-t", "60", "start"],
                as_user,
                cwd=str(directory),
            )
            if res.returncode == 0:
                started = True
                break
        if not started:
            log = (directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {res.stderr.strip()}\n{log}")
        yield PostgresServer(directory, port, time.perf_counter() - t0)
    finally:
        if started:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], as_user, cwd=str(directory))
        shutil.rmtree(directory, ignore_errors=True)
