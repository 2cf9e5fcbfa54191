"""The relay's count of mail to refusing recipients (gateway.console.watch) on a real database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select

from gateway.console.watch import TrafficWatch
from gateway.pipeline import Processed
from gateway.relay import Reply
from storage.models import RecipientTraffic
from storage.repository import Repository
from tests.report_builders import context, family_report
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]

T = TypeVar("T")
OK = Reply(250, "2.0.0 queued")
LATER = Reply(451, "4.3.0 try again")
ORDINARY = Processed(original=b"Subject: hi\r\n\r\nhello\r\n", data=b"Subject: hi\r\n\r\nhello\r\n")


class Runner:
    """Stands in for Recorder.call: a worker thread, or a database that fails while ``down``."""

    def __init__(self) -> None:
        self.down = False

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.down:
            raise ConnectionError("database down")
        return await asyncio.to_thread(fn, *args, **kwargs)


def traffic(repo: Repository) -> dict[str, tuple[int, datetime]]:
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(RecipientTraffic.recipient, RecipientTraffic.relayed, RecipientTraffic.since)
        )
        return {r: (n, since) for r, n, since in rows}


async def test_counts_only_known_recipients_and_restarts_at_a_bounce(
    repo: Repository, migrated_url: str
) -> None:
    stored = records_for(3)
    repo.record(stored)
    known = str(stored[0].failed_recipient)
    runner = Runner()
    watch = TrafficWatch(migrated_url, runner)
    await watch.start()
    try:
        assert await watch.refresh()  # what the background task does first
        assert {str(r.failed_recipient) for r in stored} <= watch.known
        now = datetime.now(UTC)
        for i in range(3):
            ctx = context(received_at=now + timedelta(minutes=i), rcpt=known.upper())
            await watch.after_relay(ctx, ORDINARY, OK)
        await watch.after_relay(context(received_at=now, rcpt="someone@else.example"), ORDINARY, OK)
        await watch.after_relay(context(received_at=now, rcpt=known), ORDINARY, LATER)  # not relayed
        await watch.flush()
        assert traffic(repo) == {known: (3, now)}

        # the database is down: the counts wait for the next flush
        runner.down = True
        await watch.after_relay(context(received_at=now + timedelta(hours=1), rcpt=known), ORDINARY, OK)
        await watch.flush()
        runner.down = False
        await watch.flush()
        assert traffic(repo)[known][0] == 4

        # a new family bounce for a new recipient: watched at once, its count starts at the bounce
        fresh = "new-group@contoso.example"
        bounce_at = now + timedelta(hours=2)
        bounce = Processed(original=b"", data=b"", report=family_report((fresh, known)))
        await watch.after_relay(context(received_at=bounce_at), bounce, OK)
        assert fresh in watch.known
        await watch.after_relay(
            context(received_at=bounce_at + timedelta(minutes=1), rcpt=fresh), ORDINARY, OK
        )
        await watch.flush()
        counted = traffic(repo)
        assert counted[known] == (0, bounce_at)
        assert counted[fresh] == (1, bounce_at)
    finally:
        await watch.stop()


async def test_nothing_reaches_the_database_thread_while_the_recorder_finds_it_down(
    repo: Repository, migrated_url: str
) -> None:
    calls: list[str] = []

    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        calls.append(fn.__name__)
        return await asyncio.to_thread(fn, *args, **kwargs)

    up = False
    watch = TrafficWatch(migrated_url, run, lambda: up)
    await watch.start()
    try:
        address = "group@contoso.example"
        bounce = Processed(original=b"", data=b"", report=family_report((address,)))
        await watch.after_relay(context(), bounce, OK)
        await watch.after_relay(context(rcpt=address), ORDINARY, OK)
        assert not await watch.refresh()
        await watch.flush()
        assert calls == [] and traffic(repo) == {}
        up = True  # the recorder reached the database again: the counts kept in memory go in
        await watch.flush()
        assert "record_traffic" in calls and traffic(repo)[address][0] == 1
    finally:
        await watch.stop()


async def test_an_address_the_table_cannot_hold_is_not_watched(repo: Repository, migrated_url: str) -> None:
    watch = TrafficWatch(migrated_url, Runner())
    await watch.start()
    try:
        long = "x" * 400 + "@contoso.example"
        bounce = Processed(original=b"", data=b"", report=family_report((long, "ok@contoso.example")))
        await watch.after_relay(context(), bounce, OK)
        assert watch.known == {"ok@contoso.example"}
        await watch.flush()  # PostgreSQL would refuse the long one, and with it the whole batch
        assert set(traffic(repo)) == {"ok@contoso.example"}
    finally:
        await watch.stop()
