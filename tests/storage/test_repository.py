"""Idempotent inserts, filters, pagination, stats, purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from storage.incidents import IncidentRecord, new_incident_id
from storage.models import RecipientTraffic
from storage.problems import record_traffic
from storage.repository import IncidentFilter, InvalidCursor, Repository
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]


def test_record_is_idempotent_under_retries(repo: Repository) -> None:
    records = records_for(5, recipients_per_bounce=2)
    assert repo.record(records) == 10
    assert repo.record(records) == 0
    # An upstream retry: same bounce, new ids, same fingerprints.
    retried = [IncidentRecord.from_dict({**r.to_dict(), "id": new_incident_id()}) for r in records]
    assert repo.record(retried[:3] + records_for(1, tag="new")) == 1
    assert repo.count(IncidentFilter()) == 11
    stored = repo.get(records[0].id)
    assert stored == records[0]


def test_oversized_and_nul_values_are_stored_not_refused(repo: Repository) -> None:
    [record] = records_for(1)
    odd = IncidentRecord.from_dict(
        {**record.to_dict(), "failed_recipient": "x" * 400 + "@e.example", "diagnostic": "a\x00b"}
    )
    assert repo.record([odd]) == 1
    got = repo.get(odd.id)
    assert got is not None and got.diagnostic == "ab" and len(got.failed_recipient or "") == 320


def test_filters(repo: Repository) -> None:
    start = datetime(2025, 5, 1, tzinfo=UTC)
    records = records_for(30, start=start, step=timedelta(hours=1))
    repo.record(records)

    def ids(**kw: object) -> set[str]:
        return {r.id for r in repo.iterate(IncidentFilter(**kw))}  # type: ignore[arg-type]

    assert len(ids()) == 30
    assert ids(since=start + timedelta(hours=10), until=start + timedelta(hours=20)) == {
        r.id for r in records[10:20]
    }
    assert ids(recipient="GROUP3-0@contoso0.example") == {
        r.id for r in records if r.failed_recipient == "group3-0@contoso0.example"
    }
    assert ids(domain="contoso1.example") == {
        r.id for r in records if r.recipient_domain == "contoso1.example"
    }
    assert ids(sender="sender1@fabrikam1.example") == {
        r.id for r in records if r.sender == "sender1@fabrikam1.example"
    }
    assert ids(sender="fabrikam0.example") == {
        r.id for r in records if r.sender_domain == "fabrikam0.example"
    }
    assert ids(variant="mailbox") == {r.id for r in records if r.variant == "mailbox"}
    assert ids(code="5.7.133") == {r.id for r in records}
    assert ids(code="5.7.12") == set()


def test_cursor_pagination_walks_everything_once(repo: Repository) -> None:
    records = records_for(23)
    repo.record(records)
    seen: list[str] = []
    cursor = None
    while True:
        page = repo.query(IncidentFilter(), limit=5, cursor=cursor)
        seen += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted((r.id for r in records), reverse=True)
    with pytest.raises(InvalidCursor):
        repo.query(IncidentFilter(), limit=5, cursor="not-a-cursor")


def test_stats(repo: Repository) -> None:
    start = datetime(2025, 5, 1, 22, tzinfo=UTC)
    records = records_for(6, start=start, step=timedelta(hours=1))  # 22:00 .. 03:00 next day
    repo.record(records)
    days = repo.stats("day", IncidentFilter())
    assert [(d.key, d.count) for d in days] == [("2025-05-01", 2), ("2025-05-02", 4)]
    assert days[0].first_seen == start and days[1].last_seen == start + timedelta(hours=5)
    variants = {s.key: s.count for s in repo.stats("variant", IncidentFilter())}
    assert variants == {"group": 3, "mailbox": 3}
    by_sender = repo.stats("sender-domain", IncidentFilter(since=start + timedelta(hours=2)))
    assert sum(s.count for s in by_sender) == 4
    assert {s.key for s in repo.stats("domain", IncidentFilter())} == {
        f"contoso{i}.example" for i in range(3)
    }
    assert repo.stats("recipient", IncidentFilter())[0].count >= 1
    with pytest.raises(ValueError, match="unknown stats key"):
        repo.stats("colour", IncidentFilter())


def test_purge_in_chunks(repo: Repository) -> None:
    now = datetime.now(UTC)
    old = records_for(12, start=now - timedelta(days=40), step=timedelta(minutes=1))
    new = records_for(3, tag="n", start=now - timedelta(days=1))
    repo.record(old + new)
    progress: list[int] = []
    assert repo.purge(now - timedelta(days=30), chunk=5, progress=progress.append) == 12
    assert progress == [5, 5, 2]
    assert {r.id for r in repo.iterate(IncidentFilter())} == {r.id for r in new}


def test_purge_forgets_traffic_counts_no_incident_needs(repo: Repository) -> None:
    now = datetime.now(UTC)
    old = records_for(12, start=now - timedelta(days=40))
    new = records_for(3, tag="n", start=now - timedelta(days=1))  # recipients of old[0:3] again
    repo.record(old + new)
    long_ago, lately = now - timedelta(days=40), now - timedelta(days=2)
    resets = {
        old[0].failed_recipient: long_ago,  # still named by a new incident: kept
        old[5].failed_recipient: long_ago,  # named only by purged incidents: forgotten
        old[6].failed_recipient: lately,  # its last bounce is within retention: kept
        "never-recorded@contoso.example": long_ago,  # no incident at all: forgotten
    }
    assert None not in resets
    record_traffic(repo.engine, resets, {})
    assert repo.purge(now - timedelta(days=30)) == 12
    with repo.engine.connect() as conn:
        kept = set(conn.scalars(select(RecipientTraffic.recipient)))
    assert kept == {old[0].failed_recipient, old[6].failed_recipient}
    assert repo.purge_traffic(now) == 1  # old[6]'s count: no incident names it any more
