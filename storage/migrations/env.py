"""Alembic environment for bouncegw's incident store.

Normally run through :func:`storage.db.upgrade`, which hands over an open connection in
``config.attributes["connection"]``; ``alembic -c ...`` with ``sqlalchemy.url`` works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from storage.db import make_engine
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several gateways may start at once against one database: one migrates, the
            # others wait here and then find the schema at head.
            connection.execute(text("SELECT pg_advisory_xact_lock(5712133)"))
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run `bouncegw db upgrade`")
run_migrations_online()
