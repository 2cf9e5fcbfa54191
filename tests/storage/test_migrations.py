"""Migrations from empty, the start-up schema check, and models matching the migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.db import (
    SchemaOutOfDate,
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    is_sqlite,
    make_engine,
    upgrade,
)
from storage.models import Base

pytest_plugins = ["tests.storage_fixtures"]


def test_upgrade_from_empty_creates_the_table_at_head(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    engine = make_engine(db_url)
    try:
        names = {c["name"] for c in inspect(engine).get_columns("incidents")}
        uniques = inspect(engine).get_unique_constraints("incidents")
    finally:
        engine.dispose()
    assert {"id", "fingerprint", "failed_recipient", "original_subject", "instance"} <= names
    assert any(u["column_names"] == ["fingerprint"] for u in uniques)
    upgrade(db_url)  # a second upgrade is a no-op
    assert current_revision(db_url) == head_revision()


def test_models_match_the_migrations(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_empty_database_is_refused_except_sqlite(db_url: str) -> None:
    if is_sqlite(db_url):
        check_schema(db_url)  # the embedded default creates itself
        assert current_revision(db_url) == head_revision()
        return
    with pytest.raises(SchemaOutOfDate, match="bouncegw db upgrade"):
        check_schema(db_url)


def test_out_of_date_schema_is_detected(migrated_url: str) -> None:
    downgrade(migrated_url, "base")  # back to before the first revision
    with pytest.raises(SchemaOutOfDate, match="run `bouncegw db upgrade`"):
        check_schema(migrated_url, auto_upgrade_sqlite=False)
    upgrade(migrated_url)
    check_schema(migrated_url, auto_upgrade_sqlite=False)


def test_unknown_newer_revision_is_reported(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=r"ffff_future.*does not know"):
        check_schema(migrated_url, auto_upgrade_sqlite=False)


def test_reported_status_column_is_added_and_removed_with_rows_kept(db_url: str) -> None:
    upgrade(db_url, "0002")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO incidents"
                    " (id, fingerprint, recorded_at, envelope_sender, status, annotated) VALUES"
                    " ('01J0000000000000000000000A', 'f1', '2026-11-30 00:00:00', '', '5.7.133', false)"
                )
            )
        upgrade(db_url)
        assert "reported_status" in {c["name"] for c in inspect(engine).get_columns("incidents")}
        with engine.connect() as conn:
            row = conn.execute(text("SELECT status, reported_status FROM incidents")).one()
        assert tuple(row) == ("5.7.133", None)
        downgrade(db_url, "0002")
        engine.dispose()
        assert "reported_status" not in {c["name"] for c in inspect(engine).get_columns("incidents")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT status FROM incidents")).scalar_one() == "5.7.133"
    finally:
        engine.dispose()
