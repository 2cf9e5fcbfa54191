"""The Recorder: durable submits, group commit, the journal during outages, exactly-once replay."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from storage.db import upgrade
from storage.journal import LINE_FLOOR, Journal
from storage.models import RecipientTraffic
from storage.problems import record_traffic
from storage.recorder import Recorder, StorageUnavailable, Tally
from storage.repository import IncidentFilter, Repository
from tests.processes import wait_until
from tests.storage_builders import count_incidents, records_for

if TYPE_CHECKING:
    from storage.incidents import IncidentRecord
    from tests.storage_fixtures import ThrowawayPostgres

pytest_plugins = ["tests.storage_fixtures"]


def tally(rec: Recorder) -> Tally:
    """The counts of ``rec``'s events (every recorder here keeps the default observer)."""
    assert isinstance(rec.events, Tally)
    return rec.events


def recorder(url: str, tmp_path: Path, **kw: object) -> Recorder:
    options: dict[str, object] = {"db_timeout": 0.5, "retry_interval": 0.1} | kw
    return Recorder(url, tmp_path / "journal" / "incidents.jsonl", **options)  # type: ignore[arg-type]


async def test_concurrent_submits_are_durable_once(migrated_url: str, tmp_path: Path) -> None:
    rec = recorder(migrated_url, tmp_path, db_timeout=30.0)
    await rec.start()
    records = records_for(60)
    await asyncio.gather(*(rec.submit([r]) for r in records))
    assert count_incidents(migrated_url) == 60  # visible as soon as submit returned
    await rec.submit(records[:10])  # a retry of the same bounces
    await rec.stop()
    assert count_incidents(migrated_url) == 60
    assert tally(rec).stored == 60 and tally(rec).journaled == 0 and tally(rec).db_errors == 0


