"""Fixtures and builders shared by the storage, API and incidents CLI tests.

Test modules load this with ``pytest_plugins = ["tests.storage_fixtures"]``. ``db_url`` runs a
test once on a fresh SQLite file and once on a fresh schema of the PostgreSQL server
(``BOUNCEGW_TEST_PG_URL``, default the local server's ``test`` database); without PostgreSQL the
PostgreSQL half fails when ``CI=true`` and is skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from storage.db import upgrade
from storage.repository import Repository
from tests.processes import free_port

PG_URL = os.environ.get("BOUNCEGW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _libpq(url: str) -> str:
    u = make_url(url)
    return f"host={u.host} port={u.port or 5432} dbname={u.database} user={u.username} connect_timeout=3"


def postgres_or_skip() -> str:
    """The server URL, or fail (CI=true) / skip when it cannot be reached."""
    try:
        psycopg.connect(_libpq(PG_URL)).close()
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL not reachable at {make_url(PG_URL).render_as_string(hide_password=True)}: {exc}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return PG_URL


def with_search_path(url: str, schema: str) -> str:
    return str(
        make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    )


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A URL whose tables land in a fresh schema of the test database (dropped afterwards)."""
    base = postgres_or_skip()
    schema = "bgw_" + uuid.uuid4().hex[:12]
    with psycopg.connect(_libpq(base), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(_libpq(base), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'incidents.sqlite3'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def migrated_url(db_url: str) -> str:
    upgrade(db_url)
    return db_url


@pytest.fixture
def repo(migrated_url: str) -> Iterator[Repository]:
    repository = Repository.from_url(migrated_url)
    yield repository
    repository.close()


# -- a throwaway PostgreSQL cluster that tests may stop and start ---------------------------------


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} not installed (Debian package postgresql)")
    pytest.skip(f"{name} not installed")
    raise AssertionError  # unreachable, for type checkers


class ThrowawayPostgres:
    """A private cluster on its own port and data directory (the shared server is never touched)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bouncegw-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    postgres_or_skip()  # same CI rule: the binaries come with the server
    pg = ThrowawayPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()
