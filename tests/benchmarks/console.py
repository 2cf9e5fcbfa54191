"""The incident console's queries on a year of data: 100,000 incidents in SQLite and PostgreSQL.

Fills a scratch database (a throwaway schema on PostgreSQL) through the repository's batched
insert, then times the problems view's query (:func:`storage.problems.problems`) the way the
console runs it: the default view, a domain filter, the last 30 days, sorted by bounces, the
quiet ones, plus the trends page's two queries. Best of :data:`REPS` runs each, in milliseconds,
and the query plan of the default view (``EXPLAIN QUERY PLAN`` / ``EXPLAIN``), which must use
``ix_incidents_problems``.

``python -m tests.benchmarks.console`` runs it alone; ``make bench`` runs it after the relay figures.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text
from ulid import ULID

from gateway.admin import create_admin_app
from gateway.console import console_router
from storage.db import upgrade
from storage.incidents import IncidentRecord
from storage.problems import TrafficCount, problems, problems_query, record_traffic, top_domains, trend
from storage.repository import IncidentFilter, Repository
from storage.timespec import parse_time_bound
from tests.benchmarks import databases

INCIDENTS = int(os.environ.get("BENCH_CONSOLE_INCIDENTS", "100000"))
REPS = 5
VARIANTS = ("group", "mailbox", "microsoft365_group", "mail_user", "public_folder", "organization")
CODES = {"group": "5.7.133", "mailbox": "5.7.134", "mail_user": "5.7.136", "public_folder": "5.7.135"}


def incidents(count: int, *, seed: int = 20) -> list[IncidentRecord]:
    """A year of incidents: 5,000 recipients in 400 domains, 800 senders, skewed like real mail."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    records = []
    for _ in range(count):
        # A few recipients refuse a lot (paretovariate), most a handful of times.
        r = min(int(rng.paretovariate(1.2)) * 7 + rng.randrange(7), 4999)
        domain = f"org{r % 400}.example"
        variant = VARIANTS[r % len(VARIANTS)]
        sender = f"user{rng.randrange(800)}@ours{rng.randrange(20)}.example"
        when = now - timedelta(seconds=rng.randrange(365 * 86400))
        records.append(
            IncidentRecord(
                id=str(ULID.from_datetime(when)),
                fingerprint=uuid.uuid4().hex * 2,
                recorded_at=when,
                sender=sender,
                sender_domain=sender.rpartition("@")[2],
                failed_recipient=f"rcpt{r}@{domain}",
                recipient_domain=domain,
                status=CODES.get(variant, "5.7.12"),
                diagnostic="550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup",
                category="sender_not_authenticated",
                variant=variant,
                instance="bench",
            )
        )
    return records


def fill(url: str, count: int) -> Repository:
    upgrade(url)
    repo = Repository.from_url(url)
    records = incidents(count)
    for start in range(0, len(records), 5000):
        repo.record(records[start : start + 5000])
    now = datetime.now(UTC)
    # Traffic evidence for every tenth recipient: some of them quiet.
    counts = {f"rcpt{r}@org{r % 400}.example": TrafficCount(3, now, now) for r in range(0, 5000, 10)}
    record_traffic(repo.engine, {}, counts)
    # What autovacuum / a long-running database would have done: statistics and (PostgreSQL) the
    # visibility map that lets it answer from the index alone.
    statement = "VACUUM ANALYZE" if repo.engine.dialect.name == "postgresql" else "ANALYZE"
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(statement))
    return repo


def best_ms(fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


async def pages_ms(repo: Repository, paths: tuple[str, ...]) -> dict[str, float]:
    """The pages as a browser gets them: routing, the queries, the templates (the ASGI app)."""
    app = create_admin_app(repo, routers=[console_router(repo, api_token=None)])
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    out = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        for path in paths:
            times = []
            for _ in range(REPS):
                start = time.perf_counter()
                (await client.get(path)).raise_for_status()
                times.append(time.perf_counter() - start)
            out[f"whole page {path}"] = min(times) * 1000
    return out


def plan(engine: Engine) -> str:
    """The default view's query plan, one line per step."""
    stmt = problems_query(IncidentFilter())
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.execute(text(prefix + sql)).all()
    return " | ".join(str(row[-1]).strip() for row in rows)


def measure(url: str, count: int) -> dict[str, Any]:
    repo = fill(url, count)
    engine = repo.engine
    try:
        rows = repo.count(IncidentFilter())
        month = IncidentFilter(since=parse_time_bound("30d"))
        timings = {
            "default view (50 rows)": best_ms(lambda: problems(engine, IncidentFilter())),
            "domain filter": best_ms(lambda: problems(engine, IncidentFilter(domain="org7.example"))),
            "last 30 days": best_ms(lambda: problems(engine, month)),
            "sorted by bounces": best_ms(lambda: problems(engine, IncidentFilter(), sort="bounces")),
            "quiet only": best_ms(lambda: problems(engine, IncidentFilter(), state="quiet")),
            "trends: per day and variant": best_ms(lambda: trend(engine, IncidentFilter())),
            "trends: top domains": best_ms(lambda: top_domains(engine, IncidentFilter())),
            **asyncio.run(pages_ms(repo, ("/console/problems", "/console/trends"))),
        }
        return {"incidents": rows, "ms": timings, "plan": plan(engine)}
    finally:
        repo.close()


def run(tmp: Path, count: int = INCIDENTS) -> dict[str, Any]:
    """Both databases; a database that cannot be reached is reported, not fatal."""
    return databases.on_both(tmp, "console-bench", lambda url: measure(url, count))


def report(res: dict[str, Any]) -> None:
    print(f"incident console queries and pages (best of {REPS}, ms):")
    for db, figures in res.items():
        if isinstance(figures, str):
            print(f"  {db}: {figures}")
            continue
        print(f"  {db}, {figures['incidents']:,} incidents:")
        for name, ms in figures["ms"].items():
            print(f"    {name:<30} {ms:8.1f}")
        print(f"    plan: {figures['plan']}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bouncegw-console-bench-") as tmp:
        report(run(Path(tmp)))
