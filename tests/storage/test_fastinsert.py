"""Repository.record's precompiled executemany INSERT: counts and stored values, on both databases."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import insert

from storage.incidents import FIELD_NAMES, IncidentRecord, new_incident_id
from storage.models import Incident
from storage.repository import IncidentFilter, Repository
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]


def _retry(record: IncidentRecord) -> IncidentRecord:
    """The same bounce again (same fingerprint) under a new id."""
    return dataclasses.replace(record, id=new_incident_id())


def _other_bounce_same_id(record: IncidentRecord) -> IncidentRecord:
    return dataclasses.replace(record, fingerprint="f" * 64)


def test_count_skips_duplicates_within_the_batch_and_already_stored(repo: Repository) -> None:
    first, second, third = records_for(3)
    assert repo.record([first]) == 1
    batch = [
        second,
        _retry(second),  # same fingerprint as an earlier row of this batch
        second,  # same id and fingerprint
        _other_bounce_same_id(second),  # same id as an earlier row of this batch
        first,  # already stored
        _retry(first),
        third,
    ]
    assert repo.record(batch) == 2
    assert repo.record(batch) == 0
    assert repo.record([third]) == 0
    assert repo.count(IncidentFilter()) == 3
    assert [repo.get(r.id) for r in (first, second, third)] == [first, second, third]


def test_single_record_batches_count_one_or_zero(repo: Repository) -> None:
    [record] = records_for(1)
    assert repo.record([record]) == 1
    assert repo.record([record]) == 0
    assert repo.record([_retry(record)]) == 0
    assert repo.record([]) == 0


def test_stores_what_a_sqlalchemy_insert_stores(repo: Repository) -> None:
    """The driver gets the values SQLAlchemy's own type processing would give it."""
    # Whole seconds (no microseconds) in a non-UTC zone: SQLite keeps SQLAlchemy's text format.
    at = datetime(2025, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    [fast] = records_for(1, start=at)
    fast = dataclasses.replace(fast, annotated=True, envelope_sender="", helo=None)
    reference = dataclasses.replace(fast, id=new_incident_id(), fingerprint="0" * 64)
    assert repo.record([fast]) == 1
    with repo.engine.begin() as conn:
        conn.execute(insert(Incident), [{name: getattr(reference, name) for name in FIELD_NAMES}])
    columns = ", ".join(name for name in FIELD_NAMES if name not in {"id", "fingerprint"})
    with repo.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT {columns} FROM incidents ORDER BY fingerprint").all()
    assert len(rows) == 2 and tuple(rows[0]) == tuple(rows[1])
    stored = repo.get(fast.id)
    assert stored == dataclasses.replace(fast, recorded_at=at.astimezone(UTC))
    window = {r.id for r in repo.iterate(IncidentFilter(since=at, until=at + timedelta(seconds=1)))}
    assert window == {fast.id, reference.id}
    assert not list(repo.iterate(IncidentFilter(until=at)))