async def test_locked_sqlite_uses_the_journal_and_drains_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    rec = recorder(url, tmp_path)
    await rec.start()
    locker = sqlite3.connect(tmp_path / "gw.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    records = records_for(20, recipients_per_bounce=2)
    for i in range(0, 40, 8):
        await rec.submit(records[i : i + 8])  # returns although the database cannot be written
    assert tally(rec).journaled == 40 and rec.journal_backlog == 40 and not rec.db_available
    locker.execute("COMMIT")
    locker.close()
    await wait_until(lambda: rec.journal_backlog == 0 and rec.db_available, "the journal to drain")
    await rec.stop()
    assert count_incidents(url) == 40
    # The first batch's write timed out but may still have committed once the lock went: its
    # journalled copy is then skipped by the unique fingerprint.
    assert 32 <= tally(rec).replayed <= 40
    assert not (tmp_path / "journal" / "incidents.jsonl.replaying").exists()


async def test_full_journal_with_database_down_refuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    rec = recorder(url, tmp_path, journal_max_bytes=4096)
    await rec.start()
    locker = sqlite3.connect(tmp_path / "gw.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    accepted = 0
    with pytest.raises(StorageUnavailable, match="journal"):
        for record in records_for(20):
            await rec.submit([record])
            accepted += 1
    assert 0 < accepted < 20 and tally(rec).rejected == 1
    assert rec.journal_backlog == accepted
    locker.execute("COMMIT")
    locker.close()
    await wait_until(lambda: rec.journal_backlog == 0, "the journal to drain")
    await rec.stop()
    assert count_incidents(url) == accepted


async def test_journal_survives_a_restart_and_a_repeated_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    journal = tmp_path / "journal" / "incidents.jsonl"
    first = recorder(url, tmp_path)
    await first.start()
    locker = sqlite3.connect(tmp_path / "gw.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    records = records_for(15)
    await first.submit(records)
    await first.stop()  # the gateway stops while the database is still unavailable
    locker.execute("COMMIT")
    locker.close()
    assert journal.exists() or journal.with_name("incidents.jsonl.replaying").exists()
    kept = tmp_path / "kept.jsonl"
    shutil.copy(journal if journal.exists() else journal.with_name("incidents.jsonl.replaying"), kept)

    second = recorder(url, tmp_path)
    await second.start()  # replays what the previous run left
    # The first run's write that timed out is still waiting for the lock in its thread and may
    # commit its 15 once the locker is gone, before or during this replay (the idempotent insert
    # makes that harmless): so "replayed" is not always 15, but the journal is emptied.
    assert second.journal_backlog == 0 and tally(second).replayed <= 15
    await second.stop()
    assert count_incidents(url) == 15

    # A crash after the inserts but before the journal was deleted: the replay repeats harmlessly.
    shutil.copy(kept, journal.with_name("incidents.jsonl.replaying"))
    with journal.open("ab") as fh:
        fh.write(b'{"id": "torn')  # a line cut short by the crash
    third = recorder(url, tmp_path)
    await third.start()
    assert third.journal_backlog == 0 and tally(third).replayed == 0
    await third.stop()
    assert count_incidents(url) == 15


async def test_journals_of_workers_that_are_gone_are_adopted(tmp_path: Path) -> None:
    """Run with two workers while the database is down, restart as one process: nothing is lost."""
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    locker = sqlite3.connect(tmp_path / "gw.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    workers = [
        Recorder(url, tmp_path / "journal" / f"incidents.w{i}.jsonl", db_timeout=0.5, retry_interval=60)
        for i in range(2)
    ]
    batches = [records_for(4, tag="w0"), records_for(6, tag="w1")]
    for worker, batch in zip(workers, batches, strict=True):
        await worker.start()
        await worker.submit(batch)
    for worker in workers:
        await worker.stop()
    journals = tmp_path / "journal"
    left = [
        p for p in journals.iterdir() if p.name.startswith("incidents.w") and not p.name.endswith(".lock")
    ]
    assert sum(len(Journal.read(p)) for p in left) == 10  # both workers journaled everything
    locker.execute("COMMIT")
    locker.close()

    single = recorder(url, tmp_path)  # journal_path incidents.jsonl: the w0/w1 files are siblings
    await single.start()
    await single.stop()
    assert count_incidents(url) == 10
    # (a worker's database thread may still commit its batch late; the journal copy is then a no-op)
    assert [p.name for p in journals.iterdir() if not p.name.endswith(".lock")] == []


def left_journal(path: Path, records: list[IncidentRecord], *, mid_replay: bool = False) -> None:
    """A journal at ``path`` as a stopped (or, ``mid_replay``, crashed while replaying) process leaves it."""
    journal = Journal(path, 1 << 20)
    journal.append(records)
    if mid_replay:
        journal.take()  # renamed to <path>.replaying, never deleted
    journal.close()


async def test_a_worker_leaves_the_journals_of_its_live_siblings_alone(tmp_path: Path) -> None:
    """Worker 0 of two must not take worker 1's journal: worker 1 would find it locked at its start."""
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    journals = tmp_path / "journal"
    left_journal(journals / "incidents.w1.jsonl", records_for(3, tag="w1"))  # live sibling's backlog
    left_journal(journals / "incidents.w2.jsonl", records_for(5, tag="w2"))  # of an earlier, larger run
    worker0 = Recorder(url, journals / "incidents.w0.jsonl", db_timeout=0.5, retry_interval=60, workers=2)
    await worker0.start()
    await worker0.stop()
    assert count_incidents(url) == 5  # worker 2 is gone: its journal is adopted
    assert not (journals / "incidents.w2.jsonl").exists()
    # Worker 1's journal is untouched (it replays it itself) and free for worker 1 to open.
    assert len(Journal.read(journals / "incidents.w1.jsonl")) == 3
    Journal(journals / "incidents.w1.jsonl", 1 << 20).close()


async def test_a_journal_left_mid_replay_is_adopted(tmp_path: Path) -> None:
    """A worker killed while replaying leaves only ``<journal>.replaying``: still a sibling to adopt."""
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    journals = tmp_path / "journal"
    left_journal(journals / "incidents.w3.jsonl", records_for(4, tag="w3"), mid_replay=True)
    assert [p.name for p in journals.glob("*.jsonl*") if not p.name.endswith(".lock")] == [
        "incidents.w3.jsonl.replaying"
    ]
    single = recorder(url, tmp_path)
    await single.start()
    await single.stop()
    assert count_incidents(url) == 4
    assert not (journals / "incidents.w3.jsonl.replaying").exists()


async def test_the_full_check_counts_room_for_a_first_incident(tmp_path: Path) -> None:
    """With the database down before any line was journalled, an incident still needs room."""
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    rec = recorder(url, tmp_path, journal_max_bytes=LINE_FLOOR, retry_interval=60)
    await rec.start(unavailable="the database is down")
    try:
        assert not rec.db_available and rec.journal_bytes == 0
        assert rec.can_accept(1)
        assert not rec.can_accept(2)  # two incidents of at least LINE_FLOOR bytes each do not fit
    finally:
        await rec.stop()


async def test_the_full_check_measures_a_journal_left_by_an_earlier_run(tmp_path: Path) -> None:
    """After a restart with the database down, the longest line already journalled is the estimate."""
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    path = tmp_path / "journal" / "incidents.jsonl"
    (first,) = records_for(1)
    long = dataclasses.replace(first, diagnostic="x" * (2 * LINE_FLOOR))  # a line longer than the floor
    left_journal(path, [long])
    used = path.stat().st_size
    assert used > 2 * LINE_FLOOR
    # Room for one more line of that length, but not for two.
    rec = recorder(url, tmp_path, journal_max_bytes=3 * used - 1, retry_interval=60)
    await rec.start(unavailable="the database is down")
    try:
        assert rec.journal_bytes == used and rec.journal_backlog == 1
        assert rec.can_accept(1)
        assert not rec.can_accept(2)
    finally:
        await rec.stop()


@pytest.mark.postgres
async def test_postgres_stopped_mid_run(throwaway_postgres: ThrowawayPostgres, tmp_path: Path) -> None:
    pg = throwaway_postgres
    url = pg.url
    await asyncio.to_thread(upgrade, url)
    rec = recorder(url, tmp_path, db_timeout=5.0, retry_interval=0.2)
    await rec.start()
    records = records_for(30, recipients_per_bounce=2)
    await rec.submit(records[:20])
    assert tally(rec).stored == 20
    await asyncio.to_thread(pg.stop)
    for i in range(20, 60, 10):
        await rec.submit(records[i : i + 10])  # mail keeps flowing while the database is down
    assert rec.journal_backlog == 40 and not rec.db_available and tally(rec).db_errors >= 1
    await rec.submit(records[:10])  # an upstream retry of already stored bounces, journalled too
    await asyncio.to_thread(pg.start)
    await wait_until(lambda: rec.journal_backlog == 0 and rec.db_available, "the journal to drain")
    await rec.submit(records[50:])  # stored directly again (retries: nothing new)
    await rec.stop()
    assert await asyncio.to_thread(count_incidents, url) == 60
    assert tally(rec).replayed == 40


async def test_retention_purges_old_incidents_and_the_counts_they_leave(
    migrated_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = records_for(12, start=now - timedelta(days=40))
    new = records_for(3, tag="n", start=now - timedelta(days=1))  # recipients of old[0:3] again
    repo = Repository.from_url(migrated_url)
    try:
        repo.record(old + new)
        record_traffic(repo.engine, {r.failed_recipient or "": now - timedelta(days=40) for r in old}, {})

        def traffic() -> set[str]:
            with repo.engine.connect() as conn:
                return set(conn.scalars(select(RecipientTraffic.recipient)))

        assert len(traffic()) == 12
        # retry_interval paces the maintainer: the first purge runs on its first round.
        rec = recorder(migrated_url, tmp_path, retention_days=30)
        await rec.start()
        try:
            await wait_until(lambda: len(traffic()) == 3, "the hourly purge to run")
        finally:
            await rec.stop()
        assert {r.id for r in repo.iterate(IncidentFilter())} == {r.id for r in new}
        assert traffic() == {r.failed_recipient for r in new}
    finally:
        repo.close()
