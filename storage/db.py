"""Engines, SQLite pragmas, Alembic upgrades and the start-up schema check.

- :func:`make_engine(url) <make_engine>`: an Engine with the settings bouncegw relies on
  (SQLite: WAL, ``synchronous=FULL`` so a commit is durable, ``busy_timeout``; PostgreSQL:
  pre-ping, connect timeout, UTC session time zone for ``stats --by day``).
- :func:`upgrade(url) <upgrade>`: ``bouncegw db upgrade``; runs the migrations shipped in
  ``storage/migrations`` (no alembic.ini needed).
- :func:`check_schema(url) <check_schema>`: what ``serve`` calls before listening. An out-of-date
  schema raises :class:`SchemaOutOfDate` with the command that fixes it; the embedded SQLite
  default (any ``sqlite`` URL) creates and upgrades itself instead.
- :func:`check_schema_unless_down(url) <check_schema_unless_down>`: the same, except that a
  database *server* that does not answer is not fatal: it returns the reason instead, and the
  gateway starts and journals until it answers (the recorder checks the schema then).
- :func:`is_unavailable(exc) <is_unavailable>` and :func:`describe_error(url, exc)
  <describe_error>`: "the database did not answer" as opposed to a mistake, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

#: How long SQLite waits for another writer's lock before "database is locked" (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Seconds to wait for a PostgreSQL connection (psycopg ``connect_timeout``).
PG_CONNECT_TIMEOUT = 5


class SchemaOutOfDate(Exception):
    """The database schema is not the one this bouncegw needs; the message says what to run."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing of its contents
        return "(the configured database URL)"


def is_unavailable(exc: BaseException) -> bool:
    """The database did not answer (down, unreachable, refusing, dropped the connection)."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def describe_error(url: str, exc: BaseException) -> str:
    """One line: which database, whether it answered, and the driver's first line of the error."""
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    reason = lines[0] if lines else type(original).__name__
    state = "unavailable" if is_unavailable(exc) else "error"
    return f"database {safe_url(url)} {state}: {reason}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        # WAL lets readers (CLI, API) run while the gateway writes; FULL makes each commit
        # durable (fsync of the WAL), which is what Recorder.submit promises.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def _pg_utc(dbapi_conn: Any, _record: Any) -> None:
    # date(recorded_at) must mean the UTC day whatever the server's TimeZone is.
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SET TIME ZONE 'UTC'")
    finally:
        cursor.close()
    dbapi_conn.commit()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``url`` with bouncegw's pragmas and timeouts."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's implicit BEGIN is off; SQLAlchemy's "begin" emits it so DDL (migrations) and
        # DML share one real transaction. Writers only insert or delete-by-subquery, so a deferred
        # BEGIN never has to upgrade a read lock (which would fail at once, ignoring busy_timeout).
        event.listen(engine, "connect", _sqlite_autocommit_driver)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT)
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _pg_utc)
        return engine
    return create_engine(url, **kwargs)


def alembic_config(url: str) -> Config:
    """A programmatic Alembic Config pointing at the migrations shipped in this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str, engine: Engine | None = None) -> str | None:
    """The revision the database is at (None: no bouncegw schema yet)."""
    own = engine is None
    eng = engine or make_engine(url)
    try:
        with eng.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if own:
            eng.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (``bouncegw db upgrade``)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """Revert the migrations down to ``revision`` (``base``: none); for operators and tests."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def check_schema(url: str, *, auto_upgrade_sqlite: bool = True) -> None:
    """Refuse to run on a schema that is not at head (SQLite may upgrade itself)."""
    if auto_upgrade_sqlite and is_sqlite(url):
        upgrade(url)
        return
    head = head_revision()
    current = current_revision(url)
    if current == head:
        return
    safe = safe_url(url)
    if current is None:
        raise SchemaOutOfDate(f"the database {safe} has no bouncegw schema; run `bouncegw db upgrade` first")
    script = ScriptDirectory.from_config(alembic_config(url))
    try:
        known = script.get_revision(current) is not None
    except (ResolutionError, CommandError):
        known = False
    if not known:
        raise SchemaOutOfDate(
            f"the database {safe} is at schema revision {current}, which this bouncegw does not know "
            f"(it needs {head}); is a newer bouncegw sharing this database?"
        )
    raise SchemaOutOfDate(
        f"the database {safe} is at schema revision {current} but this bouncegw needs {head}; "
        "run `bouncegw db upgrade`"
    )


def check_schema_unless_down(url: str) -> str | None:
    """:func:`check_schema`, but a database server that does not answer returns the reason.

    Only server databases (PostgreSQL) count as "down": a SQLite file that cannot be opened is a
    mistake in the configuration, and stays fatal. A reachable database with the wrong schema
    raises :class:`SchemaOutOfDate` as before.
    """
    if is_sqlite(url):
        check_schema(url)
        return None
    try:
        check_schema(url)
    except Exception as exc:
        if is_unavailable(exc):
            return describe_error(url, exc)
        raise
    return None
