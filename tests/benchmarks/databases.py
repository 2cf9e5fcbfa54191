"""The two databases a benchmark measures: a fresh SQLite file and a scratch PostgreSQL schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The suite's PostgreSQL (127.0.0.1:5432, trust auth, database ``test``), as the tests find it.
PG_URL = os.environ.get("BOUNCEGW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def on_both(tmp: Path, name: str, measure: Callable[[str], Any]) -> dict[str, Any]:
    """``measure(url)`` on SQLite and on PostgreSQL; a server that cannot be reached is reported."""
    out: dict[str, Any] = {"sqlite": measure(f"sqlite:///{tmp / f'{name}.sqlite3'}")}
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(PG_URL)
        dsn = f"host={u.host} port={u.port or 5432} dbname={u.database} user={u.username} connect_timeout=3"
        # A schema of its own, dropped afterwards: the tests' tables in `test` stay untouched.
        schema = "bench_" + uuid.uuid4().hex[:12]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            url = u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
            out["postgresql"] = measure(url)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    except Exception as exc:  # unreachable server: report it, the rest of the bench still counts
        out["postgresql"] = f"not measured: {exc}"
    return out
