"""The incident console without a browser: grouping, evidence, escaping, exports, access, languages.

On SQLite and PostgreSQL (``db_url``). The browser tests (``test_console_browser.py``) drive the
same pages in Chromium through a gateway that relayed real bounces.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.admin import create_admin_app
from gateway.console import console_router, i18n
from gateway.console.charts import sparkline, stacked_bars
from storage.incidents import IncidentRecord
from storage.problems import TrafficCount, TrendPoint, daily_counts, problems, record_traffic, trend
from storage.repository import IncidentFilter, Repository
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
START = datetime(2026, 5, 1, tzinfo=UTC)
HOSTILE_RECIPIENT = '"<script>alert(1)</script>"@x.example'
HOSTILE_SENDER = "=cmd|' /C calc'!a0@evil.example"


def client(
    repo: Repository, *, token: str | None = None, peer: tuple[str, int] = LOOPBACK
) -> httpx.AsyncClient:
    app = create_admin_app(repo, api_token=token, routers=[console_router(repo, api_token=token)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=peer), base_url="http://admin")


@pytest.fixture
def stored(repo: Repository) -> list[IncidentRecord]:
    records = records_for(30, start=START, step=timedelta(hours=5))
    repo.record(records)
    return records


@pytest.fixture
async def console(repo: Repository, stored: list[IncidentRecord]) -> AsyncIterator[httpx.AsyncClient]:
    async with client(repo) as c:
        yield c


def expected_groups(records: list[IncidentRecord]) -> dict[tuple[str | None, str | None], tuple[int, int]]:
    bounces: dict[tuple[str | None, str | None], int] = defaultdict(int)
    senders: dict[tuple[str | None, str | None], set[str | None]] = defaultdict(set)
    for r in records:
        bounces[(r.failed_recipient, r.variant)] += 1
        senders[(r.failed_recipient, r.variant)].add(r.sender)
    return {key: (n, len(senders[key])) for key, n in bounces.items()}


def test_problems_group_per_recipient_and_variant(repo: Repository, stored: list[IncidentRecord]) -> None:
    page = problems(repo.engine, IncidentFilter(), limit=1000)
    got = {(r.recipient, r.variant): (r.bounces, r.senders) for r in page.rows}
    assert got == expected_groups(stored)
    assert page.total == len(got)
    newest = max(stored, key=lambda r: r.recorded_at)
    assert page.rows[0].last_seen == newest.recorded_at  # default: most recent first
    assert page.rows[0].latest_id == max(
        r.id for r in stored if r.failed_recipient == newest.failed_recipient and r.variant == newest.variant
    )
    # sorting, filtering and paging
    by_bounces = problems(repo.engine, IncidentFilter(), sort="bounces", limit=1000).rows
    assert [r.bounces for r in by_bounces] == sorted((r.bounces for r in by_bounces), reverse=True)
    mailbox = problems(repo.engine, IncidentFilter(variant="mailbox"), limit=1000).rows
    assert {r.variant for r in mailbox} == {"mailbox"}
    assert len(mailbox) == len({k for k in expected_groups(stored) if k[1] == "mailbox"})
    second = problems(repo.engine, IncidentFilter(), limit=3, offset=3)
    assert [r.recipient for r in second.rows] == [r.recipient for r in page.rows[3:6]]
    one_sender = problems(repo.engine, IncidentFilter(sender="sender1@fabrikam1.example"), limit=1000).rows
    assert {r.senders for r in one_sender} == {1}


def test_quiet_needs_mail_relayed_after_the_last_bounce(
    repo: Repository, stored: list[IncidentRecord]
) -> None:
    newest = max(stored, key=lambda r: r.recorded_at)
    address = newest.failed_recipient
    assert address is not None
    after = newest.recorded_at + timedelta(minutes=5)
    record_traffic(repo.engine, {}, {address: TrafficCount(12, after, after + timedelta(hours=1))})
    (row,) = [
        r
        for r in problems(repo.engine, IncidentFilter(recipient=address)).rows
        if r.variant == newest.variant
    ]
    assert (row.state, row.relayed_since, row.last_relayed_at) == ("quiet", 12, after + timedelta(hours=1))
    record_traffic(repo.engine, {}, {address: TrafficCount(3, after, after + timedelta(hours=2))})
    assert problems(repo.engine, IncidentFilter(recipient=address)).rows[0].relayed_since == 15
    quiet = problems(repo.engine, IncidentFilter(), state="quiet", limit=1000).rows
    assert {r.recipient for r in quiet} == {address}
    # a newer bounce restarts the count: active again, until mail gets through after it
    later = replace(
        newest, id="01KZZZZZZZZZZZZZZZZZZZZZZZ", fingerprint="f" * 64, recorded_at=after + timedelta(hours=3)
    )
    repo.record([later])
    record_traffic(repo.engine, {address: later.recorded_at}, {})
    row = problems(repo.engine, IncidentFilter(recipient=address, variant=newest.variant)).rows[0]
    assert (row.state, row.relayed_since) == ("active", 0)
    # an older bounce (a slow replica) does not undo the newer restart
    record_traffic(repo.engine, {address: newest.recorded_at}, {address: TrafficCount(2, after, after)})
    row = problems(repo.engine, IncidentFilter(recipient=address, variant=newest.variant)).rows[0]
    assert (row.state, row.relayed_since) == ("quiet", 2)
    active = problems(repo.engine, IncidentFilter(), state="active", limit=1000).rows
    assert address not in {r.recipient for r in active}


def test_trend_counts_every_incident(repo: Repository, stored: list[IncidentRecord]) -> None:
    points = trend(repo.engine, IncidentFilter())
    assert sum(p.count for p in points) == len(stored)
    days = {r.recorded_at.date().isoformat() for r in stored}
    assert {p.day for p in points} == days


async def test_pages_render_with_filters_in_links(
    console: httpx.AsyncClient, stored: list[IncidentRecord]
) -> None:
    response = await console.get("/console/problems", params={"variant": "group", "sort": "bounces"})
    assert response.status_code == 200
    html = response.text
    group_rcpts = {r.failed_recipient for r in stored if r.variant == "group"}
    mailbox_only = {r.failed_recipient for r in stored if r.variant == "mailbox"} - group_rcpts
    assert all(str(r) in html for r in group_rcpts)
    assert not any(str(r) in html for r in mailbox_only)
    assert "/console/problems.csv?variant=group&amp;sort=bounces" in html
    assert 'aria-sort="descending"' in html
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    trends = await console.get("/console/trends", params={"variant": "group"})
    assert trends.status_code == 200 and "<svg" in trends.text
    home = await console.get("/console/")
    assert home.status_code == 303 and home.headers["location"] == "/console/problems"


async def test_bad_filter_is_named_on_the_page(console: httpx.AsyncClient) -> None:
    response = await console.get("/console/problems", params={"since": "yesterday-ish", "sort": "x"})
    assert response.status_code == 400
    assert "since:" in response.text and "sort:" in response.text
    export = await console.get("/console/problems.csv", params={"since": "yesterday-ish"})
    assert export.status_code == 400


async def test_hostile_values_are_escaped_and_neutralised(repo: Repository) -> None:
    (base,) = records_for(1, start=START)
    hostile = replace(
        base,
        failed_recipient=HOSTILE_RECIPIENT,
        recipient_domain="x.example",
        sender=HOSTILE_SENDER,
        original_subject='<img src=x onerror="alert(2)">{{ 7*7 }}',
        diagnostic="550 5.7.133 <b>bold</b>",
    )
    repo.record([hostile])
    async with client(repo) as c:
        pages = [
            await c.get("/console/problems"),
            await c.get(f"/console/incidents/{hostile.id}"),
            await c.get("/console/trends"),
        ]
        for page in pages:
            assert page.status_code == 200
            assert (
                "<script>alert" not in page.text
                and "<img src=x" not in page.text
                and "<b>bold" not in page.text
            )
            assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].text
        assert "&lt;img src=x" in pages[1].text and "{{ 7*7 }}" in pages[1].text
        for path in ("/console/problems.csv", "/console/incidents.csv"):
            rows = list(csv.DictReader(io.StringIO((await c.get(path)).text)))
            cells = [v for row in rows for v in row.values()]
            assert not any(v.startswith(("=", "+", "-", "@")) for v in cells)
        incidents = list(csv.DictReader(io.StringIO((await c.get("/console/incidents.csv")).text)))
        assert incidents[0]["sender"] == "'" + HOSTILE_SENDER
        exported = json.loads((await c.get("/console/problems.json")).text)
        assert exported[0]["recipient"] == HOSTILE_RECIPIENT  # JSON keeps the value, as data


async def test_note_downloads(console: httpx.AsyncClient, stored: list[IncidentRecord]) -> None:
    record = stored[-1]
    for lang, words in (("en", "Steps for the administrator"), ("ja", "管理者")):
        response = await console.get(f"/console/incidents/{record.id}/note-{lang}.eml")
        assert response.status_code == 200
        assert response.headers["content-disposition"].endswith(f'-{lang}.eml"')
        message = email.message_from_bytes(response.content, policy=email.policy.default)
        assert message["To"] == f"postmaster@{record.recipient_domain}"
        assert message["X-Unsent"] == "1"
        assert str(record.failed_recipient) in message["Subject"]
        body = message.get_content()
        assert words in body and str(record.failed_recipient) in body
        assert record.id in body  # the block's reference section names the incident
        text = await console.get(f"/console/incidents/{record.id}/note-{lang}.txt")
        assert text.text == body.replace("\r\n", "\n") or text.text.strip() == body.strip()
    # the part of the block written for the sender stays out of the admin's note
    english = (await console.get(f"/console/incidents/{record.id}/note-en.txt")).text
    assert "What you can do (for the sender)" not in english
    assert "What you can do (for the sender)" in (await console.get(f"/console/incidents/{record.id}")).text
    assert (await console.get(f"/console/incidents/{record.id}/note-fr.eml")).status_code == 404
    assert (await console.get("/console/incidents/01HZZZZZZZZZZZZZZZZZZZZZZZ")).status_code == 404


@pytest.mark.parametrize(
    ("token", "peer", "header", "status"),
    [
        (None, LOOPBACK, None, 200),
        (None, REMOTE, None, 403),
        ("s3cret", REMOTE, None, 401),
        ("s3cret", LOOPBACK, "Basic YWRtaW46d3Jvbmc=", 401),  # admin:wrong
        ("s3cret", REMOTE, "Basic YWRtaW46czNjcmV0", 200),  # admin:s3cret
        ("s3cret", REMOTE, "Bearer s3cret", 200),
    ],
)
async def test_access_is_the_apis(
    repo: Repository, token: str | None, peer: tuple[str, int], header: str | None, status: int
) -> None:
    async with client(repo, token=token, peer=peer) as c:
        response = await c.get("/console/problems", headers={"Authorization": header} if header else {})
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic ")


def test_every_text_exists_in_both_languages() -> None:
    for table in i18n.all_keys().values():
        for key, (en, ja) in table.items():
            assert en.strip() and ja.strip(), key
            assert en.count("{") == ja.count("{"), key
    assert i18n.negotiate("ja-JP,ja;q=0.9,en;q=0.8") == "ja"
    assert i18n.negotiate("fr, en;q=0.5, ja;q=0.7") == "ja"
    assert i18n.negotiate("fr") == "en"
    assert i18n.negotiate("ja", "en") == "en"


async def test_japanese_follows_accept_language(console: httpx.AsyncClient) -> None:
    ja = await console.get("/console/problems", headers={"Accept-Language": "ja,en;q=0.5"})
    assert '<html lang="ja">' in ja.text and i18n.text("problems_intro", "ja") in ja.text
    en = await console.get("/console/problems", params={"lang": "en"}, headers={"Accept-Language": "ja"})
    assert '<html lang="en">' in en.text and i18n.text("problems_intro", "en") in en.text


async def test_each_row_shows_its_bounces_per_week(repo: Repository) -> None:
    now = datetime.now(UTC)
    records = records_for(40, start=now - timedelta(days=100), step=timedelta(days=2, hours=12))
    repo.record(records)
    # the page's window: the twelve 7-day periods ending today (UTC)
    since = datetime.combine(now.date(), time.min, UTC) - timedelta(weeks=12) + timedelta(days=1)
    recent = [r for r in records if r.recorded_at >= since]
    assert len(recent) < len(records)  # some fall outside the twelve weeks
    counts = daily_counts(repo.engine, IncidentFilter(), [str(r.failed_recipient) for r in records], since)
    assert sum(n for per in counts.values() for n in per.values()) == len(recent)
    spark = sparkline(counts[(str(recent[-1].failed_recipient), recent[-1].variant)], now.date())
    mine = [
        r
        for r in recent
        if (r.failed_recipient, r.variant) == (recent[-1].failed_recipient, recent[-1].variant)
    ]
    assert sum(spark.counts) == len(mine) and spark.counts[-1] >= 1
    async with client(repo) as c:
        html = (await c.get("/console/problems")).text
    label = i18n.text("weekly_label", "en").format(counts=", ".join(map(str, spark.counts)))
    assert f'aria-label="{label}"' in html


async def test_a_database_that_fails_gives_a_503_page_naming_it(tmp_path: Path) -> None:
    missing = Repository.from_url(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite3'}")
    try:
        async with client(missing) as c:
            for path in ("/console/problems", "/console/trends"):
                response = await c.get(path)
                assert response.status_code == 503
                assert "no-such-dir" in response.text and response.headers["content-security-policy"]
    finally:
        missing.close()


def test_trend_bars_by_day_then_by_week() -> None:
    start = date(2026, 1, 5)  # a Monday
    points = [
        TrendPoint((start + timedelta(days=d)).isoformat(), v, d % 5 + 1)
        for d in (0, 3, 10)
        for v in ("group", "x")
    ]
    daily = stacked_bars(points, ["group", "mailbox"])
    assert daily.bucket == "day" and len(daily.table) == 11  # the empty days are bars too
    assert sum(total for _, _, total in daily.table) == sum(p.count for p in points)
    assert [variant for _, variant in daily.legend] == ["group", "x"]  # known kinds first, then the rest
    long = [*points, TrendPoint((start + timedelta(days=200)).isoformat(), "group", 7)]
    weekly = stacked_bars(long, ["group"])
    assert weekly.bucket == "week" and all(date.fromisoformat(d).weekday() == 0 for d, _, _ in weekly.table)
    assert sum(total for _, _, total in weekly.table) == sum(p.count for p in long)
    padded = stacked_bars(points, ["group"], start - timedelta(days=3), start + timedelta(days=20))
    assert len(padded.table) == 24
