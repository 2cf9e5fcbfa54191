"""The database goes away mid-run and comes back: SQLite locked by another writer, PostgreSQL stopped.

Mail keeps flowing, incidents go to the fsynced journal while the database cannot take them, and
once it answers again the journal is replayed: every accepted family bounce ends up recorded
exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.app import Gateway
from storage.db import upgrade
from tests.chaos.conftest import Mix
from tests.chaos.harness import Outcome, check, incidents_by_tag, send_concurrently
from tests.chaos.postgres import DebianCluster, pg_ctlcluster_available
from tests.conftest import GatewayFactory, need
from tests.metric_samples import MetricDeltas
from tests.processes import wait_until
from tests.recording_server import RecordingServer

if TYPE_CHECKING:
    from tests.storage_fixtures import ThrowawayPostgres

# Registered as a plugin (not imported) so pytest can rewrite its asserts: throwaway_postgres.
pytest_plugins = ["tests.storage_fixtures"]

STORAGE = {"storage.db_timeout": 1.0, "storage.retry_interval": 0.2}
ROUNDS, PER_ROUND, SESSIONS = 10, 30, 3
OUTAGE_FROM, OUTAGE_UNTIL = 3, 7  # rounds 3..6 run while the database is away


async def run_with_outage(
    app: Gateway, mix: Mix, begin: Callable[[], Awaitable[None]], end: Callable[[], Awaitable[None]]
) -> tuple[list[Outcome], MetricDeltas]:
    counted = MetricDeltas()
    outcomes: list[Outcome] = []
    for round_ in range(ROUNDS):
        if round_ == OUTAGE_FROM:
            await begin()
        if round_ == OUTAGE_UNTIL:
            await end()
        outcomes += await send_concurrently(app.listener.port, mix.batch(PER_ROUND), SESSIONS)
    recorder = app.recorder
    await wait_until(
        lambda: recorder.db_available and recorder.journal_backlog == 0, "the journal to be replayed"
    )
    return outcomes, counted


def figures_for(
    name: str, app: Gateway, outcomes: list[Outcome], counted: MetricDeltas, hop: RecordingServer
) -> None:
    rec = incidents_by_tag(app.settings.database.url)
    journaled = counted("bouncegw_storage_incidents_total", path="journal")
    figures = check(
        name,
        outcomes,
        hop.messages,
        rec,
        journaled=journaled,
        replayed=counted("bouncegw_storage_incidents_total", path="replayed"),
        db_errors=counted("bouncegw_database_errors_total"),
    )
    assert figures.accepted == figures.sent, "the database outage must not cost a single message"
    assert journaled > 0, "the outage must actually have sent incidents to the journal"
    assert counted("bouncegw_record_failures_total") == 0


async def test_sqlite_locked_mid_run(
    hop: RecordingServer, make_gateway: GatewayFactory, mix: Mix, tmp_path: Path
) -> None:
    app = await make_gateway(hop.address, STORAGE)
    path = tmp_path / "gw.sqlite3"
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)

    async def lock() -> None:  # another writer holds the database (RESERVED+EXCLUSIVE lock)
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")

    async def unlock() -> None:
        await asyncio.to_thread(locker.execute, "COMMIT")

    try:
        outcomes, counted = await run_with_outage(app, mix, lock, unlock)
    finally:
        locker.close()
    await asyncio.to_thread(figures_for, "sqlite_locked", app, outcomes, counted, hop)


@pytest.fixture
def debian_cluster() -> Iterator[DebianCluster]:
    from tests.storage_fixtures import postgres_or_skip  # loaded by then, as a plugin

    postgres_or_skip()  # same CI rule as every PostgreSQL test
    need(pg_ctlcluster_available(), "pg_createcluster/pg_ctlcluster (Debian postgresql-common) not installed")
    cluster = DebianCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres
@pytest.mark.parametrize("tool", ["pg_ctl", "pg_ctlcluster"])
async def test_postgres_stopped_mid_run(
    tool: str, hop: RecordingServer, make_gateway: GatewayFactory, mix: Mix, request: pytest.FixtureRequest
) -> None:
    cluster: ThrowawayPostgres | DebianCluster = request.getfixturevalue(
        "throwaway_postgres" if tool == "pg_ctl" else "debian_cluster"
    )
    await asyncio.to_thread(upgrade, cluster.url)  # `bouncegw db upgrade`
    app = await make_gateway(hop.address, {**STORAGE, "database.url": cluster.url})
    outcomes, counted = await run_with_outage(
        app, mix, lambda: asyncio.to_thread(cluster.stop), lambda: asyncio.to_thread(cluster.start)
    )
    await asyncio.to_thread(figures_for, f"postgres_stopped_{tool}", app, outcomes, counted, hop)
