"""``bouncegw incidents list|show|stats`` output formats and filters, and ``db purge``."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

import gateway.cli.db
import gateway.cli.incidents  # noqa: F401  (registers the commands)
from gateway.cli.common import cli
from storage.incidents import IncidentRecord
from storage.repository import Repository
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]

START = datetime(2025, 5, 1, tzinfo=UTC)


@pytest.fixture
def stored(repo: Repository) -> list[IncidentRecord]:
    records = records_for(12, start=START, step=timedelta(hours=3))
    repo.record(records)
    return records


def run(url: str, *args: str, columns: int = 100) -> str:
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, [*args[:2], "--database", url, *args[2:]])
    assert result.exit_code == 0, result.output
    return result.output


def test_list_formats(migrated_url: str, stored: list[IncidentRecord]) -> None:
    newest_first = sorted((r.id for r in stored), reverse=True)
    as_json = json.loads(run(migrated_url, "incidents", "list", "--format", "json"))
    assert [i["id"] for i in as_json] == newest_first
    assert as_json[0]["recorded_at"].startswith("2025-05-02")
    lines = run(migrated_url, "incidents", "list", "--format", "ndjson", "--limit", "5").splitlines()
    assert [json.loads(line)["id"] for line in lines] == newest_first[:5]
    rows = list(csv.DictReader(io.StringIO(run(migrated_url, "incidents", "list", "--format", "csv"))))
    assert [r["id"] for r in rows] == newest_first and rows[0]["status"] == "5.7.133"
    for columns in (80, 140):
        table = run(migrated_url, "incidents", "list", columns=columns)
        assert all(len(line) <= columns for line in table.splitlines())
        assert "sender" in table.splitlines()[0] and newest_first[0] in table
    assert "group1-0@contoso1.example" in table  # nothing cut when there is room


def test_list_filters(migrated_url: str, stored: list[IncidentRecord]) -> None:
    out = run(
        migrated_url, "incidents", "list", "--format", "ndjson", "--since", "2025-05-01T06:00:00Z",
        "--until", "2025-05-01T15:00:00Z", "--variant", "user",
    )  # fmt: skip
    expected = {r.id for r in stored[2:5] if r.variant == "user"}
    assert {json.loads(line)["id"] for line in out.splitlines()} == expected
    out = run(migrated_url, "incidents", "list", "--format", "ndjson", "--sender", "fabrikam1.example")
    assert {json.loads(line)["id"] for line in out.splitlines()} == {
        r.id for r in stored if r.sender_domain == "fabrikam1.example"
    }
    assert run(migrated_url, "incidents", "list", "--format", "ndjson", "--since", "24h") == ""
    result = CliRunner().invoke(cli, ["incidents", "list", "--database", migrated_url, "--since", "soon"])
    assert result.exit_code == 2 and "neither a duration" in result.output


def test_show(migrated_url: str, stored: list[IncidentRecord]) -> None:
    target = stored[4]
    data = json.loads(run(migrated_url, "incidents", "show", "--format", "json", target.id))
    assert data == target.to_dict()
    table = run(migrated_url, "incidents", "show", target.id)
    assert "failed_recipient" in table and (target.failed_recipient or "") in table
    result = CliRunner().invoke(
        cli, ["incidents", "show", "--database", migrated_url, "01HZZZZZZZZZZZZZZZZZZZZZZZ"]
    )
    assert result.exit_code == 1 and "no incident" in result.output


def test_stats_formats(migrated_url: str, stored: list[IncidentRecord]) -> None:
    by_day = json.loads(run(migrated_url, "incidents", "stats", "--by", "day", "--format", "json"))
    assert [(d["day"], d["count"]) for d in by_day] == [("2025-05-01", 8), ("2025-05-02", 4)]
    rows = list(
        csv.DictReader(
            io.StringIO(run(migrated_url, "incidents", "stats", "--by", "variant", "--format", "csv"))
        )
    )
    assert {r["variant"]: int(r["count"]) for r in rows} == {"group": 6, "user": 6}
    table = run(migrated_url, "incidents", "stats", "--by", "sender-domain")
    assert "fabrikam0.example" in table and "first seen" in table


def test_purge(migrated_url: str, repo: Repository) -> None:
    now = datetime.now(UTC)
    repo.record(
        records_for(7, start=now - timedelta(days=100))
        + records_for(2, tag="new", start=now - timedelta(hours=2))
    )
    out = run(migrated_url, "db", "purge", "--older-than", "30d")
    assert "purged 7 incidents" in out
    assert len(json.loads(run(migrated_url, "incidents", "list", "--format", "json"))) == 2
    result = CliRunner().invoke(cli, ["db", "purge", "--database", migrated_url, "--older-than", "old"])
    assert result.exit_code == 2 and "not a duration" in result.output
