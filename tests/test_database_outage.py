"""PostgreSQL down or unreachable: backoff, start without it, JSON 503 and one CLI line, drain at stop.

The database is reached through a :class:`~tests.tcp_proxy.TcpProxy` the test cuts, in front of
the real PostgreSQL server (a fresh schema each test), so every connection attempt a gateway makes
during an outage is counted.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway import metrics
from storage.db import upgrade
from storage.journal import Journal
from storage.recorder import Recorder, Tally
from storage.repository import IncidentFilter, Repository
from tests.chaos.harness import Msg, send_all, tagged
from tests.conftest import GatewayFactory
from tests.metric_samples import MetricDeltas
from tests.outage import explained_ids, most_attempts, postgres_proxy, through
from tests.positives import POSITIVES
from tests.processes import free_port, wait_until
from tests.recording_server import RecordingServer
from tests.storage_builders import count_incidents, records_for
from tests.tcp_proxy import TcpProxy

pytest_plugins = ["tests.storage_fixtures"]

FIRST, CAP = 0.1, 0.4


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = await postgres_proxy()
    yield p
    await p.close()


@pytest.mark.postgres
async def test_outage_attempts_follow_the_backoff(
    pg_schema_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    upgrade(pg_schema_url)
    url = through(proxy, pg_schema_url)
    counts = Tally()
    rec = Recorder(
        url,
        tmp_path / "incidents.jsonl",
        db_timeout=2.0,
        retry_interval=FIRST,
        retry_max_interval=CAP,
        events=counts,
    )
    await rec.start()
    records = records_for(30)
    await rec.submit(records[:10])
    proxy.cut()
    began, before = time.monotonic(), proxy.refused
    for i in range(10, 30, 2):  # mail keeps coming: journal appends must not trigger attempts
        await rec.submit(records[i : i + 2])
        await asyncio.sleep(0.3)
    outage = time.monotonic() - began
    attempts = proxy.refused - before
    proxy.restore()
    await wait_until(lambda: rec.db_available and rec.journal_backlog == 0, "the journal to drain")
    await rec.stop()
    # One failed write starts the outage, then the backoff's attempts (each one connection).
    bound = 1 + most_attempts(outage, FIRST, CAP)
    print(f"outage {outage:.1f}s: {attempts} connection attempts (bound {bound})")
    assert 2 <= attempts <= bound
    assert counts.journaled == 20 and count_incidents(pg_schema_url) == 30


@pytest.mark.postgres
async def test_gateway_starts_without_the_database_and_catches_up(
    pg_schema_url: str, proxy: TcpProxy, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    proxy.cut()  # down at start, and the schema not even created yet
    storage = {"storage.retry_interval": FIRST, "storage.retry_max_interval": CAP, "storage.db_timeout": 2}
    app = await make_gateway(hop.address, {"database.url": through(proxy, pg_schema_url), **storage})
    base = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["checks"]["storage"] == {"ok": True, "detail": "database unavailable; journaling"}
        assert "bouncegw_database_available 0.0" in (await client.get("/metrics")).text
        positive = POSITIVES[0]
        msgs = [Msg(f"start-{i}", tagged(f"start-{i}", positive.data, message_id=True)) for i in range(3)]
        outcomes = await send_all(app.listener.port, msgs)
        assert [o.code for o in outcomes] == [250, 250, 250]
        expected = 3 * len(positive.expected)
        assert app.recorder.journal_backlog == expected
        answer = await client.get("/api/v1/incidents")
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert "unavailable" in answer.json()["detail"] and "127.0.0.1" in answer.json()["detail"]

        attempts = MetricDeltas()
        proxy.restore()  # reachable, but without the bouncegw schema: keep journaling, say why
        await wait_until(
            lambda: attempts("bouncegw_database_recovery_attempts_total") > 1, "a recovery attempt"
        )
        assert not app.recorder.db_available and "bouncegw db upgrade" in (app.recorder.db_reason or "")
        await asyncio.to_thread(upgrade, pg_schema_url)  # the operator (or the migrate job) runs it
        await wait_until(
            lambda: app.recorder.db_available and app.recorder.journal_backlog == 0, "the journal replay"
        )
        assert await asyncio.to_thread(count_incidents, pg_schema_url) == expected
        for received in hop.messages:
            for incident_id in explained_ids(received.data):
                assert (await client.get(f"/api/v1/incidents/{incident_id}")).status_code == 200


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("incidents", "list"),
        ("incidents", "stats", "--by", "instance"),
        ("incidents", "show", "01J0000000000000000000000A"),
        ("db", "current"),
    ],
)
def test_cli_says_one_line_when_the_database_is_down(argv: tuple[str, ...]) -> None:
    url = f"postgresql+psycopg://bouncegw:secret@127.0.0.1:{free_port()}/bouncegw"
    done = run_cli(*argv, "--database", url)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("Error: database postgresql+psycopg://bouncegw:***@127.0.0.1:")
    assert "unavailable" in lines[0] and "secret" not in lines[0]


@pytest.mark.postgres
async def test_stop_drains_the_journal_or_says_what_is_left(
    pg_schema_url: str, proxy: TcpProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(pg_schema_url)
    url, journal = through(proxy, pg_schema_url), tmp_path / "incidents.jsonl"
    options = {"db_timeout": 1.0, "retry_interval": FIRST, "retry_max_interval": CAP}
    records = records_for(12)
    proxy.cut()
    # The gateway's observer: what is left at stop goes to bouncegw_journal_left_at_stop_incidents.
    rec = Recorder(url, journal, events=metrics.RecorderMetrics(), **options)  # type: ignore[arg-type]
    await rec.start(unavailable="down in this test")
    await rec.submit(records[:6])
    with caplog.at_level(logging.ERROR, logger="storage.recorder"):
        await rec.stop(0.5)  # the database stays away: the incidents stay in the journal
    lines = [r.getMessage() for r in caplog.records if "stopping with" in r.getMessage()]
    assert len(lines) == 1 and "6 incidents" in lines[0] and str(journal) in lines[0]
    assert metrics.JOURNAL_LEFT_AT_STOP._value.get() == 6  # type: ignore[attr-defined]

    rec = Recorder(url, journal, events=metrics.RecorderMetrics(), **options)  # type: ignore[arg-type]
    await rec.start(unavailable="still down")
    assert rec.journal_backlog == 6
    await rec.submit(records[6:])
    asyncio.get_running_loop().call_later(0.3, proxy.restore)  # back during the grace period
    await rec.stop(10.0)
    assert rec.journal_backlog == 0 and count_incidents(pg_schema_url) == 12
    assert metrics.JOURNAL_LEFT_AT_STOP._value.get() == 0  # type: ignore[attr-defined]


def test_replay_journal_writes_a_gone_replicas_journal_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    journal_dir = tmp_path / "volume"
    journal = Journal(journal_dir / "incidents.jsonl", 1 << 20)
    journal.append(records_for(5))
    held = Journal(journal_dir / "incidents.w1.jsonl", 1 << 20)  # a gateway still running
    held.append(records_for(2, tag="held"))
    journal.close()
    try:
        done = run_cli("db", "replay-journal", str(journal_dir), "--database", url)
        assert done.returncode == 1  # one journal was busy
        assert f"{journal_dir / 'incidents.jsonl'}: 5 journalled incidents, 5 new" in done.stdout
        assert "in use by a running gateway" in done.stderr
    finally:
        held.close()
    done = run_cli("db", "replay-journal", str(journal_dir), "--database", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("journalled incidents") == 1  # the replayed journal is gone
    assert "incidents.w1.jsonl: 2 journalled incidents, 2 new" in done.stdout
    assert count_incidents(url) == 7


async def test_a_repeated_bounce_names_the_incident_that_exists(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    first = await make_gateway(hop.address, {"instance": "gw-a"})
    second = await make_gateway(  # another replica, same database
        hop.address,
        {
            "instance": "gw-b",
            "storage.journal_path": str(Path(first.recorder.journal_path).with_name("b.jsonl")),
        },
    )
    positive = POSITIVES[0]
    msg = Msg("repeat", tagged("repeat", positive.data, message_id=True))
    for app in (first, second, first):  # relayed, then retried through the other replica and back
        assert [o.code for o in await send_all(app.listener.port, [msg])] == [250]
    named = [explained_ids(m.data) for m in hop.messages]
    assert len(named) == 3 and named[0] and named[0] == named[1] == named[2]
    repo = Repository.from_url(first.settings.database.url)
    try:
        assert repo.count(IncidentFilter()) == len(set(named[0]))
        for incident_id in named[0]:
            record = repo.get(incident_id)
            assert record is not None and record.instance == "gw-a"
        assert [(r.key, r.count) for r in repo.stats("instance", IncidentFilter())] == [
            ("gw-a", len(set(named[0])))
        ]
        assert repo.count(IncidentFilter(instance="gw-b")) == 0
    finally:
        repo.close()


def test_a_mailbox_copy_names_the_relays_incident_ids() -> None:
    from gateway.bounce.parse import parse
    from gateway.identity import bounce_digest
    from gateway.incidents import stable_ids
    from gateway.scan import Message, examine

    original = POSITIVES[0].data
    relay_ids = stable_ids(parse(original), bounce_digest(original))
    # As delivered to a mailbox: trace fields on top, LF line ends.
    stored = b"Return-Path: <>\r\nDelivered-To: postmaster@example.org\r\n" + original
    examined = examine(
        Message("inbox:1", stored.replace(b"\r\n", b"\n")), instance="scan", store_subjects=True
    )
    assert relay_ids and tuple(r.id for r in examined.records) == relay_ids
    other = examine(
        Message("inbox:2", stored.replace(b"\r\n", b"\n") + b"\nmore\n"), instance="scan", store_subjects=True
    )
    assert other.records and not {r.id for r in other.records} & set(relay_ids)  # another bounce
